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


def test_azurite_writes_nothing_per_request_so_a_slow_reader_of_its_output_cannot_stall_it() -> None:
    """Node writes to a pipe synchronously: an access-log line per request would block Azurite's
    event loop (every request, every host) whenever the process reading its output falls behind."""
    from azure.data.tables import TableServiceClient

    with harness.Azurite() as azurite:
        started = len(azurite.output)
        service = TableServiceClient.from_connection_string(azurite.connection_string)
        table = service.create_table_if_not_exists("quiet")
        for n in range(50):
            table.upsert_entity({"PartitionKey": "p", "RowKey": str(n)})
        assert len(list(table.list_entities())) == 50
        assert len(azurite.output) == started  # not a line for any of those 52 requests
