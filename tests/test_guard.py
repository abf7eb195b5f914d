"""The mass-change guard's reads: a change far from every limit costs no state read once the
episodes were read, a hold another instance opened is seen within the refresh, and an approval made
elsewhere releases the next change instead of holding it in an episode already approved."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from sandbox.memory_stores import MemoryAlerts, MemoryAudit, MemoryLinks, MemoryQueue, MemoryState
from shared.core.model import Action, ActionKind, Plan
from shared.core.work import user_item
from shared.mapping.load import parse_mapping
from shared.mapping.model import GuardPolicy
from shared.services.guard import REFRESH_S, MassChangeGuard, unwritten_limits
from tests.support import FakeClock

USERS = [f"{i:08d}-aaaa-4bbb-8ccc-dddddddddddd" for i in range(40)]
MOVE = Plan((Action(ActionKind.UPDATE, {"department": "R"}, {"department": ("S", "R")}),))
LIMITS = GuardPolicy(max_attribute_changes=10, min_changes_for_share=1_000)


class CountingState(MemoryState):
    """The in-memory state store, counting reads by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        self.reads[kind] += 1
        return await super().get(kind, name)


def guard(
    state: MemoryState, clock: FakeClock, policy: GuardPolicy = LIMITS, links: MemoryLinks | None = None
) -> MassChangeGuard:
    audit = MemoryAudit()
    return MassChangeGuard(
        state=state, links=links or MemoryLinks(target="auth0", source="entra"), audit=audit,
        queue=MemoryQueue(clock), policy=policy, alerts=MemoryAlerts(audit), clock=clock,
    )  # fmt: skip


def test_changes_far_from_every_limit_read_the_episode_once_per_refresh() -> None:
    clock, state = FakeClock(), CountingState()
    g = guard(state, clock, GuardPolicy(max_attribute_changes=1_000, min_changes_for_share=1_000))

    async def scenario() -> list[Any]:
        holds = [await g.check(user_item(u, "notification"), MOVE) for u in USERS[:4]]
        clock.advance(REFRESH_S + 1)
        holds.append(await g.check(user_item(USERS[4], "notification"), MOVE))
        return holds

    assert asyncio.run(scenario()) == [None] * 5
    assert state.reads["guard:auth0"] == 2  # once, and once more after the refresh: not once per change


def test_a_hold_opened_by_another_instance_is_seen_within_the_refresh() -> None:
    clock, state = FakeClock(), CountingState()
    first, second = guard(state, clock), guard(state, clock)

    async def scenario() -> tuple[list[Any], Any]:
        await second.check(user_item(USERS[0], "notification"), MOVE)  # the second has read: no episode
        tripped = [await first.check(user_item(u, "notification"), MOVE) for u in USERS[1:12]]
        clock.advance(REFRESH_S + 1)
        return tripped, await second.check(user_item(USERS[20], "notification"), MOVE)

    tripped, later = asyncio.run(scenario())
    assert tripped[:9] == [None] * 9 and tripped[-1] is not None  # the eleventh change of the window
    assert later is not None and later.episode == tripped[-1].episode  # held in the same episode


def test_an_approval_made_elsewhere_releases_the_next_change_at_once() -> None:
    clock, state = FakeClock(), CountingState()
    worker, operator = guard(state, clock), guard(state, clock)

    async def scenario() -> tuple[Any, Any]:
        holds = [await worker.check(user_item(u, "notification"), MOVE) for u in USERS[:12]]
        episode = next(h for h in holds if h is not None).episode
        await operator.approve(episode, "operator@example.com")  # the CLI, another process
        after = await worker.check(user_item(USERS[30], "notification"), MOVE)  # within the refresh
        return episode, after

    episode, after = asyncio.run(scenario())
    assert after is None
    assert USERS[30] not in asyncio.run(state.list(f"guard-held:{episode}"))


class SlowEpisodeWrites(CountingState):
    """Episode rows that take a while to land, as a storage round trip does: what another instance
    reads meanwhile is the row as it was."""

    async def _round_trip(self, kind: str) -> None:
        for _ in range(50 if kind.startswith("guard:") else 0):
            await asyncio.sleep(0)

    async def put(self, kind: str, name: str, value: Any) -> None:
        await self._round_trip(kind)
        await super().put(kind, name, value)

    async def put_if(self, kind: str, name: str, value: Any, version: str | None) -> str | None:
        await self._round_trip(kind)
        return await super().put_if(kind, name, value, version)


def test_two_instances_tripping_at_once_open_one_episode_that_one_approval_releases() -> None:
    clock, state, audit = FakeClock(), SlowEpisodeWrites(), MemoryAudit()
    alerts, queue = MemoryAlerts(audit), MemoryQueue(clock)  # the operators' one webhook

    def instance() -> MassChangeGuard:
        return MassChangeGuard(
            state=state,
            links=MemoryLinks(target="auth0", source="entra"),
            audit=audit,
            queue=queue,
            policy=LIMITS,
            alerts=alerts,
            clock=clock,
        )

    first, second = instance(), instance()

    async def scenario() -> tuple[Any, Any, int]:
        for u in USERS[:10]:  # the limit's worth, counted and stored by the first instance
            assert await first.check(user_item(u, "notification"), MOVE) is None
        # The eleventh change of the window reaches both instances at the same moment.
        a, b = await asyncio.gather(
            first.check(user_item(USERS[10], "notification"), MOVE),
            second.check(user_item(USERS[11], "notification"), MOVE),
        )
        assert a is not None and b is not None
        return a, b, await second.approve(a.episode, "operator@example.com")

    a, b, released = asyncio.run(scenario())
    assert a.episode == b.episode  # the second instance joined the first's episode
    assert [e["episode"] for e in asyncio.run(state.list("guard:auth0")).values()] == [a.episode]
    assert released == 2  # both held identities go out with the one approval
    assert len(alerts.delivered) == 1  # and the operators were told once


LEAVE = Plan((Action(ActionKind.START_DEPROVISION, {}, {}), Action(ActionKind.DISABLE, {}, {})))


class SlowLinks(MemoryLinks):
    """Links whose count waits until released, as a scan of every link did under a backlog (40 s)."""

    def __init__(self, managed: int) -> None:
        super().__init__(target="auth0", source="entra")
        self.managed, self.counts = managed, 0
        self.release = asyncio.Event()

    async def count(self) -> int:
        self.counts += 1
        await self.release.wait()
        return self.managed


def test_a_leaver_far_from_the_share_rule_never_waits_for_the_links_to_be_counted() -> None:
    """The first deprovision counted every link inside the guard's lock, and every other one queued
    behind it (a slow storage makes that seconds). The count is needed only near the share rule: it
    starts in the background and is awaited only there."""
    clock = FakeClock()
    links = SlowLinks(managed=100)
    policy = GuardPolicy(max_deprovisions=1_000, max_deprovision_share=0.2, min_changes_for_share=10)
    g = guard(MemoryState(), clock, policy, links)

    async def scenario() -> tuple[list[Any], list[Any]]:
        far = [await asyncio.wait_for(g.check(user_item(u, "notification"), LEAVE), 5) for u in USERS[:4]]
        assert links.counts == 1  # one count, started in the background by the first leaver
        near = asyncio.create_task(g.check(user_item(USERS[4], "notification"), LEAVE))  # 5 >= 10 x 0.5
        await asyncio.sleep(0)
        waited = not near.done()
        links.release.set()
        later = [await g.check(user_item(u, "notification"), LEAVE) for u in USERS[5:21]]
        return far, [waited, await near, *later]

    far, near = asyncio.run(scenario())
    assert far == [None] * 4  # not one waited for the count
    assert near[0] is True and near[1] is None  # near the share rule the count is awaited, then used
    assert near[2:17] == [None] * 15 and near[17] is not None  # 21 of 100 managed (> 20%) is held
    assert links.counts == 2  # the background count, and a fresh one before holding anyone on a share


class FailingOnceLinks(SlowLinks):
    """Links whose first count fails (storage trouble), as a background count may."""

    async def count(self) -> int:
        self.counts += 1
        if self.counts == 1:
            raise OSError("storage unreachable")
        return self.managed


def test_a_background_count_that_failed_is_not_trusted_near_the_share_rule(caplog: pytest.LogCaptureFixture) -> None:
    """The warm-up count, started far from the share rule, fails: near the rule the guard counts in
    the path instead of judging a share against no count, and holds on the share that count gives."""
    clock = FakeClock()
    links = FailingOnceLinks(managed=20)
    policy = GuardPolicy(max_deprovisions=1_000, max_deprovision_share=0.2, min_changes_for_share=10)
    g = guard(MemoryState(), clock, policy, links)

    async def scenario() -> list[Any]:
        return [await g.check(user_item(u, "notification"), LEAVE) for u in USERS[:10]]

    holds = asyncio.run(scenario())
    assert holds[:9] == [None] * 9 and holds[9] is not None  # 10 of 20 managed (> 20%) is held
    assert links.counts == 3  # the failed background count, one in the path, a fresh one before the hold
    assert "could not count the managed accounts" in caplog.text


class SlowCounts(MemoryState):
    """A state store whose writes and lists of the guard's counts wait until released while
    ``blocked`` (a storage round trip under load), or fail once when ``fail_next`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = False
        self.fail_next = False
        self.release = asyncio.Event()

    async def _count_trip(self, kind: str) -> None:
        if not kind.startswith("guard-count:"):
            return
        if self.fail_next:
            self.fail_next = False
            raise OSError("storage unreachable")
        if self.blocked:
            await self.release.wait()

    async def put(self, kind: str, name: str, value: Any) -> None:
        await self._count_trip(kind)
        await super().put(kind, name, value)

    async def list(self, kind: str) -> dict[str, dict[str, Any]]:
        await self._count_trip(kind)
        return await super().list(kind)


WIDE = GuardPolicy(max_attribute_changes=100, min_changes_for_share=1_000)
PEOPLE = [f"{i:08d}-aaaa-4bbb-8ccc-eeeeeeeeeeee" for i in range(60)]


def stored_counts(state: MemoryState) -> int:
    """Every change the instances' stored counts hold (what another instance reads)."""
    rows = asyncio.run(MemoryState.list(state, "guard-count:auth0")).values()
    return sum(int(n) for row in rows for n in row["counts"].values())


def test_changes_far_from_every_limit_never_wait_for_the_counts_to_be_stored() -> None:
    """Storing this instance's counts and reading every instance's ran inside the guard's lock every
    20 changes and every 5 s: every other mover and leaver waited for those round trips. Far from
    the limits it runs in the background; near one it is awaited (the count must be exact)."""
    clock, state = FakeClock(), SlowCounts()
    g = guard(state, clock, WIDE)

    async def scenario() -> tuple[list[Any], bool, Any]:
        assert await g.check(user_item(PEOPLE[0], "notification"), MOVE) is None  # first: read in the path
        state.blocked = True
        clock.advance(REFRESH_S + 1)
        far = [await asyncio.wait_for(g.check(user_item(u, "notification"), MOVE), 5) for u in PEOPLE[1:50]]
        near = asyncio.create_task(g.check(user_item(PEOPLE[50], "notification"), MOVE))  # 51 > 100 x 0.5
        for _ in range(20):
            await asyncio.sleep(0)
        waited = not near.done()
        state.blocked = False
        state.release.set()
        return far, waited, await near

    far, waited, near = asyncio.run(scenario())
    assert far == [None] * 49  # not one waited for the blocked round trips
    assert waited and near is None  # near the limit the change waited for the counts to be stored and read
    assert stored_counts(state) == 50  # every change before it reached the store (it is stored with the next)


def test_a_background_store_that_failed_loses_no_count(caplog: pytest.LogCaptureFixture) -> None:
    clock, state = FakeClock(), SlowCounts()
    g = guard(state, clock, WIDE)

    async def scenario() -> None:
        assert await g.check(user_item(PEOPLE[0], "notification"), MOVE) is None
        state.fail_next = True
        for u in PEOPLE[1:25]:  # the 20th change starts a background store, which fails
            assert await g.check(user_item(u, "notification"), MOVE) is None
            await asyncio.sleep(0)
        clock.advance(REFRESH_S + 1)
        assert await g.check(user_item(PEOPLE[25], "notification"), MOVE) is None  # stores again
        for _ in range(20):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert "could not store or read the counts" in caplog.text
    assert stored_counts(state) == 26  # every change of the first instance, the failed store's too


def test_the_start_up_warning_names_the_limits_the_file_left_at_their_default() -> None:
    """A file that sets two of the three limits (as the benchmarks' do) is told which one is still
    a default, not that it sets none."""
    base = "version: 1\nattributes:\n  - {source: mail, target: email}\n"
    partial = parse_mapping(base + "guard: {max_deprovisions: 1000, min_changes_for_share: 1000}\n")
    warning = unwritten_limits(partial.target("auth0"), 1)
    assert "past 1000 deprovisions in 60 minutes, or past 20% of the managed accounts once 1000" in warning
    assert "(max_deprovision_share is the default: guard does not set it)" in warning
    assert "Set guard.max_deprovision_share in the mapping file to choose it " in warning
    none = unwritten_limits(parse_mapping(base).target("auth0"), 1)
    assert "this version 1 mapping file does not set them" in none
    assert "Set guard.max_deprovisions, max_deprovision_share and min_changes_for_share in" in none
    written = parse_mapping(
        base + "guard: {max_deprovisions: 9, max_deprovision_share: 0.5, min_changes_for_share: 9}\n"
    )
    assert unwritten_limits(written.target("auth0"), 1) == ""
