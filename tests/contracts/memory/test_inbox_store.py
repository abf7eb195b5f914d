"""The inbound SCIM store over the in-memory rows (sandbox/memory_inbox.py) against its contract."""

from __future__ import annotations

import pytest

from sandbox.memory_inbox import MemoryRows
from shared.sources.scim_inbox.rows import Rows
from tests.contracts.backends import Opener, in_memory
from tests.contracts.inbox_store_contract import InboxStoreContract


class TestMemoryInboxStore(InboxStoreContract):
    @pytest.fixture
    def rows(self) -> Opener[Rows]:
        return in_memory(MemoryRows)
