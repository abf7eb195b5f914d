"""A few users converged in the invocation that learnt of them, instead of one queue message each.

A group change names its users: Graph's groups delta after a group notification
(:mod:`shared.services.delta`), or a pushing source's membership change (a ``group`` work item
naming its ``users``, :meth:`shared.services.worker.Worker.sync_members`). A few at a time
(:data:`INLINE_USERS`) are converged here through the worker, :data:`INLINE_CONCURRENCY` at once,
for at most :data:`INLINE_BUDGET_S`: a user whose convergence raised, or that the time left no room
for, is handed back to be queued on its own, so nothing is dropped and the invocation stays short
(a target that makes every share wait its rate limit out would otherwise hold a lane slot for a
minute). The worker re-schedules a target's share that fails on its own; what raises here is a
failure before any share, such as the source read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

from shared.clock import Clock
from shared.core.work import MAX_ITEM_USERS, WorkItem
from shared.telemetry import correlated

if TYPE_CHECKING:
    from shared.services.worker import Outcome

log = logging.getLogger("entra_sync.fanout")

# A group change naming at most this many users converges them in its invocation instead of
# queueing one item each: that saves each of them a queue hop, and a typical change (a mover, a few
# people added to a team) is well inside it. Above it (a big group added or nested, a full pass),
# the queue spreads the work over instances and keeps each invocation short; a pushing source's
# bigger membership change is split into items of this many users.
INLINE_USERS: Final = MAX_ITEM_USERS  # 20
# Users converged at once in this invocation: a third of the 12 items host.json lets an instance
# run at a time, so a fan-out stays within what one instance sends a target anyway.
INLINE_CONCURRENCY: Final = 4
# Past this, users not yet started are queued instead (each share may wait up to 10 s for a rate
# limit, so 20 users 4 at a time could otherwise take 50 s).
INLINE_BUDGET_S: Final = 20.0

Converge = Callable[[WorkItem], Awaitable["Outcome"]]


async def converge_here(
    parent: WorkItem,
    users: Sequence[WorkItem],
    converge: Converge,
    clock: Clock,
    *,
    concurrency: int = INLINE_CONCURRENCY,
    budget_s: float = INLINE_BUDGET_S,
) -> tuple[list[Outcome], list[WorkItem]]:
    """Converge ``users`` through ``converge``; returns what they did and the users to queue (those
    that raised, and those not started within ``budget_s``)."""
    gate = asyncio.Semaphore(concurrency)
    deadline = clock.now() + budget_s
    clog = correlated(log, parent.correlation_id)

    async def one(user: WorkItem) -> Outcome | None:
        async with gate:
            if clock.now() >= deadline:
                return None  # queued instead: this invocation has run long enough
            return await converge(user)

    results = await asyncio.gather(*(one(user) for user in users), return_exceptions=True)
    done: list[Outcome] = []
    left: list[WorkItem] = []
    for user, result in zip(users, results, strict=True):
        if result is None:
            left.append(user)
        elif isinstance(result, Exception):
            clog.warning(
                "user %s from a group change could not be converged here (%s); queued", user.id, type(result).__name__
            )
            left.append(user)
        elif isinstance(result, BaseException):
            raise result
        else:
            done.append(result)
    late = sum(1 for r in results if r is None)
    if late:
        clog.info("%d users of a group change queued: the %.0f s for converging here ran out", late, budget_s)
    return done, left
