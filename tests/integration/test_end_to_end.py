"""End to end: Entra change -> Graph notification -> graph_webhook -> queue -> sync_worker -> Auth0,
with the Graph emulator delivering real notifications to the functions served by the host stand-in."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.azurite import Azurite
from sandbox.host import FunctionsHost
from shared import bootstrap, names
from shared.core.work import user_item
from tests.integration.world import World, audit_rows, open_services, waiting
from tests.support import CLIENT_STATE, sandbox_env


@pytest.fixture
def running(azurite: Azurite, tmp_path: Path, indexed: dict[str, Any]) -> Iterator[tuple[World, FunctionsHost]]:
    world = World(azurite, tmp_path, users=30, groups=6).start()

    async def wipe() -> None:  # before the host polls: earlier tests may have left work items behind
        await (await open_services(world)).aclose()

    asyncio.run(wipe())
    host = FunctionsHost.from_functions(
        indexed.values(),
        storage_connection=azurite.connection_string,
        visibility_timeout_s=0.2,
        app_settings=sandbox_env(storage=azurite.connection_string),
        on_stop=lambda: bootstrap.app().aclose(),
    )
    host.start()
    try:
        world.configure(host.base_url)
        # Fresh services for this world, built lazily on the host's event loop.
        host.run_coroutine(bootstrap.init(world.settings).ensure_storage())
        yield world, host
    finally:
        host.stop()
        world.stop()


def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"not reached within {timeout_s} s")


def test_subscriptions_are_created_through_the_real_handshake_and_changes_flow_to_auth0(
    running: tuple[World, FunctionsHost],
) -> None:
    world, host = running
    host.run_timer("subscriptions_renew")
    subs = world.graph.snapshot(full=True)["dump"]["subscriptions"]
    assert sorted(s["resource"] for s in subs) == ["groups", "users"]
    assert all(s["notificationUrl"] == f"{host.base_url}/graph_webhook" for s in subs)

    hire = world.graph.create_user(
        displayName="Grace Hopper", givenName="Grace", surname="Hopper", mail="Grace.Hopper@sandbox.example",
        userPrincipalName="grace.hopper@sandbox.onmicrosoft.com", department="Research", accountEnabled=True,
    )  # fmt: skip
    world.graph.add_member(world.group_ids[1], hire["id"])
    account = eventually(lambda: world.account(hire["id"]))
    assert account["email"] == "grace.hopper@sandbox.example"
    eventually(lambda: set(world.auth0.user_role_names(account["user_id"])) == {"Sales Reader", "Sales Writer"})

    world.graph.update_user(hire["id"], accountEnabled=False)
    eventually(lambda: (world.account(hire["id"]) or {}).get("blocked") is True)
    stats = host.stats()
    assert stats["graph_webhook"]["failed"] == 0
    assert stats["graph_webhook"]["invocations"] >= 2
    assert stats["sync_lane"]["failed"] == 0
    assert stats["sync_lane"]["invocations"] >= 2  # notifications are the lane's work


def test_a_leaver_is_locked_out_while_a_backfill_still_waits_on_the_bulk_queue(
    running: tuple[World, FunctionsHost],
) -> None:
    world, host = running
    host.run_timer("subscriptions_renew")
    leaver = world.member_user()
    svc = bootstrap.app()
    host.run_coroutine(svc.queue.send([user_item(leaver["id"], "notification")]))  # it has an account
    assert eventually(lambda: world.account(leaver["id"]))
    # Bulk work of distinct identities (none waits for another's lease, so none is re-scheduled):
    # ids Entra does not know, each still read and judged by the worker.
    backfill = [user_item(str(uuid.uuid4()), "backfill") for _ in range(400)]
    host.run_coroutine(svc.queue.send(backfill))

    def locked_out() -> bool:
        writes = world.auth0_writes()
        revoked = writes.get("mgmt.users.sessions.delete") == writes.get("mgmt.users.refresh_tokens.delete") == 1
        return revoked and (world.account(leaver["id"]) or {}).get("blocked") is True

    world.graph.update_user(leaver["id"], accountEnabled=False)  # the notification goes to the lane
    eventually(locked_out, timeout_s=30)
    still_queued = host.run_coroutine(waiting(svc, names.WORK_QUEUE))
    # Locked out while most of the bulk work sent before it still waits (behind it: about none).
    assert still_queued >= len(backfill) // 2


def test_duplicate_deliveries_make_one_account(running: tuple[World, FunctionsHost]) -> None:
    world, host = running
    host.run_timer("subscriptions_renew")
    user = world.member_user()
    sub = next(s for s in world.graph.snapshot(full=True)["dump"]["subscriptions"] if s["resource"] == "users")
    body = {
        "value": [
            {
                "subscriptionId": sub["id"], "clientState": CLIENT_STATE, "changeType": "updated",
                "resource": f"Users/{user['id']}", "resourceData": {"id": user["id"]},
            }
        ]
    }  # fmt: skip
    with httpx.Client() as client:
        answers = [client.post(f"{host.base_url}/graph_webhook", json=body).status_code for _ in range(5)]
    assert answers == [202] * 5
    assert host.wait_idle(15)
    assert world.auth0.snapshot()["users"] == 1
    assert world.auth0_writes()["mgmt.users.write.create"] == 1


def test_reauthorization_repairs_dropped_notifications_through_a_delta_catch_up(
    running: tuple[World, FunctionsHost],
) -> None:
    world, host = running
    host.run_timer("subscriptions_renew")
    user = world.member_user()
    world.graph.configure_notifications(drop_rate=1.0)  # every change notification is lost
    world.graph.add_member(world.group_ids[1], user["id"])
    world.graph.update_user(user["id"], department="Dropped Notifications Dept")
    assert world.graph.wait_notifications(5)
    assert host.wait_idle(5)
    assert world.account(user["id"]) is None

    world.graph.configure_notifications(drop_rate=0.0)
    assert world.graph.emit_reauthorization_required() == 2
    account = eventually(lambda: world.account(user["id"]))
    assert account["user_metadata"]["department"] == "Dropped Notifications Dept"
    assert host.wait_idle(15)
    rows = host.run_coroutine(audit_rows(bootstrap.app()))
    assert any(r["action"] == "delta_catch_up" for r in rows)


def test_with_a_tenth_of_notifications_dropped_one_delta_run_converges_everything(
    running: tuple[World, FunctionsHost],
) -> None:
    world, host = running
    host.run_timer("subscriptions_renew")
    users = [u for u in world.graph.snapshot(full=True)["dump"]["users"] if u["accountEnabled"]]
    users = [u for u in users if u.get("userType") == "Member"][:25]
    world.graph.configure_notifications(drop_rate=0.1)
    for step in ("Plan", "Draft", "Reorg"):  # three changes each: 75 notifications
        for n, user in enumerate(users):
            world.graph.update_user(user["id"], department=f"{step} {n}")
    assert world.graph.wait_notifications(10)
    assert host.wait_idle(30)
    dropped = world.graph.snapshot()["notifications"].get("dropped", 0)
    assert dropped > 0  # the seeded drop rate really lost some

    host.run_timer("delta_sync")  # one delta interval later
    assert host.wait_idle(30)
    for n, user in enumerate(users):
        account = world.account(user["id"])
        assert account is not None
        assert account["user_metadata"]["department"] == f"Reorg {n}"
