"""What the link remembers was applied, against the emulators: a mover or a group change costs Auth0
only its writes, a notification that changes nothing mapped costs no call, and where the memory is
wrong (a change or a delete made directly in Auth0) reconciliation or the write's 404 puts it
right. Where it must not be trusted it is not: a block or an unblock (an administrator's block)
and anything after a plan that stopped part-way read Auth0. This is the trade-off the README's
guarantees describe."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.azurite import Azurite
from sandbox.server import FaultRule
from shared.core.work import user_item
from tests.integration.world import World, audit_rows, run_worker, services_for


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path).start()
    try:
        yield w
    finally:
        w.stop()


def by_hand(world: World, method: str, path: str, body: Any = None) -> None:
    """What an Auth0 administrator would do through the Management API."""
    headers = {"Authorization": f"Bearer {world.auth0.static_token}"}
    httpx.request(method, f"{world.auth0.base_url}{path}", headers=headers, json=body).raise_for_status()


def test_a_mover_or_group_change_costs_auth0_its_writes_alone_a_block_decision_one_read(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    uid = f"auth0|{user['id']}"

    async def scenario() -> list[dict[str, int]]:
        spent = []
        async with services_for(world):
            await run_worker(indexed, user_item(user["id"], "notification"))  # the joiner
            world.auth0.add_sessions(uid, 2, refresh_tokens=1)
            steps = [
                lambda: world.graph.update_user(user["id"], department="Sales"),  # mover
                lambda: world.graph.add_member(world.group_ids[1], user["id"]),  # group change
                lambda: world.graph.update_user(user["id"], officeLocation="Nowhere mapped"),  # no-op
                lambda: world.graph.update_user(user["id"], accountEnabled=False),  # leaver
                lambda: None,  # the leaver's notification again
                lambda: world.graph.update_user(user["id"], accountEnabled=True),  # returner
            ]
            for step in steps:
                step()
                world.auth0.log.clear()
                await run_worker(indexed, user_item(user["id"], "notification"))
                spent.append(world.auth0_calls())
        return spent

    mover, group, noop, leaver, replay, returner = asyncio.run(scenario())
    assert mover == {"mgmt.users.write.update": 1}
    assert group == {"mgmt.users.roles.assign": 1}
    assert noop == {}
    # Whose block it is and whether one is needed is read, never remembered (not its roles: a
    # leaver's are left as they are); a returner's roles are read too, as its grants need them.
    assert leaver == {
        "mgmt.users.get": 1,
        "mgmt.users.write.update": 1, "mgmt.users.sessions.delete": 1, "mgmt.users.refresh_tokens.delete": 1,
    }  # fmt: skip
    assert replay == {"mgmt.users.get": 1}
    assert returner == {"mgmt.users.get": 1, "mgmt.users.roles.list": 1, "mgmt.users.write.update": 1}
    account = world.account(user["id"])
    assert account is not None and account["blocked"] is False
    assert account["user_metadata"]["department"] == "Sales"
    assert sorted(world.auth0.user_role_names(uid)) == ["Employee", "Sales Reader", "Sales Writer"]


def test_a_change_made_directly_in_auth0_is_left_by_notifications_and_repaired_by_reconciliation(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    uid = f"auth0|{user['id']}"

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            by_hand(world, "PATCH", f"/users/{uid}", {"user_metadata": {"department": "Edited in Auth0"}})
            world.graph.update_user(user["id"], displayName="Ada Renamed")
            await run_worker(indexed, user_item(user["id"], "notification"))
            after_notification = dict(world.account(user["id"]) or {})
            await run_worker(indexed, user_item(user["id"], "reconcile"))  # a repair reconciliation queued
            return after_notification, await audit_rows(svc)

    after_notification, rows = asyncio.run(scenario())
    assert after_notification["name"] == "Ada Renamed"
    assert after_notification["user_metadata"]["department"] == "Edited in Auth0"  # not seen: no read
    account = world.account(user["id"])
    assert account is not None and account["user_metadata"]["department"] == user["department"]
    assert rows[-1]["source"] == "reconcile" and rows[-1]["action"] == "update"


def test_an_account_deleted_in_auth0_by_hand_is_created_again_by_the_next_change(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    uid = f"auth0|{user['id']}"

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            by_hand(world, "DELETE", f"/users/{uid}")
            world.graph.update_user(user["id"], department="Finance")
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    account = world.account(user["id"])
    assert account is not None and account["user_metadata"]["department"] == "Finance"
    assert world.auth0.snapshot()["users"] == 1
    assert [r["action"] for r in rows if r["action"] == "create"] == ["create", "create"]


def test_both_revocations_go_out_together_and_each_that_took_effect_has_its_audit_row(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    uid = f"auth0|{user['id']}"

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.auth0.add_sessions(uid, 2, refresh_tokens=2)
            world.graph.update_user(user["id"], accountEnabled=False)
            # The sessions revocation fails once; the refresh tokens' one, sent beside it, lands.
            world.auth0.faults.configure([FaultRule("mgmt.users.sessions.delete", kind="error", status=503, count=1)])
            item = user_item(user["id"], "notification")
            await run_worker(indexed, item)
            await run_worker(indexed, dataclasses.replace(item, target="auth0", attempt=1))  # its retry
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    landed = Counter(e.route for e in world.auth0.log.entries() if e.write and e.status < 300)
    recorded = Counter(r["action"] for r in rows if r["outcome"] == "ok")
    assert landed["mgmt.users.refresh_tokens.delete"] == recorded["revoke_refresh_tokens"] == 2
    assert landed["mgmt.users.sessions.delete"] == recorded["revoke_sessions"] == 1
    assert world.auth0.sessions_of(uid) == {"sessions": 0, "refresh_tokens": 0}
    assert ("sync", "retrying") in [(r["action"], r["outcome"]) for r in rows]


def test_an_administrators_block_is_never_taken_for_ours_nor_lifted_by_a_return(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    uid = f"auth0|{user['id']}"

    async def scenario() -> tuple[Any, list[dict[str, Any]]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))  # the joiner, remembered
            by_hand(world, "PATCH", f"/users/{uid}", {"blocked": True})  # an administrator's block
            world.graph.update_user(user["id"], accountEnabled=False)
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.graph.update_user(user["id"], accountEnabled=True)
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await svc.job().links.get(user["id"]), await audit_rows(svc)

    link, rows = asyncio.run(scenario())
    account = world.account(user["id"])
    assert account is not None and account["blocked"] is True  # the administrator's block stays
    assert link is not None and link.disabled_by_sync is False
    actions = [r["action"] for r in rows]
    assert "unblock" not in actions and "block" not in actions  # already blocked: not ours to claim
    assert actions.count("revoke_sessions") == 1  # a leaver is still signed out


def test_a_plan_that_stops_part_way_is_not_written_or_audited_twice_by_the_next_notification(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    uid = f"auth0|{user['id']}"

    async def scenario() -> tuple[str, list[dict[str, Any]]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))  # the joiner, remembered
            world.graph.update_user(user["id"], department="Sales")
            world.graph.add_member(world.group_ids[1], user["id"])
            # The update lands; the role assignment after it fails (its retry waits on the queue).
            world.auth0.faults.configure([FaultRule("mgmt.users.roles.assign", kind="error", status=503, count=1)])
            item = user_item(user["id"], "notification")
            await run_worker(indexed, item)
            first = (await audit_rows(svc))[-1]["outcome"]
            await run_worker(indexed, user_item(user["id"], "delta"))  # the same change, seen again
            await run_worker(indexed, dataclasses.replace(item, target="auth0", attempt=1))  # the retry
            return first, await audit_rows(svc)

    first, rows = asyncio.run(scenario())
    assert first == "retrying"
    landed = Counter(e.route for e in world.auth0.log.entries() if e.write and e.status < 300)
    assert landed["mgmt.users.write.update"] == 1
    assert [(r["action"], r["outcome"]) for r in rows].count(("update", "ok")) == 1
    assert sorted(world.auth0.user_role_names(uid)) == ["Employee", "Sales Reader", "Sales Writer"]
    account = world.account(user["id"])
    assert account is not None and account["user_metadata"]["department"] == "Sales"
