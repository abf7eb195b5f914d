"""The Alerts contract: what the reconciler, the guard and the dispatcher rely on when they tell the
operators. One message per incident key however often it is raised, a status that says what
happened, never an exception, and an audit row (identity ``alerts``) for each attempt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import pytest

from shared.core.ports import Alerts, AuditStore
from tests.contracts.backends import run


@dataclass
class Operators:
    alerts: Alerts
    audit: AuditStore
    delivered: Callable[[], list[str]]  # the texts the webhook got, in order
    webhook_down: Callable[[], None]
    webhook_up: Callable[[], None]


Opener = Callable[..., AbstractAsyncContextManager[Operators]]  # configured: bool = True


def alert_rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["source_ref"], r["action"], r["outcome"]) for r in rows]


class AlertsContract:
    """What the reconciler, the guard and the dispatcher rely on from every Alerts.

    A subclass gives the alerts it checks as the ``operators`` fixture: an opener taking
    ``configured`` (whether a webhook is set, default true) of alerts over a new, empty audit store,
    with the hooks that read and switch off and on what the operators' webhook receives.
    """

    @pytest.fixture
    def operators(self) -> Opener:
        raise NotImplementedError("an AlertsContract subclass opens its alerts in an `operators` fixture")

    def test_an_alert_reaches_the_operators_once_per_key(self, operators: Opener) -> None:
        async def body(o: Operators) -> None:
            assert await o.alerts.send("reconcile:r1", "reconciliation r1 (apply) failed") == "sent"
            assert await o.alerts.send("reconcile:r1", "reconciliation r1 (apply) failed") == "already_sent"
            assert await o.alerts.send("poison:u1", "gave up on u1") == "sent"
            assert await o.alerts.send("reconcile:r1", "said differently, the same incident") == "already_sent"
            assert o.delivered() == ["[entra-sync] reconciliation r1 (apply) failed", "[entra-sync] gave up on u1"]
            assert alert_rows(await o.audit.for_identity("alerts")) == [
                ("reconcile:r1", "alert", "ok"),
                ("reconcile:r1", "alert", "skipped"),
                ("poison:u1", "alert", "ok"),
                ("reconcile:r1", "alert", "skipped"),
            ]

        run(operators, body)

    def test_each_alert_is_audited_with_its_message_source_and_correlation(self, operators: Opener) -> None:
        async def body(o: Operators) -> None:
            await o.alerts.send("guard:e1", "mass change held in auth0", source="guard", correlation_id="run-9")
            await o.alerts.send("poison:u2", "gave up on u2")
            first, second = await o.audit.for_identity("alerts")
            assert (first["source"], first["correlation_id"]) == ("guard", "run-9")
            assert first["detail"] == "mass change held in auth0"
            assert (first["identity"], first["target"], first["target_id"], first["error"]) == ("alerts", "", "", "")
            assert (second["source"], second["correlation_id"]) == ("alert", "poison:u2")  # the key, when none given

        run(operators, body)

    def test_without_a_webhook_every_alert_says_not_configured_and_is_audited_as_failed(
        self, operators: Opener
    ) -> None:
        async def body(o: Operators) -> None:
            assert await o.alerts.send("poison:u1", "gave up on u1") == "not_configured"
            assert await o.alerts.send("poison:u1", "gave up on u1") == "not_configured"
            assert o.delivered() == []
            rows = await o.audit.for_identity("alerts")
            assert alert_rows(rows) == [("poison:u1", "alert", "failed")] * 2
            assert all("NOTIFY_WEBHOOK_URL" in r["error"] for r in rows)

        run(functools.partial(operators, configured=False), body)

    def test_an_alert_the_webhook_refused_says_failed_and_its_next_attempt_sends_it(self, operators: Opener) -> None:
        async def body(o: Operators) -> None:
            o.webhook_down()
            assert await o.alerts.send("reconcile:r2", "reconciliation r2 (apply) failed") == "failed"  # never raises
            o.webhook_up()
            assert await o.alerts.send("reconcile:r2", "reconciliation r2 (apply) failed") == "sent"
            assert await o.alerts.send("reconcile:r2", "reconciliation r2 (apply) failed") == "already_sent"
            assert o.delivered() == ["[entra-sync] reconciliation r2 (apply) failed"]
            rows = await o.audit.for_identity("alerts")
            assert [r["outcome"] for r in rows] == ["failed", "ok", "skipped"]
            assert "500" in rows[0]["error"]

        run(operators, body)
