"""The in-memory target (``memory:crm``, MemoryTarget in sandbox/memory.py) against the Target
contract: an account made by hand is a row put straight into its data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from sandbox.memory import MemoryKind, MemoryTarget
from tests.contracts.backends import Opener
from tests.contracts.target_contract import TargetContract, Vendor, sections


class TestMemoryTarget(TargetContract):
    @pytest.fixture
    def vendor(self) -> Opener[Vendor]:
        @asynccontextmanager
        async def in_memory() -> AsyncIterator[Vendor]:
            section = sections()["memory:crm"]
            target = MemoryKind().build(section, None)
            assert isinstance(target, MemoryTarget)

            def by_hand(email: str) -> str:
                target_id = f"mem|by-hand-{len(target.data)}"
                target.data[target_id] = {"email": email, "active": True}
                return target_id

            yield Vendor(target, section, by_hand)

        return in_memory
