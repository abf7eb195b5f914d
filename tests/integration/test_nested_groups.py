"""Membership of a group nested inside a mapped group counts in seconds, like direct membership:
its changes reach the worker from the group's notification, and nesting changes keep the set of
watched groups current."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from shared.core.work import WorkItem
from tests.integration.world import World, drain, run_worker, services_for

SUB_GROUPS = "11111111-aaaa-4bbb-8ccc-000000000002"
SALES = ["Sales Reader", "Sales Writer"]


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path).start()
    try:
        yield w
    finally:
        w.stop()


def group_notification(group_id: str) -> WorkItem:
    return WorkItem("group", group_id, "notification", SUB_GROUPS)


def sales_roles(world: World, entra_id: str) -> list[str]:
    return sorted(r for r in world.auth0.user_role_names(f"auth0|{entra_id}") if r in SALES)


def test_joining_and_leaving_a_group_nested_in_a_mapped_group_changes_roles_from_its_notification(
    world: World, indexed: dict[str, Any]
) -> None:
    sales = world.group_ids[1]  # the mapping grants the Sales roles to its members, nested ones included
    team = world.graph.create_group(displayName="Sales EMEA")["id"]  # not named in the mapping
    world.graph.add_member(sales, team)
    ada = world.member_user()

    async def scenario() -> tuple[list[str], list[str]]:
        async with services_for(world) as svc:
            await run_worker(indexed, WorkItem("user", ada["id"], "notification"))
            await run_worker(indexed, WorkItem("delta", "all", "delta", "timer"))  # the first catch-up
            await drain(indexed, svc)
            assert sales_roles(world, ada["id"]) == []
            world.graph.add_member(team, ada["id"])
            await run_worker(indexed, group_notification(team))
            await drain(indexed, svc)
            joined = sales_roles(world, ada["id"])
            world.graph.remove_member(team, ada["id"])
            await run_worker(indexed, group_notification(team))
            await drain(indexed, svc)
            return joined, sales_roles(world, ada["id"])

    joined, left = asyncio.run(scenario())
    assert joined == SALES
    assert left == []


def test_a_group_newly_nested_in_a_mapped_group_is_watched_from_then_on(world: World, indexed: dict[str, Any]) -> None:
    sales = world.group_ids[1]
    ada, bob = world.member_user(), world.member_user(skip=1)
    team = world.graph.create_group(displayName="Sales APAC")["id"]
    world.graph.add_member(team, ada["id"])

    async def scenario() -> tuple[list[str], list[str]]:
        async with services_for(world) as svc:
            for user in (ada, bob):
                await run_worker(indexed, WorkItem("user", user["id"], "notification"))
            await run_worker(indexed, WorkItem("delta", "all", "delta", "timer"))
            await drain(indexed, svc)
            world.graph.add_member(sales, team)  # the nesting change itself arrives on the mapped group
            await run_worker(indexed, group_notification(sales))
            await drain(indexed, svc)
            nested = sales_roles(world, ada["id"])
            world.graph.add_member(team, bob["id"])  # and the nested group's own changes count now
            await run_worker(indexed, group_notification(team))
            await drain(indexed, svc)
            return nested, sales_roles(world, bob["id"])

    nested, joined = asyncio.run(scenario())
    assert nested == SALES
    assert joined == SALES
