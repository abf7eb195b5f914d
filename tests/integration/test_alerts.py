"""Alerts reach the operators' webhook (NOTIFY_WEBHOOK_URL) once and the audit, through the real
composition root against the sandbox receiver: a reconciliation that fails, a work item moved to
the poison queue, leavers held by the mass-change guard. (A reconciliation held by the circuit
breaker: tests/integration/test_reconcile.)"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from sandbox.azurite import Azurite
from sandbox.receiver import WebhookReceiver
from sandbox.server import FaultRule
from shared.cli import main
from shared.core.work import user_item
from shared.errors import TransientError
from shared.services.report import parse_json
from shared.settings import Secret
from tests.integration.world import World, audit_rows, drain, run_worker, services_for


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, receiver: WebhookReceiver) -> Iterator[World]:
    w = World(azurite, tmp_path).start()
    w.settings = dataclasses.replace(w.settings, notify_webhook_url=Secret(receiver.url()))
    try:
        yield w
    finally:
        w.stop()


def test_a_reconciliation_that_fails_leaves_a_run_record_a_report_an_audit_row_and_one_alert(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    world.graph.faults.configure([FaultRule("users.list", kind="error", status=403)])  # consent was withdrawn

    async def scenario() -> Any:
        async with services_for(world) as svc:
            with pytest.raises(Exception, match="403"):
                await indexed["reconcile"].get_user_function()(TimerRequest(past_due=False))
            runs = await svc.reconcilers["auth0"].history()
            summary, records = parse_json(await svc.reports.load(runs[0].run_id, "json"))
            page = await svc.reports.load(runs[0].run_id, "html")
            return runs, summary, records, page, await audit_rows(svc)

    runs, summary, records, page, rows = asyncio.run(scenario())
    assert [(r.status, r.mode) for r in runs] == [("failed", "apply")]
    assert "403" in runs[0].error
    assert summary.status == "failed" and records == []
    assert b"This run failed" in page and b"403" in page
    audited = [r for r in rows if r["action"] == "reconcile_apply"]
    assert len(audited) == 1 and audited[0]["outcome"] == "failed" and "403" in audited[0]["error"]
    texts = receiver.texts()
    assert len(texts) == 1
    assert f"reconciliation {runs[0].run_id} (apply) failed" in texts[0] and "403" in texts[0]
    assert [(r["action"], r["outcome"]) for r in rows if r["identity"] == "alerts"] == [("alert", "ok")]


def test_a_targets_share_given_up_on_alerts_once_however_often_its_last_attempt_runs(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    user = world.member_user()
    world.auth0.faults.configure([FaultRule("mgmt.users.get", kind="error", status=503)])
    last = dataclasses.replace(user_item(user["id"], "notification"), target="auth0", attempt=4)

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            for _ in range(2):  # the host may run a message twice (a completion that was lost)
                await run_worker(indexed, last)
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    texts = receiver.texts()
    assert len(texts) == 1
    assert f"gave up on auth0 for {user['id']} after 5 attempts" in texts[0]
    assert "sync-lane-poison" in texts[0] and "503" in texts[0]  # a notification's share: the lane's
    alert_rows = [(r["action"], r["outcome"]) for r in rows if r["identity"] == "alerts"]
    assert alert_rows == [("alert", "ok"), ("alert", "skipped")]


def test_a_message_the_host_gives_up_on_alerts_before_it_moves_to_the_poison_queue(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    user = world.member_user()
    world.graph.faults.configure([FaultRule("users.get", kind="drop")])  # Entra cannot be read at all

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            with pytest.raises(TransientError):
                await run_worker(indexed, user_item(user["id"], "notification"), dequeue_count=5)
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    texts = receiver.texts()
    assert len(texts) == 1 and f"gave up on the user work item for {user['id']} after 5 attempts" in texts[0]
    assert [(r["action"], r["outcome"]) for r in rows if r["identity"] == user["id"]] == [("sync", "poisoned")]


def test_leavers_held_by_the_guard_alert_at_once_naming_how_many_and_the_command_that_releases_them(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any], receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    world = World(azurite, tmp_path, mapping_extra="guard: {max_deprovisions: 2}").start()
    world.settings = dataclasses.replace(world.settings, notify_webhook_url=Secret(receiver.url()))
    members = [u["id"] for u in world.graph.snapshot(full=True)["dump"]["users"]
               if u["userType"] == "Member" and u["accountEnabled"]][:5]  # fmt: skip

    async def leave() -> tuple[list[str], list[dict[str, Any]]]:
        async with services_for(world) as svc:
            for entra_id in members:
                await run_worker(indexed, user_item(entra_id, "notification"))
            at_trip: list[str] = []
            for n, entra_id in enumerate(members, 1):  # the third leaver trips the guard; the next two join
                world.graph.update_user(entra_id, accountEnabled=False)
                await run_worker(indexed, user_item(entra_id, "notification"))
                at_trip = receiver.texts() if n == 3 else at_trip
            assert len(at_trip) == 1 and "1 leaver is held" in at_trip[0]  # at once, when the first was held
            return receiver.texts(), await svc.job().guard.held_episodes()

    async def released() -> list[bool]:
        async with services_for(world, keep_storage=True) as svc:
            await drain(indexed, svc)
            return [bool((world.account(e) or {}).get("blocked")) for e in members]

    try:
        texts, episodes = asyncio.run(leave())
        blocked_while_held = [bool((world.account(e) or {}).get("blocked")) for e in members]
        command = re.search(r"run: (entra-sync approve \S+)$", texts[0])
        assert command is not None
        for name, value in world.environment().items():
            monkeypatch.setenv(name, value)
        assert main(shlex.split(command.group(1))[1:]) == 0  # the alert's command, as an operator runs it
        blocked_after = asyncio.run(released())
    finally:
        world.stop()
    assert len(texts) == 1  # one alert for the episode, however many join it
    assert "mass change held for auth0: 3 accounts would be blocked or deleted within 60 minutes" in texts[0]
    assert "every later leaver of auth0 is held too" in texts[0] and "still active in auth0" in texts[0]
    assert [(e["subject"], e["held"]) for e in episodes] == [("deprovision", 3)]  # what status will show
    assert command.group(1) == f"entra-sync approve {episodes[0]['episode']}"
    assert blocked_while_held == [True, True, False, False, False]
    assert blocked_after == [True] * 5
