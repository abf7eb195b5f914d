"""The in-memory StateStore (sandbox/memory_stores.py) against the StateStore contract."""

from __future__ import annotations

import pytest

from sandbox.memory_stores import MemoryState
from shared.core.ports import StateStore
from tests.contracts.backends import Opener, in_memory
from tests.contracts.state_contract import StateStoreContract


class TestMemoryState(StateStoreContract):
    @pytest.fixture
    def state(self) -> Opener[StateStore]:
        return in_memory(MemoryState)
