"""Many identities' writes of one kind as one sObject Collections call, for bulk work.

Inside :meth:`SalesforceTarget.gathering` (a backfill), a create or a permission set assignment
does not go alone: it joins the records other identities in flight are writing, and one call
sends up to :data:`BATCH` of them (Salesforce's limit for a collection). The first waiter holds
the turn while others keep joining, a :data:`QUIET_S` step at a time, until the batch is full,
nobody joined during a step, or ``linger_s`` has passed; then it sends. Each record's own fence is
checked right before the call it goes in (a lost lease stops that record alone), and each caller
gets its own record's result: nothing is reported done before Salesforce said so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from shared.clock import Clock
from shared.core.ports import Fence
from shared.errors import TransientError

BATCH: Final = 200
QUIET_S: Final = 0.05

Send = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


@dataclass
class _Entry:
    record: dict[str, Any]
    fence: Fence
    done: asyncio.Future[dict[str, Any]]


class Gatherer:
    """Records of one sObject, sent together by ``send`` (one collections call per batch)."""

    def __init__(self, send: Send, clock: Clock):
        self.send = send
        self.clock = clock
        self.linger_s = 0.0
        self.waiting: list[_Entry] = []
        self.turn = asyncio.Lock()

    async def submit(self, record: dict[str, Any], fence: Fence) -> dict[str, Any]:
        """``record``'s result in the collections answer (``success``, ``id``, ``errors``)."""
        entry = _Entry(record, fence, asyncio.get_running_loop().create_future())
        self.waiting.append(entry)
        async with self.turn:
            waited = 0.0
            while not entry.done.done() and len(self.waiting) < BATCH and waited < self.linger_s:
                before = len(self.waiting)
                await self.clock.sleep(QUIET_S)  # bulk work: let the records of others join this call
                waited += QUIET_S
                if len(self.waiting) == before:
                    break  # nobody joined: those in flight are all here
            while not entry.done.done():  # not yet in a call another caller made
                batch, self.waiting = self.waiting[:BATCH], self.waiting[BATCH:]
                await self._send(batch)
        return await entry.done

    async def _send(self, batch: list[_Entry]) -> None:
        ready: list[_Entry] = []
        for entry in batch:
            try:
                entry.fence()
            except Exception as exc:
                entry.done.set_exception(exc)
            else:
                ready.append(entry)
        if not ready:
            return
        try:
            results = await self.send([e.record for e in ready])
        except BaseException as exc:
            for entry in ready:
                entry.done.set_exception(exc if isinstance(exc, Exception) else TransientError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for entry, result in zip(ready, results, strict=False):
            entry.done.set_result(result)
        for entry in ready[len(results) :]:
            entry.done.set_exception(TransientError("Salesforce answered fewer results than records sent"))
