"""Waiting is not failing: a work item that must wait (a rate limit's reset, an identity another
worker holds) is sent again to become visible when it may go on, and the message that carried it
completes, so waiting never spends one of its attempts or poisons it."""

from __future__ import annotations

import dataclasses
from typing import Final

from shared.core.ports import AuditStore, WorkQueue
from shared.core.work import WorkItem
from shared.errors import LeaseBusy, RateLimited, TryLater
from shared.stores.audit import AuditRow

DEFAULT_WAIT_S: Final = 30.0  # a wait with no reset given (a Graph 429 after the SDK's retries)
MAX_WAIT_S: Final = 15 * 60.0
MAX_LEASE_DEFERRALS: Final = 30  # an identity busy this often is stuck: let its attempts count again


class Waits:
    def __init__(self, queue: WorkQueue, audit: AuditStore):
        self.queue = queue
        self.audit = audit

    async def defer(self, item: WorkItem, wait: TryLater, target: str = "") -> float | None:
        """Re-schedule ``item`` to wait out ``wait`` and audit it; the delay, or None when it must not
        wait again (the caller retries or fails it instead). A rate limit is always waited out; a busy
        or lost lease at most ``MAX_LEASE_DEFERRALS`` times.
        Only an item re-scheduled for something else (a lapsed lease) is marked to read its target on
        its next try: a rate limit or a busy identity leaves nothing of its own in flight."""
        if not isinstance(wait, RateLimited) and item.deferrals >= MAX_LEASE_DEFERRALS:
            return None
        delay = wait.retry_after_s
        if delay is None:
            delay = min(DEFAULT_WAIT_S * 2 ** min(item.deferrals, 5), MAX_WAIT_S)
        if not isinstance(wait, RateLimited | LeaseBusy):
            item = dataclasses.replace(item, reread=True)  # a lapsed lease: a late write of its own may land
        delay = await self.queue.defer(item, delay)
        detail = f"{wait}; runs again in {delay:.0f} s without spending an attempt (deferral {item.deferrals + 1})"
        await self.audit.write(AuditRow.for_item(item, target or item.target, "deferred", "deferred", detail=detail))
        return delay
