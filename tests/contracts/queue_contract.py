"""The WorkQueue contract: what the webhooks, delta, reconciliation and the worker's waits rely on.
Every item sent arrives as it was sent; a deferred item is hidden until its time and arrives with
its deferral counted; a poisoned item goes where an operator looks, not back to the worker; an item
someone waits on goes to the lane and bulk work to the work queue, and a deferral keeps its side.

Time is the one thing implementations differ in: the memory queue runs on an injected clock, a
queue message on Azurite becomes visible in real seconds. The hooks ``take_after`` and
``lane_after`` hide that: they move the clock, or poll the queue (bounded) until the time has passed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from shared.core.ports import WorkQueue
from shared.core.work import MAX_MESSAGE_BYTES, WorkItem, user_item
from shared.errors import BadInput
from shared.stores.queue import MAX_VISIBILITY_S
from tests.contracts.backends import Opener, run

USERS = [f"0000000{i}-aaaa-4bbb-8ccc-dddddddddddd" for i in range(4)]


@dataclass
class Queues:
    queue: WorkQueue
    visible: Callable[[], Awaitable[list[WorkItem]]]  # what a receive would get now (left in place)
    poisoned: Callable[[], Awaitable[list[WorkItem]]]
    take_after: Callable[[float], Awaitable[list[WorkItem]]]  # once ``s`` seconds passed: what is visible, taken
    just_before: Callable[[float], Awaitable[list[WorkItem]]]  # what is visible shortly before ``s`` pass
    lane: Callable[[], Awaitable[list[WorkItem]]]  # what a receive from the lane alone would get now
    lane_after: Callable[[float], Awaitable[list[WorkItem]]]  # once ``s`` seconds passed: the lane's, left


def by_id(items: list[WorkItem]) -> list[WorkItem]:
    return sorted(items, key=lambda item: (item.id, item.correlation_id))


class WorkQueueContract:
    """What the webhooks, delta, reconciliation and the worker rely on from every WorkQueue.

    A subclass gives the queue it checks as the ``queues`` fixture: an opener of a new, empty queue
    (with its lane and both poison queues) and the hooks that look into it and let time pass.
    """

    @pytest.fixture
    def queues(self) -> Opener[Queues]:
        raise NotImplementedError("a WorkQueueContract subclass opens its queue in a `queues` fixture")

    def test_send_says_how_many_it_sent_and_each_item_arrives_as_it_was_sent(self, queues: Opener[Queues]) -> None:
        items = [
            user_item(USERS[0], "notification", "sub-1"),
            dataclasses.replace(user_item(USERS[1], "delta"), target="memory:crm", attempt=2, approved="guard:e1"),
            WorkItem("delta", "users", "delta"),
        ]

        async def body(q: Queues) -> None:
            assert await q.queue.send(items) == 3
            assert await q.queue.send([]) == 0
            assert by_id(await q.visible()) == by_id(items)
            assert await q.poisoned() == []

        run(queues, body)

    def test_an_item_too_large_for_a_message_is_refused_after_the_others_were_sent(
        self, queues: Opener[Queues]
    ) -> None:
        huge = user_item(USERS[1], "manual", "x" * MAX_MESSAGE_BYTES)
        fine = [user_item(USERS[0], "manual"), user_item(USERS[2], "manual")]

        async def body(q: Queues) -> None:
            with pytest.raises(BadInput, match="too large"):
                await q.queue.send([fine[0], huge, fine[1]])
            assert by_id(await q.visible()) == by_id(fine)

        run(queues, body)

    def test_a_deferred_item_is_hidden_until_its_time_and_arrives_with_the_deferral_counted(
        self,
        queues: Opener[Queues],
    ) -> None:
        item = dataclasses.replace(user_item(USERS[0], "notification"), target="auth0")

        async def body(q: Queues) -> None:
            delay = await q.queue.defer(item, 0.0)
            assert delay >= 0.0
            assert await q.visible() == []  # hidden right after
            assert await q.just_before(delay) == []
            [back] = await q.take_after(delay)
            assert back == dataclasses.replace(item, deferrals=1)
            again = await q.queue.defer(back, 0.0)
            assert await q.visible() == []
            assert await q.take_after(again) == [dataclasses.replace(item, deferrals=2)]
            assert await q.visible() == []

        run(queues, body)

    def test_a_long_deferral_waits_at_least_as_long_as_asked_and_hides_the_item_meanwhile(
        self,
        queues: Opener[Queues],
    ) -> None:
        item = user_item(USERS[0], "notification")

        async def body(q: Queues) -> None:
            delay = await q.queue.defer(item, 900.0)
            assert 900.0 <= delay <= 900.0 + 31.0  # a spread of seconds, not of minutes
            assert await q.visible() == []
            assert await q.just_before(delay) == []
            longest = await q.queue.defer(item, 30 * 24 * 3600.0)  # past what a queue message may wait
            assert 6 * 24 * 3600.0 < longest <= MAX_VISIBILITY_S
            assert await q.visible() == []

        run(queues, body)

    def test_a_poisoned_item_goes_to_the_poison_queue_and_not_back_to_the_worker(self, queues: Opener[Queues]) -> None:
        item = dataclasses.replace(user_item(USERS[3], "notification"), target="auth0", attempt=4)

        async def body(q: Queues) -> None:
            await q.queue.poison(item)
            assert await q.poisoned() == [item]
            assert await q.visible() == []

        run(queues, body)

    def test_what_someone_waits_on_goes_to_the_lane_and_bulk_work_to_the_work_queue(
        self, queues: Opener[Queues]
    ) -> None:
        urgent = [
            user_item(USERS[0], "notification", "sub-1"),
            user_item(USERS[1], "group"),
            WorkItem("subscription", "sub-1", "lifecycle"),
            user_item(USERS[2], "manual"),
        ]
        bulk = [user_item(USERS[3], "backfill"), user_item(USERS[0], "reconcile"), WorkItem("delta", "users", "delta")]

        async def body(q: Queues) -> None:
            await q.queue.send([*bulk, *urgent])
            assert by_id(await q.lane()) == by_id(urgent)
            assert by_id(await q.visible()) == by_id([*bulk, *urgent])

        run(queues, body)

    def test_a_deferred_or_poisoned_item_stays_on_its_own_side(self, queues: Opener[Queues]) -> None:
        leaver, repair = user_item(USERS[0], "notification"), user_item(USERS[1], "reconcile")

        async def body(q: Queues) -> None:
            delay = max(await q.queue.defer(leaver, 0.0), await q.queue.defer(repair, 0.0))
            assert await q.lane_after(delay) == [dataclasses.replace(leaver, deferrals=1)]
            back = await q.take_after(delay)
            back += [] if len(back) == 2 else await q.take_after(delay)  # sent a moment apart
            assert by_id(back) == by_id([dataclasses.replace(i, deferrals=1) for i in (leaver, repair)])
            await q.queue.poison(leaver)
            await q.queue.poison(repair)
            assert by_id(await q.poisoned()) == by_id([leaver, repair])
            assert leaver.poison_queue == "sync-lane-poison" and repair.poison_queue == "sync-work-poison"

        run(queues, body)
