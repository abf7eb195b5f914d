"""The work queue (Azure Storage Queue): sending, and re-scheduling to wait."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Iterable
from typing import Any, Final

from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from shared import names
from shared.core.work import MAX_MESSAGE_BYTES, WorkItem
from shared.errors import BadInput

SEND_CONCURRENCY: Final = 16


MAX_VISIBILITY_S: Final = 7 * 24 * 3600 - 60  # the longest a queue message may stay invisible


class WorkQueue:
    """Sends work items to the worker's queues (base64, as the queue trigger reads them): an item
    someone waits on to the lane, bulk work to the work queue (:attr:`WorkItem.in_lane`). A
    deferred or poisoned item stays on its own side."""

    def __init__(self, service: QueueServiceClient, queue: str = names.WORK_QUEUE, lane: str = names.LANE_QUEUE):
        def client(name: str) -> Any:
            return service.get_queue_client(
                name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
            )

        self.client = client(queue)
        self.lane = client(lane)
        # Where the host puts what it gave up on, and where the worker gives up on a share, too.
        self.poisoned = client(f"{queue}-poison")
        self.lane_poisoned = client(f"{lane}-poison")

    def _for(self, item: WorkItem) -> Any:
        return self.lane if item.in_lane else self.client

    async def send(self, items: Iterable[WorkItem]) -> int:
        """Send every item; any failure raises after all sends finished (the caller answers 5xx and
        the source retries the whole batch, which is harmless because items are level-triggered)."""
        batch = list(items)
        gate = asyncio.Semaphore(SEND_CONCURRENCY)

        async def one(item: WorkItem) -> None:
            text = item.to_json()
            if len(text) > MAX_MESSAGE_BYTES:
                raise BadInput("work item too large for a queue message")
            async with gate:
                await self._for(item).send_message(text)

        results = await asyncio.gather(*(one(i) for i in batch), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return len(batch)

    async def defer(self, item: WorkItem, delay_s: float) -> float:
        """Send ``item`` again to become visible in ``delay_s`` seconds (plus jitter, so items that
        wait for the same reset do not all come back at once), counting the deferral. Returns the
        delay used. The caller then completes the message it holds: its attempts are not spent."""
        jitter = random.uniform(0.5, 1.0 + min(30.0, delay_s * 0.1))
        delay = min(max(delay_s, 0.0) + jitter, MAX_VISIBILITY_S)
        again = dataclasses.replace(item, deferrals=item.deferrals + 1)
        await self._for(again).send_message(again.to_json(), visibility_timeout=math.ceil(delay))
        return delay

    async def poison(self, item: WorkItem) -> None:
        """Give up on ``item``: it goes where the host moves a message after its last attempt, for
        an operator to look at (the caller audits why and alerts)."""
        await (self.lane_poisoned if item.in_lane else self.poisoned).send_message(item.to_json())
