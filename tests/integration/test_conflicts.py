"""A value the target refuses as taken by another account (an email collision on update) is a
conflict for that field alone: the other changes land, the conflict is audited once, nothing is
retried or poisoned, and a later change of the value is tried again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from shared.core.work import user_item
from tests.integration.world import World, audit_rows, run_worker, services_for


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path).start()
    try:
        yield w
    finally:
        w.stop()


def test_an_email_taken_by_another_account_withholds_only_the_email_and_is_audited_once(
    world: World, indexed: dict[str, Any]
) -> None:
    ada, bob = world.member_user(), world.member_user(skip=1)

    async def scenario() -> tuple[Any, list[dict[str, Any]], dict[str, int], list[Any]]:
        async with services_for(world, reports=False) as svc:
            for user in (ada, bob):
                await run_worker(indexed, user_item(user["id"], "notification"))
            taken = (world.account(ada["id"]) or {})["email"]
            world.graph.update_user(bob["id"], mail=taken, department="Research", jobTitle="Lead Researcher")
            await run_worker(indexed, user_item(bob["id"], "notification"), dequeue_count=5)  # the last attempt
            first = await svc.job().links.get(bob["id"])
            world.auth0.log.clear()
            for source in ("notification", "delta", "reconcile"):  # later notifications and repairs
                await run_worker(indexed, user_item(bob["id"], source), dequeue_count=5)
            replay_writes = world.auth0_writes()
            _, records = await svc.reconcilers["auth0"].run("dry-run")
            return first, await audit_rows(svc), replay_writes, [r for r in records if r.entra_id == bob["id"]]

    link, rows, replay_writes, reported = asyncio.run(scenario())
    account = world.account(bob["id"])
    assert account is not None
    assert account["email"] == bob["mail"].lower()  # kept: the new one belongs to Ada's account
    assert account["user_metadata"]["department"] == "Research"  # the other changes landed
    assert account["user_metadata"]["job_title"] == "Lead Researcher"
    taken = (world.account(ada["id"]) or {})["email"]
    assert link.conflicts == {"email": taken}
    conflicts = [r for r in rows if r["action"] == "conflict"]
    assert len(conflicts) == 1 and conflicts[0]["outcome"] == "conflict"
    assert "another account already has it" in conflicts[0]["detail"]
    update = next(r for r in rows if r["action"] == "update" and r["identity"] == bob["id"])
    assert "department" in update["diff"] and '"email"' not in update["diff"]
    assert not [r for r in rows if r["outcome"] in {"poisoned", "failed"}]
    assert replay_writes == {}  # the refused value is not sent again
    # Reconciliation reports it as a conflict for a person to settle, not as drift to repair.
    assert [(r.drift, r.details) for r in reported] == [
        ("conflict", {"fields": {"email": [bob["mail"].lower(), taken]}})
    ]


def test_a_conflicted_email_is_tried_again_once_it_changes_in_entra(world: World, indexed: dict[str, Any]) -> None:
    ada, bob = world.member_user(), world.member_user(skip=1)

    async def scenario() -> Any:
        async with services_for(world) as svc:
            for user in (ada, bob):
                await run_worker(indexed, user_item(user["id"], "notification"))
            world.graph.update_user(bob["id"], mail=(world.account(ada["id"]) or {})["email"])
            await run_worker(indexed, user_item(bob["id"], "notification"))
            world.graph.update_user(bob["id"], mail="bob.free@contoso.example")
            await run_worker(indexed, user_item(bob["id"], "notification"))
            return await svc.job().links.get(bob["id"])

    link = asyncio.run(scenario())
    account = world.account(bob["id"])
    assert account is not None and account["email"] == "bob.free@contoso.example"
    assert link.conflicts == {}
