"""Group changes through the delta service on the in-memory stores: a few users converge in the
group item's own invocation, more are queued, and a group change that finds the groups delta being
read leaves a re-run request instead of waiting, which the reader always honours.

The races are driven step by step: the fake source and state pause at named points until the test
lets them go, so no test sleeps or measures time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from sandbox.mapping import sandbox_mapping, three_role_grants
from sandbox.memory_stores import MemoryAudit, MemoryLeases, MemoryQueue, MemoryState
from shared.core.ports import GroupDeltaPage
from shared.core.work import WorkItem
from shared.errors import TransientError
from shared.mapping.load import parse_mapping
from shared.services.delta import GROUPS_DELTA_LEASE, GROUPS_RERUN, MAX_GROUP_ROUNDS, DeltaService
from shared.services.fanout import INLINE_USERS
from shared.services.worker import Outcome
from shared.stores.leases import LEASE_TTL_S
from tests.support import FakeClock

GROUPS = [f"11111111-0000-4000-8000-00000000000{n}" for n in range(3)]
SALES = GROUPS[1]
OUTSIDE = "22222222-0000-4000-8000-000000000000"  # a group the mapping does not name


def user(n: int) -> str:
    return f"33333333-0000-4000-8000-{n:012d}"


class Pause:
    """A point where a task stops until the test lets it go: ``reached`` is set when it gets there."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def at(self) -> None:
        self.reached.set()
        await self.go.wait()


class FakeSource:
    """Groups delta over a log of membership additions: a delta link is how much of the log was
    read. A read takes its page when it starts, as Graph's does, and may then pause."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []  # (group id, member added)
        self.reads: list[str | None] = []
        self.pauses: list[Pause] = []  # taken by the next reads, in order
        self.on_read: Callable[[], Any] | None = None  # runs as each read starts (after its page)

    def add(self, group: str, *members: str) -> None:
        self.log.extend((group, member) for member in members)

    async def groups_delta(self, delta_link: str | None) -> GroupDeltaPage:
        self.reads.append(delta_link)
        start = int(delta_link) if delta_link else 0
        page = GroupDeltaPage(delta_link=str(len(self.log)))
        for group, member in self.log[start:]:
            page.added.setdefault(group, set()).add(member)
        if self.on_read is not None:
            await self.on_read()
        if self.pauses:
            await self.pauses.pop(0).at()
        return page

    async def users_delta(self, delta_link: str | None) -> tuple[set[str], str]:
        return set(), delta_link or "users-0"

    async def nested_groups(self, group_id: str) -> set[str]:
        return set()

    async def transitive_user_members(self, group_id: str) -> set[str]:
        return set()


class PausingState(MemoryState):
    """The state store, pausing before writing the rows named in ``pauses``."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: dict[tuple[str, str], Pause] = {}

    async def put(self, kind: str, name: str, value: Mapping[str, Any]) -> None:
        pause = self.pauses.pop((kind, name), None)
        if pause is not None:
            await pause.at()
        await super().put(kind, name, value)


class PausingLeases(MemoryLeases):
    """The leases, pausing before releasing one while ``pauses`` has any left."""

    def __init__(self, table: dict[str, Any], clock: FakeClock, pauses: list[Pause]):
        super().__init__(table, clock=clock)
        self.pauses = pauses

    async def release(self, lease: Any) -> None:
        if self.pauses:
            await self.pauses.pop(0).at()
        await super().release(lease)


@dataclass
class Converger:
    """The worker's ``sync_user`` as the delta service sees it: what it was given, in order."""

    seen: list[WorkItem] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    async def __call__(self, item: WorkItem) -> Outcome:
        await asyncio.sleep(0)
        self.seen.append(item)
        if item.id in self.failing:
            raise TransientError("Graph users.get: 503")
        return Outcome(item, "applied")

    def ids(self) -> list[str]:
        return [item.id for item in self.seen]


@dataclass
class Tenant:
    """What the instances share: Entra ID, the state table, the leases table, the queue, the audit."""

    source: FakeSource = field(default_factory=FakeSource)
    state: PausingState = field(default_factory=PausingState)
    leases: dict[str, Any] = field(default_factory=dict)
    clock: FakeClock = field(default_factory=FakeClock)  # never advanced: leases stay as taken
    queue: MemoryQueue = field(default_factory=MemoryQueue)
    audit: MemoryAudit = field(default_factory=MemoryAudit)
    converge: Converger = field(default_factory=Converger)
    releasing: list[Pause] = field(default_factory=list)  # taken by the next lease releases, in order

    def instance(self, *, inline: bool = True) -> DeltaService:
        """One Functions instance's delta service (its own watched-groups cache)."""
        return DeltaService(
            source=self.source,
            mapping=parse_mapping(sandbox_mapping(three_role_grants(GROUPS))),
            state=self.state,
            leases=PausingLeases(self.leases, self.clock, self.releasing),
            queue=self.queue,
            audit=self.audit,
            converge=self.converge if inline else None,
        )

    async def linked(self) -> Tenant:
        """A groups-delta link stored at the end of what Entra ID has so far."""
        await self.state.put("delta", "groups", {"link": str(len(self.source.log))})
        return self

    async def link(self) -> str:
        stored = await self.state.get("delta", "groups")
        assert stored is not None
        return str(stored["link"])


def group_item(group: str = SALES) -> WorkItem:
    return WorkItem("group", group, "notification", "sub-groups")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_group_change_naming_few_users_converges_them_in_its_own_invocation_and_queues_nothing() -> None:
    async def scenario() -> tuple[Tenant, Outcome]:
        tenant = await Tenant().linked()
        tenant.source.add(SALES, user(1), user(2), user(3))
        return tenant, await tenant.instance().sync_group(group_item())

    tenant, outcome = run(scenario())
    assert sorted(tenant.converge.ids()) == [user(1), user(2), user(3)]
    assert {(i.kind, i.source, i.source_ref) for i in tenant.converge.seen} == {("user", "group", "sub-groups")}
    assert tenant.queue.visible() == []
    assert (outcome.status, outcome.enqueued, len(outcome.parts)) == ("fanned_out", 0, 3)
    assert run(tenant.link()) == "3"


@pytest.mark.parametrize(("users", "inline"), [(INLINE_USERS, True), (INLINE_USERS + 1, False)])
def test_up_to_the_threshold_users_converge_here_and_above_it_they_are_queued_for_the_lane(
    users: int, inline: bool
) -> None:
    async def scenario() -> tuple[Tenant, Outcome]:
        tenant = await Tenant().linked()
        tenant.source.add(SALES, *(user(n) for n in range(users)))
        return tenant, await tenant.instance().sync_group(group_item())

    tenant, outcome = run(scenario())
    everyone = sorted(user(n) for n in range(users))
    if inline:
        assert sorted(tenant.converge.ids()) == everyone
        assert tenant.queue.visible() == []
    else:
        assert tenant.converge.seen == []
        queued = tenant.queue.visible()
        assert sorted(i.id for i in queued) == everyone
        assert {(i.kind, i.source) for i in queued} == {("user", "group")}
        assert all(i.in_lane for i in queued)
        assert outcome.enqueued == users
    assert run(tenant.link()) == str(users)


def test_the_timer_pass_queues_the_members_it_finds_as_delta_work_and_converges_none_itself() -> None:
    async def scenario() -> Tenant:
        tenant = await Tenant().linked()
        tenant.source.add(SALES, user(1), user(2))
        await tenant.instance().catch_up(WorkItem("delta", "all", "delta", "timer"))
        return tenant

    tenant = run(scenario())
    assert tenant.converge.seen == []
    assert sorted((i.id, i.source) for i in tenant.queue.visible()) == [(user(1), "delta"), (user(2), "delta")]


def test_a_user_that_fails_to_converge_inline_is_queued_not_lost() -> None:
    async def scenario() -> tuple[Tenant, Outcome]:
        tenant = await Tenant().linked()
        tenant.converge.failing.add(user(2))
        tenant.source.add(SALES, user(1), user(2), user(3))
        return tenant, await tenant.instance().sync_group(group_item())

    tenant, outcome = run(scenario())
    assert [(i.kind, i.id, i.source) for i in tenant.queue.visible()] == [("user", user(2), "group")]
    assert sorted(o.item.id for o in outcome.parts) == [user(1), user(3)]
    assert outcome.enqueued == 1
    assert run(tenant.link()) == "3"  # every user of the round was handled: converged or queued


def test_a_round_whose_users_can_be_neither_converged_nor_queued_leaves_the_link_to_be_read_again() -> None:
    class BrokenQueue(MemoryQueue):
        async def send(self, items: Any) -> int:
            raise TransientError("queue storage: 503")

    async def scenario() -> str:
        tenant = await Tenant(queue=BrokenQueue()).linked()
        tenant.converge.failing.add(user(1))
        tenant.source.add(SALES, user(1))
        with pytest.raises(TransientError):
            await tenant.instance().sync_group(group_item())
        return await tenant.link()

    assert run(scenario()) == "0"  # the redelivered item reads the change again


def test_a_group_change_while_the_groups_delta_is_read_asks_for_a_rerun_and_the_reader_converges_it() -> None:
    async def scenario() -> tuple[Tenant, Outcome, Outcome, list[str | None]]:
        tenant = await Tenant().linked()
        tenant.source.add(SALES, user(1))
        reading = Pause()
        tenant.source.pauses.append(reading)
        first = asyncio.create_task(tenant.instance().sync_group(group_item()))
        await reading.reached.wait()  # the first reader holds the lease, its page taken
        tenant.source.add(SALES, user(2))  # a second change, and its notification on another instance
        second = await tenant.instance().sync_group(group_item())
        assert await tenant.state.get(*GROUPS_RERUN) is not None  # it asked, and returned without waiting
        assert tenant.converge.ids() == []
        reading.go.set()
        return tenant, await first, second, tenant.source.reads

    tenant, first, second, reads = run(scenario())
    assert second.status == "coalesced"
    assert reads == ["0", "1"]  # the reader read forward once more, from the link of its first round
    assert tenant.converge.ids() == [user(1), user(2)]
    assert [o.item.id for o in first.parts] == [user(1), user(2)]
    assert tenant.queue.visible() == []
    assert run(tenant.link()) == "2"
    assert run(tenant.state.get(*GROUPS_RERUN)) is None


def test_a_rerun_asked_for_after_the_readers_last_round_but_before_it_let_go_is_still_read() -> None:
    """The reader looks for a request only once it has let go of the lease: one that lands while it
    is letting go (the asker still finds the lease taken) is seen."""

    async def scenario() -> tuple[Tenant, Outcome, Outcome]:
        tenant = await Tenant().linked()
        tenant.source.add(SALES, user(1))
        letting_go = Pause()
        tenant.releasing.append(letting_go)
        first = asyncio.create_task(tenant.instance().sync_group(group_item()))
        await letting_go.reached.wait()  # the round is done and its link stored; the lease still held
        assert await tenant.link() == "1"
        tenant.source.add(SALES, user(2))
        second = await tenant.instance().sync_group(group_item())
        letting_go.go.set()
        return tenant, await first, second

    tenant, first, second = run(scenario())
    assert second.status == "coalesced"
    assert [o.item.id for o in first.parts] == [user(1), user(2)]
    assert tenant.source.reads == ["0", "1"]
    assert run(tenant.link()) == "2"


def test_a_rerun_asked_for_just_after_the_reader_last_looked_is_read_by_the_one_who_asked() -> None:
    """The race: the second item finds the lease taken, but its request lands only after the reader
    let go and found no request. The second item then tries the lease again, gets it, and reads."""

    async def scenario() -> tuple[Tenant, Outcome, Outcome]:
        tenant = await Tenant().linked()
        tenant.source.add(SALES, user(1))
        reading, asking = Pause(), Pause()
        tenant.source.pauses.append(reading)
        tenant.state.pauses[GROUPS_RERUN] = asking
        first = asyncio.create_task(tenant.instance().sync_group(group_item()))
        await reading.reached.wait()
        tenant.source.add(SALES, user(2))
        second = asyncio.create_task(tenant.instance().sync_group(group_item()))
        await asking.reached.wait()  # the second found the lease taken and is about to ask
        reading.go.set()
        done = await first  # the reader stored its link, let go and looked: no request yet
        assert await tenant.state.get(*GROUPS_RERUN) is None
        assert tenant.converge.ids() == [user(1)]
        asking.go.set()
        return tenant, done, await second

    tenant, first, second = run(scenario())
    assert [o.item.id for o in first.parts] == [user(1)]
    assert second.status == "fanned_out"
    assert [o.item.id for o in second.parts] == [user(2)]
    assert tenant.converge.ids() == [user(1), user(2)]
    assert tenant.queue.visible() == []
    assert run(tenant.link()) == "2"
    assert run(tenant.state.get(*GROUPS_RERUN)) is None


def test_a_reader_asked_to_read_again_and_again_stops_after_a_few_rounds_and_queues_a_follow_up() -> None:
    async def scenario() -> tuple[Tenant, Outcome, list[WorkItem], Outcome]:
        tenant = await Tenant().linked()
        tenant.source.add(SALES, user(0))
        changes = iter(range(1, 100))

        async def another_change_during_the_read() -> None:  # as a group item that coalesced would
            tenant.source.add(SALES, user(next(changes)))
            await tenant.state.put(*GROUPS_RERUN, {"by": "someone"})

        tenant.source.on_read = another_change_during_the_read
        service = tenant.instance()
        busy = await service.sync_group(group_item())
        tenant.source.on_read = None
        follow_ups = tenant.queue.take()
        assert [(i.kind, i.id, i.source) for i in follow_ups] == [("delta", "groups", "group")]
        return tenant, busy, follow_ups, await service.catch_up(follow_ups[0])

    tenant, busy, _, follow_up = run(scenario())
    assert len(busy.parts) == MAX_GROUP_ROUNDS
    assert [o.item.id for o in follow_up.parts] == [user(MAX_GROUP_ROUNDS)]  # the change of the last round
    assert tenant.converge.ids() == [user(n) for n in range(MAX_GROUP_ROUNDS + 1)]
    assert {i.source for i in tenant.converge.seen} == {"group"}
    assert tenant.queue.visible() == []
    assert run(tenant.state.get(*GROUPS_RERUN)) is None


def test_without_a_worker_to_converge_with_every_user_is_queued() -> None:
    async def scenario() -> Tenant:
        tenant = await Tenant().linked()
        tenant.source.add(SALES, user(1))
        await tenant.instance(inline=False).sync_group(group_item())
        return tenant

    tenant = run(scenario())
    assert [(i.id, i.source) for i in tenant.queue.visible()] == [(user(1), "group")]


def test_a_group_outside_the_mapping_reads_nothing_and_takes_no_lease() -> None:
    async def scenario() -> tuple[Tenant, Outcome]:
        tenant = await Tenant().linked()
        return tenant, await tenant.instance().sync_group(group_item(OUTSIDE))

    tenant, outcome = run(scenario())
    assert outcome.status == "ignored"
    assert tenant.source.reads == []
    assert tenant.leases == {}


def test_the_timer_pass_waits_out_a_reader_killed_holding_the_groups_delta_lease_and_reads_itself() -> None:
    async def scenario() -> tuple[Tenant, Outcome, dict[str, Any] | None]:
        tenant = await Tenant().linked()
        dead = PausingLeases(tenant.leases, tenant.clock, [])
        assert await dead.try_acquire(GROUPS_DELTA_LEASE, owner="killed-host") is not None  # never released
        await tenant.state.put(*GROUPS_RERUN, {"by": "a group change that coalesced into it"})
        tenant.source.add(SALES, user(1))
        timer = asyncio.create_task(tenant.instance().catch_up(WorkItem("delta", "groups", "delta", "timer")))
        await asyncio.sleep(0.2)  # it polls the lease: neither coalesced into the dead reader nor gave up
        assert not timer.done()
        tenant.clock.advance(LEASE_TTL_S + 1)  # the dead reader's lease lapses
        outcome = await asyncio.wait_for(timer, 10)
        return tenant, outcome, await tenant.state.get(*GROUPS_RERUN)

    tenant, outcome, request = run(scenario())
    assert outcome.status == "fanned_out"
    assert [(i.id, i.source) for i in tenant.queue.visible()] == [(user(1), "delta")]
    assert request is None  # the request the dead reader never served was read by the pass
