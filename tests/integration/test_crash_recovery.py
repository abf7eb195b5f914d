"""Write-ahead intent: a worker process killed between a target write and its audit row leaves a
trace, and the redelivery finishes the job and records what the killed attempt did."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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


def kill_after_the_block(world: World, item_json: str) -> int:
    """Start a worker process on ``item_json`` and SIGKILL it once Auth0 has answered its block."""
    env = {**os.environ, **world.env, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.crash_child", item_json],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + KILL_WITHIN_S
    try:
        while not blocked(world):
            if child.poll() is not None:
                raise AssertionError(f"the worker ended before the block: {child.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError("the worker did not block the account in time")
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
    # The revocation after the block answers slowly, so the process is surely killed in between.
    world.auth0.faults.configure([FaultRule("mgmt.users.sessions.delete", kind="delay", delay_s=2.0, count=1)])
    assert kill_after_the_block(world, item.to_json()) == -signal.SIGKILL
    account = world.account(user["id"])
    assert account is not None and account["blocked"] is True  # the killed attempt's write landed
    world.auth0.faults.configure([])

    clock = FakeClock()
    clock.advance(LEASE_TTL_S + 1)  # the killed worker's lease has lapsed by the time the host redelivers

    async def redelivered() -> tuple[Any, list[dict[str, Any]]]:
        async with services_for(world, keep_storage=True, clock=clock) as svc:
            before = await audit_rows(svc)
            assert not [r for r in before if r["action"] == "block"]  # the killed attempt recorded nothing
            await run_worker(indexed, item)  # the host redelivers the same message
            return await svc.job().links.get(user["id"]), await audit_rows(svc)

    link, rows = asyncio.run(redelivered())
    by_action = {r["action"]: r for r in rows if r["correlation_id"] == item.correlation_id}
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

    async def replay() -> list[dict[str, Any]]:
        async with services_for(world, keep_storage=True, clock=clock) as svc:
            await run_worker(indexed, item)
            return await audit_rows(svc)

    again = asyncio.run(replay())
    assert world.auth0_writes() == {}
    assert len([r for r in again if r["action"] == "block"]) == 1
