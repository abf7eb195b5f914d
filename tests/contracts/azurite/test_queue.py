"""The Queue Storage WorkQueue (shared/stores/queue.py) on fresh Azurite queues against the
WorkQueue contract: time passes in real seconds, so the hooks poll (bounded)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from sandbox.azurite import Azurite
from shared.core.work import WorkItem
from shared.stores.queue import WorkQueue as StorageWorkQueue
from tests.contracts.backends import Opener, fresh_queues
from tests.contracts.queue_contract import Queues, WorkQueueContract

pytestmark = pytest.mark.azurite


def reader_of(service: QueueServiceClient, name: str) -> QueueClient:
    return service.get_queue_client(name, message_decode_policy=TextBase64DecodePolicy())


async def peek(client: QueueClient) -> list[WorkItem]:
    return [WorkItem.from_json(m.content) for m in await client.peek_messages(max_messages=32)]


async def take(client: QueueClient) -> list[WorkItem]:
    taken = []
    async for message in client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=30):
        taken.append(WorkItem.from_json(message.content))
        await client.delete_message(message)
    return taken


class TestStorageWorkQueue(WorkQueueContract):
    @pytest.fixture
    def queues(self, azurite: Azurite) -> Opener[Queues]:
        @asynccontextmanager
        async def on_azurite() -> AsyncIterator[Queues]:
            async with fresh_queues(azurite, "", "-poison", "lane", "lane-poison") as (service, name):
                reader, poison = reader_of(service, name), reader_of(service, f"{name}-poison")
                lane, lane_poison = reader_of(service, f"{name}lane"), reader_of(service, f"{name}lane-poison")

                async def visible() -> list[WorkItem]:
                    return [*await peek(lane), *await peek(reader)]

                async def poisoned() -> list[WorkItem]:
                    return [*await peek(lane_poison), *await peek(poison)]

                async def take_after(seconds: float) -> list[WorkItem]:
                    deadline = time.monotonic() + seconds + 10.0  # bounded polling: a queue's time is real
                    while not (taken := [*await take(lane), *await take(reader)]) and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
                    return taken

                async def just_before(seconds: float) -> list[WorkItem]:
                    return await visible()  # in real time, right after a deferral is before its time

                async def lane_after(seconds: float) -> list[WorkItem]:
                    deadline = time.monotonic() + seconds + 10.0
                    while not (seen := await peek(lane)) and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
                    return seen

                async with reader, poison, lane, lane_poison:
                    queue = StorageWorkQueue(service, name, f"{name}lane")
                    yield Queues(queue, visible, poisoned, take_after, just_before, lambda: peek(lane), lane_after)

        return on_azurite
