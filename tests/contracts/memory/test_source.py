"""The in-memory Source (sandbox/memory.py) against the Source contract: the tenant is changed
through the memory source's own dicts and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from sandbox.memory import MemorySource
from tests.contracts.backends import Opener
from tests.contracts.source_contract import SourceContract, Tenant, mapping, now


class TestMemorySource(SourceContract):
    @pytest.fixture
    def tenant(self) -> Opener[Tenant]:
        @asynccontextmanager
        async def in_memory() -> AsyncIterator[Tenant]:
            source = MemorySource(mapping())

            def join(uid: str, gid: str) -> None:
                source.groups[uid].add(gid)

            yield Tenant(
                source, lambda n: source.identities(page_size=n), now(source.add), now(source.update), now(join),
                now(source.soft_delete), now(source.hard_delete), now(source.expire_cursors),
            )  # fmt: skip

        return in_memory
