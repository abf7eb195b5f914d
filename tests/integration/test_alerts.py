"""Alerts reach the operators' webhook (NOTIFY_WEBHOOK_URL) once and the audit, through the real
composition root against the sandbox receiver: a reconciliation that fails, a work item moved to
the poison queue. (A reconciliation held by the circuit breaker: tests/integration/test_reconcile.)"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from sandbox.azurite import Azurite
from sandbox.receiver import WebhookReceiver
from sandbox.server import FaultRule
from shared.core.work import user_item
from shared.errors import TransientError
from shared.services.report import parse_json
from shared.settings import Secret
from tests.integration.world import World, audit_rows, run_worker, services_for


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
