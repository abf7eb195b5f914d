"""Mass changes are held on every path, not only at night: deprovisions and one attribute changed
on many accounts, through notifications, over a sliding window; held work is kept, one alert goes
out, and approving releases it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from sandbox.azurite import Azurite
from sandbox.receiver import WebhookReceiver
from shared import bootstrap
from shared.bootstrap import App
from shared.core.work import user_item
from shared.mapping.model import GuardPolicy
from shared.settings import Secret
from tests.integration.world import World, audit_rows, drain, run_worker, services_for


def world_for(azurite: Azurite, tmp_path: Path, receiver: WebhookReceiver, extra: str = "") -> World:
    w = World(azurite, tmp_path, mapping_extra=extra).start()
    w.settings = dataclasses.replace(w.settings, notify_webhook_url=Secret(receiver.url()))
    return w


async def everyone_synced(indexed: dict[str, Any], svc: App) -> list[str]:
    await svc.delta.backfill()
    await drain(indexed, svc)
    return sorted([link.source_id async for link in svc.job().links.all()])


def episode_in(text: str) -> str:
    found = re.search(r"entra-sync approve (\S+)", text)
    assert found is not None
    return found.group(1)


def test_disabling_most_of_a_tenant_through_notifications_is_held_past_the_threshold_until_approved(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    world = world_for(azurite, tmp_path, receiver)

    async def scenario() -> Any:
        async with services_for(world) as svc:
            managed = await everyone_synced(indexed, svc)
            leavers = managed[: int(len(managed) * 0.6)]
            for entra_id in leavers:
                world.graph.update_user(entra_id, accountEnabled=False)
                await run_worker(indexed, user_item(entra_id, "notification"))
            blocked_first = [e for e in leavers if (world.account(e) or {}).get("blocked")]
            alerts = receiver.texts()
            approved = await svc.job().guard.approve(episode_in(alerts[0]), approver="alice")
            await drain(indexed, svc)
            one_more = next(e for e in managed if e not in leavers)  # approved: the window lets it through
            world.graph.update_user(one_more, accountEnabled=False)
            await run_worker(indexed, user_item(one_more, "notification"))
            return managed, leavers, blocked_first, alerts, approved, one_more, await audit_rows(svc)

    try:
        managed, leavers, blocked_first, alerts, approved, one_more, rows = asyncio.run(scenario())
    finally:
        world.stop()
    floor = GuardPolicy().min_changes_for_share  # the share rule (20% by default) applies from the 10th
    assert 20 <= len(managed) < 50 and len(leavers) > floor  # 10 of them are past 20%: the 10th trips
    assert len(blocked_first) == floor - 1  # 9 are past 20% but under the floor
    held = [r for r in rows if r["action"] == "held"]
    assert len(held) == len(leavers) - len(blocked_first)  # every later one held, none dropped
    assert len(alerts) == 1 and "mass change held for auth0" in alerts[0]
    assert approved == len(held)
    assert all((world.account(e) or {}).get("blocked") for e in leavers)  # released by the approval
    assert (world.account(one_more) or {}).get("blocked") is True
    assert any(r["action"] == "approve" and "approved by alice" in r["detail"] for r in rows)


def test_one_attribute_changed_on_many_accounts_is_held_with_one_alert(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    world = world_for(azurite, tmp_path, receiver, extra="guard: {max_attribute_changes: 5}")

    async def scenario() -> Any:
        async with services_for(world) as svc:
            managed = await everyone_synced(indexed, svc)
            for entra_id in managed[:12]:  # an HR feed blanks everyone's department
                world.graph.update_user(entra_id, department=None)
                await run_worker(indexed, user_item(entra_id, "notification"))
            return managed, await audit_rows(svc)

    try:
        managed, rows = asyncio.run(scenario())
    finally:
        world.stop()
    cleared = [e for e in managed[:12] if "department" not in ((world.account(e) or {}).get("user_metadata") or {})]
    assert len(cleared) == 5  # the limit; the sixth and later are held
    held = [r for r in rows if r["action"] == "held"]
    assert len(held) == 7
    assert "accounts would have user_metadata.department changed" in held[0]["detail"]
    assert len(receiver.texts()) == 1


def test_a_share_is_judged_against_the_managed_accounts_of_now_not_of_an_earlier_count(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    world = world_for(azurite, tmp_path, receiver)

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            first = world.member_user()
            await run_worker(indexed, user_item(first["id"], "notification"))
            world.graph.update_user(first["id"], department="Early")  # the guard counts one managed account
            await run_worker(indexed, user_item(first["id"], "notification"))
            managed = await everyone_synced(indexed, svc)  # then the tenant is loaded
            for entra_id in managed[:6]:  # six department changes of ~30 accounts: 20%, under the 50% share
                world.graph.update_user(entra_id, department="Reorganised")
                await run_worker(indexed, user_item(entra_id, "notification"))
            return await audit_rows(svc)

    try:
        rows = asyncio.run(scenario())
    finally:
        world.stop()
    assert not [r for r in rows if r["action"] == "held"]
    assert receiver.texts() == []


def test_five_leavers_of_ten_managed_accounts_all_go_out_at_once(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    """A small tenant: half its accounts leaving in an hour is not a mass change. Holding them would
    leave five people who were let go with access (the share rule has a floor of 10)."""
    world = world_for(azurite, tmp_path, receiver)  # a version 1 file without a guard section: defaults

    async def scenario() -> Any:
        async with services_for(world) as svc:
            members = [u["id"] for u in world.graph.snapshot(full=True)["dump"]["users"]
                       if u["userType"] == "Member" and u["accountEnabled"]][:10]  # fmt: skip
            for entra_id in members:  # the tenant's ten managed accounts
                await run_worker(indexed, user_item(entra_id, "notification"))
            managed = await svc.job().links.count()
            for entra_id in members[:5]:
                world.graph.update_user(entra_id, accountEnabled=False)
                await run_worker(indexed, user_item(entra_id, "notification"))
            return members, managed, await audit_rows(svc)

    try:
        members, managed, rows = asyncio.run(scenario())
    finally:
        world.stop()
    assert managed == 10
    assert [(world.account(e) or {}).get("blocked") for e in members[:5]] == [True] * 5
    assert not [r for r in rows if r["action"] == "held"]
    assert receiver.texts() == []


def test_a_mapping_that_leaves_the_deprovision_limits_out_says_at_start_up_which_hold_live_leavers(
    azurite: Azurite, tmp_path: Path, receiver: WebhookReceiver, caplog: Any
) -> None:
    (tmp_path / "unset").mkdir()
    (tmp_path / "written").mkdir()
    unset = world_for(azurite, tmp_path / "unset", receiver)  # version 1, no guard section
    written = world_for(
        azurite, tmp_path / "written", receiver,
        extra="guard: {max_deprovisions: 40, max_deprovision_share: 0.3, min_changes_for_share: 8}",
    )  # fmt: skip

    async def start(world: World) -> list[str]:
        caplog.clear()
        await bootstrap.init(world.settings).aclose()  # the composition root, as function_app starts it
        return [r.getMessage() for r in caplog.records if r.name == "entra_sync.bootstrap"]

    try:
        with caplog.at_level(logging.WARNING, logger="entra_sync.bootstrap"):
            warned = asyncio.run(start(unset))
            quiet = asyncio.run(start(written))
    finally:
        unset.stop()
        written.stop()
    assert len(warned) == 1
    assert "auth0: live leavers are held for approval past 100 deprovisions in 60 minutes" in warned[0]
    assert "past 20% of the managed accounts once 10 are counted" in warned[0]
    assert "this version 1 mapping file does not set them" in warned[0]
    assert "guard.max_deprovisions, max_deprovision_share and min_changes_for_share" in warned[0]
    assert quiet == []
