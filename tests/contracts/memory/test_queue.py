"""The in-memory WorkQueue (sandbox/memory_stores.py) against the WorkQueue contract: time passes
on its injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from sandbox.memory_stores import MemoryQueue
from shared.core.work import WorkItem
from tests.contracts.backends import Opener
from tests.contracts.queue_contract import Queues, WorkQueueContract
from tests.support import FakeClock


class TestMemoryQueue(WorkQueueContract):
    @pytest.fixture
    def queues(self) -> Opener[Queues]:
        @asynccontextmanager
        async def in_memory() -> AsyncIterator[Queues]:
            clock = FakeClock()
            queue = MemoryQueue(clock)

            async def visible() -> list[WorkItem]:
                return queue.visible()

            async def poisoned() -> list[WorkItem]:
                return list(queue.poisoned)

            async def take_after(seconds: float) -> list[WorkItem]:
                clock.advance(seconds)
                return queue.take()

            async def just_before(seconds: float) -> list[WorkItem]:
                return queue.visible(at=clock.now() + seconds - 0.5)

            async def lane() -> list[WorkItem]:
                return queue.in_lane()

            async def lane_after(seconds: float) -> list[WorkItem]:
                clock.advance(seconds)
                return queue.in_lane()

            yield Queues(queue, visible, poisoned, take_after, just_before, lane, lane_after)

        return in_memory
