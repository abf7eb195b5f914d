"""A group change's users converged in its own invocation (shared/services/fanout.py), and a
pushing source's membership change item (``group`` naming its ``users``) run by the worker:
nothing is dropped, a failure or the time budget hands users back to the queue one by one."""

from __future__ import annotations

import asyncio

import pytest

from sandbox.memory_stores import MemoryAlerts, MemoryAudit, MemoryLeases, MemoryQueue
from shared.core.work import WorkItem
from shared.errors import BadInput
from shared.services.fanout import INLINE_BUDGET_S, INLINE_CONCURRENCY, converge_here
from shared.services.waits import Waits
from shared.services.worker import Outcome, Worker
from tests.support import FakeClock

GROUP = "7d1e2c3b-4a59-4c6d-8e7f-0a1b2c3d4e5f"


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def users(count: int) -> list[WorkItem]:
    return [WorkItem("user", uid(n), "push", "scim:hr-push", identity_source="hr-push") for n in range(count)]


def test_users_converge_a_few_at_a_time_and_a_failure_is_handed_back_not_dropped() -> None:
    clock = FakeClock(1_000.0)
    running, most = 0, 0

    async def converge(user: WorkItem) -> Outcome:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)  # let the others start
        running -= 1
        if user.id == uid(3):
            raise ConnectionError("the source read failed")
        return Outcome(user, "applied")

    parent = WorkItem("group", GROUP, "push", users=tuple(u.id for u in users(10)))
    done, left = asyncio.run(converge_here(parent, users(10), converge, clock))
    assert sorted(o.item.id for o in done) == [uid(n) for n in range(10) if n != 3]
    assert [u.id for u in left] == [uid(3)]
    assert most == INLINE_CONCURRENCY


def test_users_not_started_within_the_budget_are_handed_back_to_be_queued() -> None:
    clock = FakeClock(1_000.0)

    async def slow(user: WorkItem) -> Outcome:
        clock.advance(INLINE_BUDGET_S / 3.5)  # each waits out a rate limit, say
        return Outcome(user, "applied")

    parent = WorkItem("group", GROUP, "push")
    done, left = asyncio.run(converge_here(parent, users(6), slow, clock, concurrency=1))
    assert [o.item.id for o in done] == [uid(n) for n in range(4)]  # started at 0, 5.7, 11.4 and 17.1 s
    assert [u.id for u in left] == [uid(4), uid(5)]


def test_the_worker_converges_a_membership_items_users_as_enqueued_and_queues_what_is_left() -> None:
    clock = FakeClock(1_000.0)
    queue, audit = MemoryQueue(clock), MemoryAudit()
    worker = Worker(
        sources={}, jobs={}, leases=MemoryLeases(clock=clock), audit=audit, queue=queue, waits=Waits(queue, audit),
        alerts=MemoryAlerts(audit), clock=clock,
    )  # fmt: skip
    seen: list[WorkItem] = []

    async def sync_user(item: WorkItem) -> Outcome:
        seen.append(item)
        if item.id == uid(1):
            raise ConnectionError("the inbound store is unavailable")
        return Outcome(item, "applied")

    worker.sync_user = sync_user  # type: ignore[method-assign]
    item = WorkItem("group", GROUP, "push", "scim:hr-push", enqueued_at=990.0, identity_source="hr-push",
                    users=(uid(0), uid(1), uid(2)))  # fmt: skip
    outcome = asyncio.run(worker.sync_members(item))
    assert sorted(i.id for i in seen) == [uid(0), uid(1), uid(2)]
    assert {(i.kind, i.source, i.source_ref, i.identity_source, i.correlation_id, i.enqueued_at, i.users)
            for i in seen} == {("user", "push", "scim:hr-push", "hr-push", item.correlation_id, 990.0, ())}  # fmt: skip
    (queued,) = queue.visible()
    assert (queued.kind, queued.id, queued.identity_source, queued.in_lane) == ("user", uid(1), "hr-push", True)
    assert (outcome.status, outcome.enqueued, len(outcome.parts)) == ("fanned_out", 1, 2)


def test_a_membership_items_users_are_checked_where_the_queue_delivers_them() -> None:
    item = WorkItem("group", GROUP, "push", identity_source="hr-push", users=(uid(0), uid(1)))
    assert WorkItem.from_json(item.to_json()) == item
    assert '"users"' not in WorkItem("group", GROUP, "group").to_json()  # Graph's keep their format
    body = item.to_json()
    for bad, why in [
        (body.replace(uid(1), "not-a-guid"), "must each be a GUID"),
        (body.replace('"kind":"group"', '"kind":"user"'), "named only by a group item"),
        (body.replace(f'"{uid(1)}"', ",".join(f'"{uid(n)}"' for n in range(1, 22))), "at most 20 user ids"),
    ]:
        with pytest.raises(BadInput, match=why):
            WorkItem.from_json(bad)
