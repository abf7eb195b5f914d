"""Per-target isolation: the unit of work is (identity, target), so a target that is slow, down or
quarantined never delays another.

Two targets from one version 2 mapping file: Auth0 (on the emulator) and the in-memory target
``memory:crm``. One of them is held or fails for minutes (on an injected clock); the other converges
every identity in the same invocation, its calls are not repeated, and the failing one is called no
more than its circuit breaker allows (one probe at a time once it opened), loses nothing and
converges once it is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.memory import MemoryKind, MemoryTarget, kinds_with_memory
from sandbox.server import FaultRule
from shared.core.work import user_item
from shared.services.health import THRESHOLD
from shared.services.reconcile import reconcile_every
from tests.integration.world import World, audit_rows, queued, run_worker, services_for, waiting
from tests.support import FakeClock

CRM = """\
  memory:crm:
    attributes:
      - {source: mail, target: email, transforms: [trim, lower]}
      - {source: displayName, target: name}
      - {source: department, target: department}
    groups:
      - {group: GROUP0, groups: [staff]}
      - {group: GROUP1, groups: [sales]}
    deprovision: {action: disable}
"""


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=60, groups=4, other_targets=CRM).start()
    try:
        yield w
    finally:
        w.stop()


def members(world: World, count: int) -> list[dict[str, Any]]:
    """``count`` enabled Members with a mail address in group 0 (in scope for both targets)."""
    in_0 = world.transitive_users(world.group_ids[0])
    found = [
        u for u in world.graph.snapshot(full=True)["dump"]["users"]
        if u["id"] in in_0 and u.get("userType") == "Member" and u["accountEnabled"] and u.get("mail")
    ]  # fmt: skip
    assert len(found) >= count, "the seeded tenant has too few such users"
    return found[:count]


def crm_of(kind: MemoryKind) -> MemoryTarget:
    return kind.built["memory:crm"]


def test_a_v2_mapping_with_two_targets_syncs_a_joiner_into_both(world: World, indexed: dict[str, Any]) -> None:
    kind = MemoryKind()
    user = world.member_user()

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world, kinds=kinds_with_memory(kind)) as svc:
            assert sorted(svc.jobs) == ["auth0", "memory:crm"]
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    account = world.account(user["id"])
    assert account is not None and account["email"] == user["mail"].strip().lower()
    crm = crm_of(kind)
    assert crm.data[f"mem|{user['id']}"]["email"] == user["mail"].strip().lower()
    assert crm.data[f"mem|{user['id']}"]["department"] == user.get("department")
    assert crm.entitlements[f"mem|{user['id']}"] == {"staff"}
    by_target = {r["target"] for r in rows if r["identity"] == user["id"] and r["action"] == "create"}
    assert by_target == {"auth0", "memory:crm"}  # each target audits its own share


def test_nightly_reconciliation_runs_per_target_and_fixes_drift_only_where_it_is(
    world: World, indexed: dict[str, Any]
) -> None:
    kind = MemoryKind()
    users = members(world, 3)
    drifted = users[0]

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with services_for(world, kinds=kinds_with_memory(kind)) as svc:
            for u in users:
                await run_worker(indexed, user_item(u["id"], "notification"))
            crm = crm_of(kind)
            crm.data[f"mem|{drifted['id']}"]["department"] = "Changed by hand"  # drift in the CRM only
            first = await reconcile_every(svc.reconcilers, "apply")
            for item in await queued(svc):
                await run_worker(indexed, item)
            # The rest of the tenant was missing from both and is created in both; the drifted
            # account was in sync in Auth0, and no Auth0 account is updated.
            assert "mgmt.users.write.update" not in world.auth0_writes()
            second = await reconcile_every(svc.reconcilers, "dry-run")
            return first, second

    first, second = asyncio.run(scenario())
    by_target = {s.target: s for s in first}
    assert sorted(by_target) == ["auth0", "memory:crm"]
    auth0, crm = by_target["auth0"].counts, by_target["memory:crm"].counts
    assert "attribute_mismatch" not in auth0 and crm["attribute_mismatch"] == 1
    assert auth0["missing"] == crm["missing"] > 0  # the identities no one had synced yet
    assert crm_of(kind).data[f"mem|{drifted['id']}"]["department"] == drifted.get("department")
    assert all(s.drifted == 0 and s.status == "completed" for s in second)


def test_a_slow_target_does_not_hold_the_other_within_one_invocation(world: World, indexed: dict[str, Any]) -> None:
    kind = MemoryKind()
    user = world.member_user()

    async def scenario() -> tuple[bool, bool, bool]:
        async with services_for(world, kinds=kinds_with_memory(kind)):
            crm = crm_of(kind)
            crm.hold = asyncio.Event()  # every call to the CRM waits until it is set
            task = asyncio.create_task(run_worker(indexed, user_item(user["id"], "notification")))
            for _ in range(500):  # bounded: at most ~10 s of real time, normally well under one
                if world.account(user["id"]) is not None and world.auth0_writes().get("mgmt.users.roles.post"):
                    break
                await asyncio.sleep(0.02)
            auth0_done_while_held = world.account(user["id"]) is not None
            crm_empty_while_held = not crm.data
            crm.hold.set()
            await asyncio.wait_for(task, timeout=30)
            return auth0_done_while_held, crm_empty_while_held, bool(crm.data)

    auth0_done_while_held, crm_empty_while_held, crm_done_after = asyncio.run(scenario())
    assert auth0_done_while_held and crm_empty_while_held  # Auth0 converged while the CRM hung
    assert crm_done_after


def test_a_target_down_for_minutes_never_delays_the_other_and_converges_when_back(
    world: World, indexed: dict[str, Any]
) -> None:
    kind = MemoryKind()
    clock = FakeClock()
    users = members(world, 10)
    items = [user_item(u["id"], "notification") for u in users]
    world.auth0.faults.configure([FaultRule("mgmt.*", kind="error", status=503)])  # Auth0 is down

    async def scenario() -> dict[str, Any]:
        async with services_for(world, kinds=kinds_with_memory(kind), clock=clock) as svc:
            crm = crm_of(kind)
            converged_at_once = []
            for item in items:  # one invocation each, 30 s apart: five minutes of outage
                before = len(crm.writes)
                await run_worker(indexed, item)
                converged_at_once.append(len(crm.writes) > before and f"mem|{item.id}" in crm.data)
                clock.advance(30)
            auth0_calls_down = sum(1 for e in world.auth0.log.entries() if e.route.startswith("mgmt."))
            health = svc.jobs["auth0"].health
            quarantined = (await health.view()).open_until > clock.now()
            scheduled = await waiting(svc)
            rows = await audit_rows(svc)
            crm_calls = dict(crm.calls)

            # Auth0 is back. What the queue holds for it (its shares, once visible) runs again.
            world.auth0.faults.configure([])
            clock.advance(health.quarantine_s() + 1)
            for item in items:
                await run_worker(indexed, dataclasses.replace(item, target="auth0"))
            return {
                "converged_at_once": converged_at_once, "auth0_calls_down": auth0_calls_down,
                "quarantined": quarantined, "scheduled": scheduled, "rows": rows, "crm_calls": crm_calls,
                "crm_calls_after": dict(crm.calls), "final_rows": await audit_rows(svc),
                "poisoned": await waiting(svc, "poison"),
            }  # fmt: skip

    out = asyncio.run(scenario())
    assert all(out["converged_at_once"])  # every identity reached the CRM in its first invocation
    assert out["quarantined"]
    rows = out["rows"]
    auth0_rows = [(r["action"], r["outcome"]) for r in rows if r.get("target") == "auth0" and r["identity"] != "alerts"]
    tried, waited = auth0_rows.count(("sync", "retrying")), auth0_rows.count(("deferred", "deferred"))
    assert tried + waited == len(items)
    # Auth0 was tried until its breaker opened (the failure that opened it waits rather than
    # retries), then only by one probe at the end of each cool-down (which doubles): one call per
    # try, the rest of the shares never reached it.
    assert tried == THRESHOLD - 1 and waited == len(items) - tried
    probes = out["auth0_calls_down"] - THRESHOLD
    assert 1 <= probes <= 2  # at 150 s (30 s after it opened) and at 210 s (60 s after that)
    work = [r for r in rows if r["identity"] != "alerts"]  # an alert's row says whether it was delivered
    assert not [r for r in work if r["outcome"] in {"poisoned", "failed"}]
    told = [r["detail"] for r in rows if r["identity"] == "alerts" and "is quarantined" in r["detail"]]
    assert len(told) == 1 and told[0].startswith("auth0 is quarantined")  # the operators told once
    assert out["scheduled"] == len(items)  # every Auth0 share waits on the queue: nothing was lost
    # Auth0's return runs only its own shares: the CRM is not called again.
    assert out["crm_calls_after"] == out["crm_calls"]
    for u in users:
        account = world.account(u["id"])
        assert account is not None and account["email"] == u["mail"].strip().lower()
    assert out["poisoned"] == 0


def test_a_share_for_a_target_the_mapping_no_longer_names_is_skipped_and_audited(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    share = dataclasses.replace(user_item(user["id"], "notification"), target="scim:gone")

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world, kinds=kinds_with_memory()) as svc:
            await run_worker(indexed, share)
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    mine = [r for r in rows if r["identity"] == user["id"]]
    assert [(r["target"], r["outcome"]) for r in mine] == [("scim:gone", "skipped")]
    assert world.account(user["id"]) is None  # the other targets' shares were not run for it
