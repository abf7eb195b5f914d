"""The Azurite harness says plainly what is missing instead of failing somewhere deeper."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import azurite as harness


def test_missing_azurite_install_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(harness, "REPO_ROOT", tmp_path)
    with pytest.raises(harness.AzuriteUnavailable, match=r"run `npm ci`"):
        harness.azurite_executable()


def test_missing_node_names_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.shutil, "which", lambda name: None)
    with pytest.raises(harness.AzuriteUnavailable, match=r"Node\.js is not on PATH"):
        harness.azurite_executable()


def test_the_connection_string_names_every_service_on_its_port() -> None:
    endpoints = harness.AzuriteEndpoints("127.0.0.1", 1001, 1002, 1003)
    text = endpoints.connection_string
    assert "BlobEndpoint=http://127.0.0.1:1001/devstoreaccount1;" in text
    assert "QueueEndpoint=http://127.0.0.1:1002/devstoreaccount1;" in text
    assert "TableEndpoint=http://127.0.0.1:1003/devstoreaccount1;" in text
