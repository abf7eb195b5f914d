"""Waiting is not failing: a rate limit whose reset is far off re-schedules the work item for the
reset instead of spending its attempts, so a rate limit never poisons anything."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.server import RateLimit
from shared.core.work import user_item
from tests.integration.world import World, audit_rows, queued, run_worker, services_for, waiting
from tests.support import FakeClock

RESET_S = 900  # Auth0's x-ratelimit-reset is 15 minutes away


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=12, groups=4).start()
    try:
        yield w
    finally:
        w.stop()


def test_a_distant_rate_limit_reset_reschedules_the_item_for_the_reset_without_spending_an_attempt(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()

    async def scenario() -> tuple[list[dict[str, Any]], int, int, int]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.graph.update_user(user["id"], department="Research")
            # One call goes through; the next one is refused until the bucket refills in 15 minutes.
            world.auth0.limits.configure({"mgmt.*": RateLimit(burst=1, per_second=1 / RESET_S)})
            # The host's last attempt (dequeue count 5 of maxDequeueCount 5): it must not poison. A
            # reconciliation's repair reads the account first (the read goes through, the write waits).
            await run_worker(indexed, user_item(user["id"], "reconcile"), dequeue_count=5)
            visible_now = len(await queued(svc))
            return (
                await audit_rows(svc),
                await waiting(svc),
                visible_now,
                await waiting(svc, "poison"),
            )

    rows, scheduled, visible_now, poisoned = asyncio.run(scenario())
    assert scheduled == 1 and visible_now == 0  # the item waits, invisible, on the queue
    assert poisoned == 0
    assert not [r for r in rows if r["outcome"] == "poisoned"]
    deferred = [r for r in rows if r["action"] == "deferred"]
    assert len(deferred) == 1
    seconds = int(re.search(r"runs again in (\d+) s", deferred[0]["detail"]).group(1))  # type: ignore[union-attr]
    assert RESET_S - 5 <= seconds <= RESET_S + 5 + 30  # the reset, plus at most the jitter
    assert "without spending an attempt" in deferred[0]["detail"]
    account = world.account(user["id"])
    assert account is not None and account["user_metadata"]["department"] != "Research"  # nothing half-done


def test_a_share_stopped_at_the_rate_limit_before_writing_keeps_the_links_memory_and_pays_no_read_when_it_runs(
    world: World, indexed: dict[str, Any]
) -> None:
    """The feedback loop it breaks: a deferred share that read Auth0 on its next try spent two more
    calls of the budget it was deferred for lack of."""
    user = world.member_user()
    item = user_item(user["id"], "notification")

    async def deferred() -> tuple[list[dict[str, Any]], Any]:
        async with services_for(world) as svc:
            await run_worker(indexed, item)  # the joiner: linked, its writes remembered
            world.graph.update_user(user["id"], department="Research")
            world.auth0.limits.configure({"mgmt.*": RateLimit(burst=0, per_second=1 / RESET_S)})
            world.auth0.log.clear()
            await run_worker(indexed, item)  # the mover's PATCH is refused: 429, reset in 15 minutes
            return await audit_rows(svc), await svc.job().links.get(user["id"])

    rows, link = asyncio.run(deferred())
    assert [r["action"] for r in rows if r["action"] == "deferred"] == ["deferred"]
    assert set(world.auth0_calls()) == {"mgmt.users.write.update"}  # refused (429), so nothing changed
    assert link is not None and link.applied is not None  # the memory stands: nothing reached Auth0
    world.auth0.limits.configure({})
    clock = FakeClock()
    clock.advance(RESET_S + 5)  # the reset has come: the gate is open again, for every instance
    world.auth0.log.clear()
    retry = dataclasses.replace(item, target="auth0", deferrals=1)  # the share as the queue gives it back

    async def again() -> None:
        async with services_for(world, keep_storage=True, clock=clock):
            await run_worker(indexed, retry)

    asyncio.run(again())
    assert world.auth0_calls() == {"mgmt.users.write.update": 1}  # planned from the memory: its write alone
    account = world.account(user["id"])
    assert account is not None and account["user_metadata"]["department"] == "Research"
