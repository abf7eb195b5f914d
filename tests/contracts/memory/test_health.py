"""The in-memory HealthStore (sandbox/memory_stores.py) against the HealthStore contract."""

from __future__ import annotations

import pytest

from sandbox.memory_stores import MemoryHealth
from shared.core.ports import HealthStore
from tests.contracts.backends import Opener, in_memory
from tests.contracts.health_contract import HealthStoreContract


class TestMemoryHealth(HealthStoreContract):
    @pytest.fixture
    def health(self) -> Opener[HealthStore]:
        return in_memory(MemoryHealth)
