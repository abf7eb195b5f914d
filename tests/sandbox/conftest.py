"""Fixtures the Auth0 emulator's tests share (test_auth0_emulator, test_auth0_tenant): an Auth0
emulator (its jobs quick) and auth0-python's client on it, retrying nothing. A module with an
emulator of another vendor defines its own ``emulator`` and ``client``, which take precedence."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from auth0.management.client import Auth0

from sandbox.auth0 import Auth0Emulator


@pytest.fixture
def emulator() -> Iterator[Auth0Emulator]:
    emu = Auth0Emulator(job_delay_s=0.05).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def client(emulator: Auth0Emulator) -> Auth0:
    return Auth0(base_url=emulator.base_url, token=emulator.static_token, max_retries=0, timeout=10)
