"""A target's health, through the queue functions and the real composition root, on an injected
clock: a breaker that counts failures once per state, probes one call at a time and closes on a
success (issue 18, item 5); a rate gate that holds every identity's calls to a throttled target
(item 6); a 5xx's Retry-After honoured by the retry (item 7).

Azurite's queue keeps time on the wall clock, so :class:`Host` stands in for the Functions host on
the injected one: every share the worker re-schedules still goes to the real queue, and the host
also keeps it with the time it becomes visible, then runs it through the queue function when the
clock gets there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.scim import ScimApp
from sandbox.server import FaultRule, RateLimit
from shared.bootstrap import App
from shared.core.work import WorkItem, user_item
from shared.services.health import COOLDOWN_S, MAX_COOLDOWN_S, THRESHOLD
from shared.services.reconcile import reconcile_every
from shared.services.worker import MAX_TARGET_ATTEMPTS, SHARE_RATE_WAIT_S
from tests.integration.world import World, audit_rows, queued, run_worker, services_for, waiting
from tests.support import FakeClock

HOURS = 3600.0
# The longest a waiting share may take to notice a target is back: the longest cool-down, the
# queue's jitter on it (at most 1 + 30 s), and one wait behind another call's probe (15 s, jitter).
RECOVERY_S = MAX_COOLDOWN_S + 31 + 15 + 16


class Host:
    """The Functions host on the injected clock (see the module's docstring)."""

    def __init__(self, svc: App, clock: FakeClock, indexed: dict[str, Any]):
        self.clock = clock
        self.indexed = indexed
        self.due: list[tuple[float, int, WorkItem]] = []
        self.runs = 0
        order = itertools.count()
        send_later = svc.queue.defer

        async def defer(item: WorkItem, delay_s: float) -> float:
            delay = await send_later(item, delay_s)
            heapq.heappush(self.due, (clock.now() + delay, next(order), item))
            return delay

        svc.queue.defer = defer  # type: ignore[method-assign]

    async def run_until(self, end: float, limit: int) -> None:
        """Every share that becomes visible before ``end``, in time order (at most ``limit`` runs)."""
        runs = 0
        while self.due and self.due[0][0] <= end:
            assert runs < limit, f"more than {limit} invocations: the shares are not settling"
            runs += 1
            at, _, item = heapq.heappop(self.due)
            self.clock.advance(max(0.0, at - self.clock.now()))
            await run_worker(self.indexed, item)
            self.runs += 1
        self.clock.advance(max(0.0, end - self.clock.now()))


def in_scope(world: World, count: int) -> list[dict[str, Any]]:
    """``count`` enabled Members with a mail address: in the Auth0 target's scope."""
    found = [
        u for u in world.graph.snapshot(full=True)["dump"]["users"]
        if u.get("userType") == "Member" and u["accountEnabled"] and u.get("mail")
    ]  # fmt: skip
    assert len(found) >= count, f"the seeded tenant has {len(found)} such users, not {count}"
    return found[:count]


def auth0_calls(world: World, route: str = "mgmt.") -> int:
    return sum(1 for e in world.auth0.log.entries() if e.route.startswith(route))


def outcomes(rows: list[dict[str, Any]], *wanted: str) -> list[dict[str, Any]]:
    """The work's own rows with these outcomes (an alert's row says whether it was delivered:
    these worlds configure no channel, so each is "failed" and is checked on its own)."""
    return [r for r in rows if r["outcome"] in wanted and r["identity"] != "alerts"]


def quarantine_alerts(rows: list[dict[str, Any]]) -> list[str]:
    return [r["detail"] for r in rows if r["identity"] == "alerts" and "is quarantined" in r["detail"]]


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=30, groups=4, scope="{user_types: [Member]}").start()
    try:
        yield w
    finally:
        w.stop()


def test_a_six_hour_outage_loses_nothing_spends_no_attempts_and_recovers_in_minutes_without_an_operator(
    world: World, indexed: dict[str, Any]
) -> None:
    users = in_scope(world, 6)
    clock = FakeClock()
    world.auth0.faults.configure([FaultRule("mgmt.*", kind="error", status=503)])  # Auth0 is down

    async def scenario() -> dict[str, Any]:
        async with services_for(world, clock=clock) as svc:
            host = Host(svc, clock, indexed)
            start = clock.now()
            for u in users:  # each change's notification, as it arrives
                await run_worker(indexed, user_item(u["id"], "notification"))
            await host.run_until(start + 6 * HOURS, limit=2_000)
            calls_down = auth0_calls(world)
            rows_down = await audit_rows(svc)
            world.auth0.faults.configure([])  # back, with nobody told
            back = clock.now()
            await host.run_until(back + RECOVERY_S, limit=200)
            converged = [world.account(u["id"]) is not None for u in users]
            return {
                "calls_down": calls_down, "rows_down": rows_down, "converged": converged,
                "rows": await audit_rows(svc), "poisoned": await waiting(svc, "poison"), "runs": host.runs,
            }  # fmt: skip

    out = asyncio.run(scenario())
    assert all(out["converged"])  # every waiting share converged within minutes of the end
    for u in users:
        account = world.account(u["id"])
        assert account is not None and account["email"] == u["mail"].strip().lower()
    assert out["poisoned"] == 0 and not outcomes(out["rows"], "poisoned", "failed")
    (alert,) = quarantine_alerts(out["rows"])  # once for the outage, not once per failed probe
    assert alert.startswith("auth0 is quarantined for ") and "503" in alert
    # Attempts are spent only while the breaker was closed: THRESHOLD - 1 shares retried once, the
    # failure that opened it and everything after waited for the target instead.
    retried = outcomes(out["rows_down"], "retrying")
    assert len(retried) == THRESHOLD - 1 < MAX_TARGET_ATTEMPTS
    # The target was probed one call at a time for six hours, at least once per longest cool-down
    # (it needed no operator), and never more often than the breaker allows.
    probes = out["calls_down"] - THRESHOLD
    assert 6 * HOURS / (MAX_COOLDOWN_S + 31 + 15) <= probes <= 6 * HOURS / MAX_COOLDOWN_S + 8


@pytest.fixture
def big_world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=225, groups=4).start()  # more than 200 users in scope
    try:
        yield w
    finally:
        w.stop()


def twenty_failures() -> FaultRule:
    """The review's scenario: twenty calls fail, all under way at once, then Auth0 is fine again
    (a new rule each time: the emulator counts a rule's firings down)."""
    return FaultRule("mgmt.users.write.create", kind="error", status=503, count=20)


# The breaker opened once (a cool-down of COOLDOWN_S), a probe then closed it: every account
# exists by then, with the queue's jitter and a wait behind the probe.
CONVERGED_BY_S = COOLDOWN_S + 31 + 15 + 16


def assert_every_account_created(world: World, out: dict[str, Any], in_scope_count: int) -> None:
    assert in_scope_count >= 200
    missing = [u["id"] for u in in_scope(world, in_scope_count) if world.account(u["id"]) is None]
    assert missing == [] and out["left"] == 0
    assert out["poisoned"] == 0 and not outcomes(out["rows"], "poisoned", "failed")
    assert len(quarantine_alerts(out["rows"])) == 1  # the breaker opened once: the operators told once
    # Each failed create was sent again once, and nothing else was sent twice.
    assert auth0_calls(world, "mgmt.users.write.create") == in_scope_count + 20


def test_twenty_failures_in_flight_open_the_breaker_once_and_a_200_user_backfill_creates_every_account(
    big_world: World, indexed: dict[str, Any]
) -> None:
    world, clock = big_world, FakeClock()
    world.auth0.faults.configure([twenty_failures()])

    async def scenario() -> dict[str, Any]:
        async with services_for(world, clock=clock) as svc:
            host = Host(svc, clock, indexed)
            start = clock.now()
            result = await svc.backfill("auth0", concurrency=20).run()  # twenty under way at once
            during = auth0_calls(world, "mgmt.users.write.create")
            await host.run_until(start + CONVERGED_BY_S, limit=600)
            return {
                "result": result, "during": during, "rows": await audit_rows(svc),
                "poisoned": await waiting(svc, "poison"), "left": len(host.due),
            }  # fmt: skip

    out = asyncio.run(scenario())
    result = out["result"]
    assert result.failed == 0
    # Once the breaker opened the backfill stopped calling Auth0 (the calls then under way aside)
    # and handed the rest to the queue, which waited out the cool-down.
    assert out["during"] <= 20 + 20 and result.waiting >= result.in_scope - 40
    assert_every_account_created(world, out, result.in_scope)


def test_twenty_failures_in_flight_under_queue_load_delay_the_rest_by_one_cool_down_only(
    big_world: World, indexed: dict[str, Any]
) -> None:
    world, clock = big_world, FakeClock()

    async def scenario() -> dict[str, Any]:
        async with services_for(world, clock=clock) as svc:
            host = Host(svc, clock, indexed)
            (run,) = await reconcile_every(svc.reconcilers, "apply")  # a work item per missing account
            world.auth0.faults.configure([twenty_failures()])
            items = await queued(svc)
            start = clock.now()
            for batch in range(0, len(items), 20):  # the host runs twenty messages at a time
                await asyncio.gather(*(run_worker(indexed, item) for item in items[batch : batch + 20]))
            await host.run_until(start + CONVERGED_BY_S, limit=600)
            return {
                "missing": run.counts.get("missing", 0), "rows": await audit_rows(svc),
                "poisoned": await waiting(svc, "poison"), "left": len(host.due),
            }  # fmt: skip

    out = asyncio.run(scenario())
    assert_every_account_created(world, out, out["missing"])


def test_a_5xx_retry_after_is_when_the_share_is_tried_again(world: World, indexed: dict[str, Any]) -> None:
    user = in_scope(world, 1)[0]
    world.auth0.faults.configure([FaultRule("mgmt.*", kind="error", status=503, count=1, retry_after_s=120)])

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await audit_rows(svc)

    (retrying,) = outcomes(asyncio.run(scenario()), "retrying")
    seconds = int(re.search(r"runs again in (\d+) s", retrying["detail"]).group(1))  # type: ignore[union-attr]
    assert 120 <= seconds <= 120 + 13  # Auth0's Retry-After, plus at most the queue's jitter


SCIM_SECTION = """\
  scim:crm:
    base_url: BASE
    token_setting: SCIM_CRM_TOKEN
    attributes:
      - {source: userPrincipalName, target: userName}
      - {source: displayName, target: displayName}
    deprovision: {action: disable}
"""


def test_after_a_scim_429_with_retry_after_no_identitys_call_reaches_the_application_before_it_passes(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any]
) -> None:
    app = ScimApp().start()
    world = World(
        azurite, tmp_path, users=20, groups=4, other_targets=SCIM_SECTION.replace("BASE", app.base_url),
        extra_env={"SCIM_CRM_TOKEN": app.token},
    ).start()  # fmt: skip
    clock = FakeClock()
    first, second = in_scope(world, 2)
    share = {u["id"]: user_item(u["id"], "notification") for u in (first, second)}
    share = {k: dataclasses.replace(item, target="scim:crm") for k, item in share.items()}  # its SCIM share only
    try:

        async def scenario() -> dict[str, Any]:
            async with services_for(world, clock=clock) as svc:
                app.limits.configure({"scim.users.create": RateLimit(burst=0, per_second=0.25)})  # Retry-After: 4
                throttled_at = clock.now()
                await run_worker(indexed, share[first["id"]])
                app.limits.configure({})  # the application would answer again; the gate still holds
                seen = len(app.log.entries())
                reached_while_closed = []
                for at in (0.5, 2.0, 3.9):
                    clock.advance(throttled_at + at - clock.now())
                    await run_worker(indexed, share[second["id"]])
                    reached_while_closed.append(len(app.log.entries()) - seen)
                clock.advance(throttled_at + 4.1 - clock.now())
                await run_worker(indexed, share[second["id"]])
                return {"reached": reached_while_closed, "rows": await audit_rows(svc)}

        out = asyncio.run(scenario())
        assert out["reached"] == [0, 0, 0]  # nothing of the second identity's went out for 4 s
        assert app.user_by_username(second["userPrincipalName"]) is not None  # then it did
        waited = [r for r in out["rows"] if r["identity"] == second["id"] and r["action"] == "deferred"]
        assert len(waited) == 3 and all("without spending an attempt" in r["detail"] for r in waited)
        assert app.user_by_username(first["userPrincipalName"]) is None  # its share waits on the queue
    finally:
        world.stop()
        app.stop()


def test_a_share_waits_at_most_its_budget_at_a_throttled_target_then_waits_on_the_queue(
    world: World, indexed: dict[str, Any]
) -> None:
    """Every call meets a 429 that asks for 6 s: a share waits that out in-process only while its
    waits add up to at most SHARE_RATE_WAIT_S (not a call's 10 s limit for each of its calls and
    retries), then goes back to the queue, where it holds no worker slot (issue 18: the lane filled
    with shares each waiting minutes at Auth0's Enterprise limits)."""
    user = in_scope(world, 1)[0]
    clock = FakeClock()
    world.auth0.faults.configure([FaultRule("mgmt.*", kind="error", status=429, retry_after_s=6)])

    async def scenario() -> dict[str, Any]:
        async with services_for(world, clock=clock) as svc:
            start = clock.now()
            run = asyncio.ensure_future(run_worker(indexed, user_item(user["id"], "notification")))
            for _ in range(2_000):  # the clock moves only while the share waits on it
                if run.done():
                    break
                await asyncio.sleep(0.005)
                clock.advance(0.5)
            await run
            return {"waited": clock.now() - start, "rows": await audit_rows(svc)}

    out = asyncio.run(scenario())
    (deferred,) = outcomes(out["rows"], "deferred")
    assert "without spending an attempt" in deferred["detail"]
    # The call, and one retry after 6 s; the next 6 s would pass the budget. (The clock is driven
    # while storage calls are under way too, so the time it shows is the budget plus some steps.)
    assert auth0_calls(world) == 2
    assert out["waited"] < 2 * SHARE_RATE_WAIT_S
