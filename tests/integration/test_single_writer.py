"""One writer per identity: a worker slowed past its lease's lifetime never has the last word.

Worker B is the function app (the indexed ``sync_worker`` on the composition root); worker A is a
second instance whose Auth0 requests pass through a transport that holds one request back (a slow
Auth0) and whose lease renewals never run (a starved process). Time is a fake clock both share.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth0.management.client import AsyncAuth0

from sandbox.azurite import Azurite
from shared import bootstrap
from shared.bootstrap import App
from shared.core.work import user_item
from shared.stores.leases import LEASE_TTL_S
from tests.integration.world import World, audit_rows, run_worker, services_for
from tests.support import FakeClock, PausedClock


class HoldOne(httpx.AsyncBaseTransport):
    """Holds back the first request with ``method`` whose path contains ``marker`` until released."""

    def __init__(self, method: str, marker: str):
        self.inner = httpx.AsyncHTTPTransport()
        self.method, self.marker = method, marker
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.armed = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.armed and request.method == self.method and self.marker in request.url.path:
            self.armed = False
            self.held.set()
            await self.release.wait()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=12, groups=4).start()
    try:
        yield w
    finally:
        w.stop()


def slow_worker(world: World, svc: App, transport: HoldOne, clock: FakeClock) -> tuple[App, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=transport, timeout=20.0)
    auth0 = AsyncAuth0(base_url=world.auth0.base_url, token=world.auth0.static_token, max_retries=0, httpx_client=http)
    return bootstrap.build(svc.settings, svc.mapping, clients={"auth0": auth0}, clock=PausedClock(clock)), http


def name_of(world: World, entra_id: str) -> Any:
    account = world.account(entra_id)
    assert account is not None
    return account["name"]


def test_a_write_held_up_past_the_lease_is_converged_again_so_the_newest_state_lands_last(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    clock = FakeClock()

    async def scenario() -> tuple[Any, list[dict[str, Any]]]:
        async with services_for(world, clock=clock) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.graph.update_user(user["id"], displayName="Second Name")
            transport = HoldOne("PATCH", user["id"])
            slow, http = slow_worker(world, svc, transport, clock)
            item = user_item(user["id"], "notification")
            a = asyncio.create_task(slow.worker.sync_user(item))
            await asyncio.wait_for(transport.held.wait(), 10)  # A's update to "Second Name" is on its way
            clock.advance(LEASE_TTL_S + 1)  # A is starved past its lease's lifetime
            world.graph.update_user(user["id"], displayName="Third Name")
            await run_worker(indexed, user_item(user["id"], "notification"))  # B takes over and converges
            assert name_of(world, user["id"]) == "Third Name"
            transport.release.set()  # A's write lands late, on top of B's
            outcome = await a
            assert outcome.status == "deferred"  # A noticed after the write and re-scheduled the identity
            assert "lapsed while a write was under way" in outcome.warnings[0]
            await http.aclose()
            await slow.aclose()
            # The re-scheduled share, as the wait sends it again after a lapsed lease: marked to read
            # the account (the link remembers B's write, not A's late one).
            await run_worker(indexed, dataclasses.replace(item, target="auth0", deferrals=1, reread=True))
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    assert name_of(world, user["id"]) == "Third Name"
    actions = [(r["action"], r["outcome"]) for r in rows]
    assert ("lease_lost", "refused") in actions
    assert ("deferred", "deferred") in actions
    assert world.auth0.snapshot()["users"] == 1


def test_a_worker_that_lost_its_lease_before_writing_sends_nothing(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    clock = FakeClock()

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world, clock=clock) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.graph.update_user(user["id"], displayName="Second Name")
            transport = HoldOne("GET", user["id"])  # A has read Entra; its read of the account hangs
            slow, http = slow_worker(world, svc, transport, clock)
            # A reconciliation's repair reads the account (a notification plans from the link).
            a = asyncio.create_task(slow.worker.sync_user(user_item(user["id"], "reconcile")))
            await asyncio.wait_for(transport.held.wait(), 10)
            clock.advance(LEASE_TTL_S + 1)
            world.graph.update_user(user["id"], displayName="Third Name")
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.auth0.log.clear()
            transport.release.set()
            outcome = await a
            assert outcome.status == "deferred" and "the write was not sent" in outcome.warnings[0]
            await http.aclose()
            await slow.aclose()
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    assert world.auth0_writes() == {}  # A planned "Second Name" and sent nothing
    assert name_of(world, user["id"]) == "Third Name"
    lost = [r for r in rows if r["action"] == "lease_lost"]
    assert len(lost) == 1 and "not sent" in lost[0]["detail"]
