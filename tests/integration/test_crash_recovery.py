"""Write-ahead intent: a worker process killed between a target write and its audit row leaves a
trace, and the redelivery finishes the job and records what the killed attempt did."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.server import FaultRule
from shared.core.model import DeprovisionState
from shared.core.work import user_item
from shared.stores.leases import LEASE_TTL_S
from tests.integration.world import World, audit_rows, run_worker, services_for
from tests.support import REPO, FakeClock

KILL_WITHIN_S = 60.0


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=12, groups=4).start()
    try:
        yield w
    finally:
        w.stop()


def blocked(world: World) -> bool:
    return any(e.route == "mgmt.users.write.update" for e in world.auth0.log.entries())


def kill_after_the_block(world: World, item_json: str, before_settling: Path | None = None) -> int:
    """Start a worker process on ``item_json`` and SIGKILL it once Auth0 has answered its block, or
    with ``before_settling`` (a marker file) once it has done every write and is about to record
    them (see ``crash_child``)."""
    marker = [str(before_settling)] if before_settling is not None else []
    argv = ["-m", "tests.integration.crash_child", item_json, *marker]
    return kill_when(world, argv, lambda: before_settling.exists() if before_settling is not None else blocked(world))


def kill_when(world: World, argv: list[str], reached: Callable[[], bool]) -> int:
    """Start a Python process on ``argv`` with the world's settings and SIGKILL it once ``reached()``;
    its exit status (``-SIGKILL``)."""
    env = {**os.environ, **world.env, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + KILL_WITHIN_S
    try:
        while not reached():
            if child.poll() is not None:
                raise AssertionError(f"the worker ended before the kill: {child.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError("the worker did not reach the kill point in time")
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)  # not an exception: the process is gone, finally blocks and all
        return child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        assert child.stderr is not None
        child.stderr.close()


def test_a_worker_killed_between_the_block_and_its_audit_row_is_finished_and_recorded_by_the_redelivery(
    world: World, indexed: dict[str, Any]
) -> None:
    uid, item = leaver_killed(world, indexed)
    link, by_action, _ = redelivered(world, indexed, item)
    assert by_action["block"]["outcome"] == "recovered"
    assert "stopped before recording it" in by_action["block"]["detail"]
    assert "the target shows it done" in by_action["block"]["detail"]
    assert by_action["start_deprovision"]["outcome"] == "recovered"
    for action in ("revoke_sessions", "revoke_refresh_tokens", "finish_deprovision"):
        assert by_action[action]["outcome"] == "ok"
    assert link.deprovision is DeprovisionState.DONE
    assert world.auth0.sessions_of(uid) == {"sessions": 0, "refresh_tokens": 0}
    # Settled: a further redelivery finds nothing left to recover and writes nothing.
    world.auth0.log.clear()
    _, _, actions = redelivered(world, indexed, item)
    assert world.auth0_writes() == {}
    assert actions.count("block") == 1


def leaver_killed(world: World, indexed: dict[str, Any], before_settling: Path | None = None) -> tuple[str, Any]:
    """A joiner, then its leaver's worker process killed (after the block, or with every write done
    and nothing recorded); returns the Auth0 user id and the leaver's work item."""
    user = world.member_user()
    uid = f"auth0|{user['id']}"
    item = user_item(user["id"], "notification")

    async def joined() -> None:
        async with services_for(world):
            await run_worker(indexed, user_item(user["id"], "notification"))

    asyncio.run(joined())
    world.auth0.add_sessions(uid, 2, refresh_tokens=1)
    world.graph.update_user(user["id"], accountEnabled=False)
    world.auth0.log.clear()
    if before_settling is None:  # the revocation after the block answers slowly: killed in between
        world.auth0.faults.configure([FaultRule("mgmt.users.sessions.delete", kind="delay", delay_s=2.0, count=1)])
    assert kill_after_the_block(world, item.to_json(), before_settling) == -signal.SIGKILL
    world.auth0.faults.configure([])
    account = world.account(user["id"])
    assert account is not None and account["blocked"] is True  # the killed attempt's write landed

    async def recorded() -> list[dict[str, Any]]:
        async with services_for(world, keep_storage=True) as svc:
            return [r for r in await audit_rows(svc) if r["correlation_id"] == item.correlation_id]

    assert asyncio.run(recorded()) == []  # the killed attempt recorded nothing
    return uid, item


def redelivered(world: World, indexed: dict[str, Any], item: Any) -> tuple[Any, dict[str, dict[str, Any]], list[str]]:
    """The host redelivers ``item`` once the killed worker's lease has lapsed: the link, the item's
    audit rows by action (the last of each), and every row's action in order."""
    clock = FakeClock()
    clock.advance(LEASE_TTL_S + 1)

    async def run() -> tuple[Any, list[dict[str, Any]]]:
        async with services_for(world, keep_storage=True, clock=clock) as svc:
            await run_worker(indexed, item)
            return await svc.job().links.get(item.id), await audit_rows(svc)

    link, rows = asyncio.run(run())
    mine = [r for r in rows if r["correlation_id"] == item.correlation_id]
    return link, {r["action"]: r for r in mine}, [r["action"] for r in mine]


def test_revocations_a_killed_worker_sent_are_sent_again_and_recorded_as_sent_not_as_recovered(
    world: World, indexed: dict[str, Any], tmp_path: Path
) -> None:
    """Killed with the deprovision done and nothing recorded: the block shows in Auth0, but nothing
    shows whether the revocations reached it. The redelivery sends them again (they are idempotent)
    and records those sends."""
    uid, item = leaver_killed(world, indexed, before_settling=tmp_path / "paused")
    assert world.auth0.sessions_of(uid) == {"sessions": 0, "refresh_tokens": 0}  # they did land
    world.auth0.log.clear()
    link, by_action, _ = redelivered(world, indexed, item)
    assert by_action["block"]["outcome"] == "recovered"
    assert "the target shows it done" in by_action["block"]["detail"]
    for action in ("revoke_sessions", "revoke_refresh_tokens"):
        assert by_action[action]["outcome"] == "ok"
        assert "sent again" in by_action[action]["detail"]
    assert world.auth0_writes() == {"mgmt.users.sessions.delete": 1, "mgmt.users.refresh_tokens.delete": 1}
    assert link.deprovision is DeprovisionState.DONE


def test_a_revocation_not_sent_again_to_a_returner_is_recorded_as_unconfirmed(
    world: World, indexed: dict[str, Any]
) -> None:
    """Killed after the block, with the sessions revocation on the wire; the user is re-enabled in
    Entra before the redelivery. A returner is not signed out again, so what the killed attempt
    sent is recorded as unconfirmed, never as recovered."""
    _, item = leaver_killed(world, indexed)
    world.graph.update_user(item.id, accountEnabled=True)
    link, by_action, _ = redelivered(world, indexed, item)
    for action in ("revoke_sessions", "revoke_refresh_tokens"):
        assert by_action[action]["outcome"] == "unconfirmed"
        assert "cannot be seen" in by_action[action]["detail"]
    assert by_action["unblock"]["outcome"] == "ok"
    assert link.deprovision is DeprovisionState.NONE
    account = world.account(item.id)
    assert account is not None and account["blocked"] is False
