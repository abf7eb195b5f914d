"""The in-memory LeaseStore (sandbox/memory_stores.py) against the LeaseStore contract: every
worker's store over one dict."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.memory_stores import MemoryLeases
from tests.contracts.backends import Opener, in_memory
from tests.contracts.leases_contract import TTL_S, LeaseStoreContract, Workers


def workers() -> Workers:
    table: dict[str, Any] = {}
    return lambda clock: MemoryLeases(table, TTL_S, clock=clock)


class TestMemoryLeases(LeaseStoreContract):
    @pytest.fixture
    def leases(self) -> Opener[Workers]:
        return in_memory(workers)
