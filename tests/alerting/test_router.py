"""The alert router as the app builds it (shared.alerting.build), with its claims and rate limits in
Table Storage on Azurite, sending to the sandbox's receivers on loopback: a webhook receiver per
channel and the Graph emulator's ``sendMail``. Each route, exactly once under retries, a storm
of 1,000 alerts as one digest, and no channel secret in a log line or an audit row."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.graph.emulator import GraphEmulator
from sandbox.receiver import WebhookReceiver
from sandbox.server import FaultRule
from shared.alerting.alert import Alert
from shared.alerting.build import alert_router
from shared.alerting.router import AlertRouter
from shared.alerting.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from shared.errors import TransientError
from shared.mapping.load import parse_mapping
from shared.redact import install_log_redaction
from shared.services.alerts import Alerts
from shared.services.notify import Notifier
from shared.settings import Settings
from shared.stores.audit import AuditStore
from tests.alerting.test_config import BASE
from tests.contracts.backends import fresh_table
from tests.support import FakeClock, sandbox_env

pytestmark = pytest.mark.azurite

SECTION = """
alerts:
  channels:
    secops: {kind: slack, url_setting: ALERTS_SLACK_URL}
    it-ops: {kind: teams, url_setting: ALERTS_TEAMS_URL}
    hook: {kind: webhook, url_setting: ALERTS_HOOK_URL, secret_setting: ALERTS_HOOK_KEY}
    mail: {kind: email, mailbox: entra-sync@contoso.example, to: [secops@contoso.example]}
  routes:
    - {kinds: [risk], min_severity: medium, channels: [secops, mail]}
    - {kinds: [poison, failed_run], channels: [it-ops, hook]}
  digest: {window_minutes: 10, burst: 2}
"""
HOOK_KEY = "hook-signing-key-0123456789abcdef"


@dataclass
class Sandbox:
    slack: WebhookReceiver
    teams: WebhookReceiver
    hook: WebhookReceiver
    legacy: WebhookReceiver
    graph: GraphEmulator

    def env(self, azurite: Azurite) -> dict[str, str]:
        return sandbox_env(
            storage=azurite.connection_string, graph_base_url=self.graph.base_url,
            ALERTS_SLACK_URL=self.slack.url("slack-secret-T000"), ALERTS_TEAMS_URL=self.teams.url("teams-secret-W000"),
            ALERTS_HOOK_URL=self.hook.url("hook-secret-H000"), ALERTS_HOOK_KEY=HOOK_KEY,
            NOTIFY_WEBHOOK_URL=self.legacy.url("legacy-secret-L000"),
        )  # fmt: skip


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    started: list[Any] = [WebhookReceiver().start() for _ in range(4)]
    started.append(GraphEmulator().start())
    try:
        yield Sandbox(*started)
    finally:
        for server in started:
            server.stop()


@asynccontextmanager
async def routed(
    azurite: Azurite, sandbox: Sandbox, section: str = SECTION, clock: FakeClock | None = None
) -> AsyncIterator[tuple[AlertRouter, Alerts, AuditStore]]:
    settings = Settings.from_env(sandbox.env(azurite))
    mapping = parse_mapping(BASE + section)
    async with fresh_table(azurite) as table:
        notifier = Notifier(table, settings.notify_webhook_url)
        made: list[Any] = []

        def client(name: str, make: Any) -> Any:
            made.append(make())
            return made[-1]

        router = alert_router(settings, mapping.alerts, notifier, client, clock=clock or FakeClock())
        audit = AuditStore(table)
        try:
            yield router, Alerts(router, audit), audit
        finally:
            await notifier.close()


def risk(level: str, n: int = 1) -> Alert:
    key = f"u{n}:detection:d{n}"
    title = f"{level.upper()} sign-in risk for u{n}"
    return Alert(
        key=key, kind="risk", severity=level, title=title, text="blocked in auth0", identity=f"u{n}", legacy_key=key
    )


def test_each_route_takes_its_kinds_at_its_severity_and_the_rest_go_to_notify_webhook_url(
    azurite: Azurite, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with routed(azurite, sandbox) as (router, alerts, _):
            assert (await router.deliver(risk("high"))).status == "sent"
            assert (await router.deliver(risk("low", 2))).status == "sent"  # below the route: the default one
            assert (
                await alerts.send("poison:m1", "gave up on u3 in auth0 after 5 attempts. It is in the queue") == "sent"
            )
            assert await alerts.send("guard:e1", "mass change held in auth0") == "sent"  # no route takes held

    asyncio.run(scenario())
    assert [m.hook for m in sandbox.slack.messages()] == ["slack-secret-T000"]
    assert sandbox.slack.texts() == ["[entra-sync] HIGH sign-in risk for u1"]
    mail = sandbox.graph.outbox.listed()
    assert [(m["mailbox"], m["to"], m["subject"]) for m in mail] == [
        ("entra-sync@contoso.example", ["secops@contoso.example"], "[entra-sync] [high] HIGH sign-in risk for u1")
    ]
    assert sandbox.teams.texts() == ["gave up on u3 in auth0 after 5 attempts"]
    assert [m.body["key"] for m in sandbox.hook.messages()] == ["poison:m1"]
    assert sandbox.legacy.texts() == ["blocked in auth0", "[entra-sync] mass change held in auth0"]


def test_the_generic_webhook_is_signed_with_its_key(azurite: Azurite, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with routed(azurite, sandbox) as (_, alerts, _):
            await alerts.send("reconcile-failed:20261206T020000Z-abc123", "reconciliation failed")

    asyncio.run(scenario())
    (message,) = sandbox.hook.messages()
    headers = {k.lower(): v for k, v in message.headers.items()}
    signature, timestamp = headers[SIGNATURE_HEADER.lower()], headers[TIMESTAMP_HEADER.lower()]
    assert verify(HOOK_KEY.encode(), timestamp, message.raw, signature)
    assert not verify(b"another key", timestamp, message.raw, signature)
    assert message.body["run_id"] == "20261206T020000Z-abc123" and message.body["kind"] == "failed_run"


def test_each_channel_gets_an_alert_once_however_often_it_is_retried(azurite: Azurite, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with routed(azurite, sandbox) as (router, alerts, audit):
            sandbox.teams.faults.configure([FaultRule("webhook.post", kind="error", status=503)])
            alert = Alert(key="poison:m9", kind="poison", severity="high", title="gave up on u9", text="gave up on u9")
            with pytest.raises(TransientError, match="it-ops channel answered 503"):
                await router.deliver(alert)
            sandbox.teams.faults.configure([])
            assert (await router.deliver(alert)).status == "sent"  # the teams channel's turn
            assert (await router.deliver(alert)).status == "already_sent"
            assert await alerts.send("poison:m9", "said again") == "already_sent"
            rows = await audit.for_identity("alerts")
            assert [r["outcome"] for r in rows] == ["skipped"]

    asyncio.run(scenario())
    assert len(sandbox.hook.messages()) == 1  # the webhook took it the first time and never again
    assert sandbox.teams.texts() == ["gave up on u9"]


def test_a_storm_of_a_thousand_alerts_is_the_burst_and_one_digest(azurite: Azurite, sandbox: Sandbox) -> None:
    clock = FakeClock(start=1_800_000_000.0)  # a window boundary: 10-minute windows start on multiples of 600

    async def scenario() -> None:
        async with routed(azurite, sandbox, clock=clock) as (router, alerts, audit):
            statuses = [await alerts.send(f"poison:m{i}", f"gave up on u{i} after 5 attempts") for i in range(1000)]
            assert statuses.count("sent") == 2 and statuses.count("digested") == 998
            assert await router.flush() == 0  # the window has not ended: nothing yet
            clock.advance(600)
            assert await router.flush() == 1
            assert await router.flush() == 0  # sent once
            rate_rows = "PartitionKey ge 'alerts-' and PartitionKey lt 'alerts.'"  # the windows and digest items
            assert len([e async for e in router.table.query_entities(rate_rows)]) == 1001
            clock.advance(7 * 600)  # the window's rows are dropped once it is long past
            assert await router.flush() == 0
            assert [e async for e in router.table.query_entities(rate_rows)] == []
            assert len([r for r in await audit.for_identity("alerts") if r["outcome"] == "ok"]) == 1000

    asyncio.run(scenario())
    assert len(sandbox.teams.messages()) == 3 and len(sandbox.hook.messages()) == 3
    digest = sandbox.hook.messages()[-1].body
    assert digest["title"] == "Digest: 998 alerts in 10 minutes"
    assert {"name": "By kind", "value": "poison 998"} in digest["facts"]
    assert "gave up on u2 after 5 attempts" in digest["text"] and "and 978 more" in digest["text"]
    assert sandbox.teams.texts()[-1] == "Digest: 998 alerts in 10 minutes"


def test_email_goes_only_from_the_mailbox_the_access_policy_allows(azurite: Azurite, sandbox: Sandbox) -> None:
    sandbox.graph.outbox.allowed = frozenset({"someone-else@contoso.example"})

    async def scenario() -> None:
        async with routed(azurite, sandbox) as (router, _, _):
            with pytest.raises(TransientError, match=r"mail channel \(Graph sendMail\) answered 403"):
                await router.deliver(risk("medium"))
            sandbox.graph.outbox.allowed = frozenset({"entra-sync@contoso.example"})
            assert (await router.deliver(risk("medium"))).status == "sent"

    asyncio.run(scenario())
    assert len(sandbox.graph.outbox.listed()) == 1 and len(sandbox.slack.messages()) == 1


def test_no_channel_secret_reaches_a_log_line_or_an_audit_row(
    azurite: Azurite, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    install_log_redaction()  # as the app does at start-up (bootstrap.init)
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request line at DEBUG
    for receiver in (sandbox.teams, sandbox.hook, sandbox.legacy):
        receiver.faults.configure([FaultRule("webhook.post", kind="error", status=500)])

    async def scenario() -> list[dict[str, Any]]:
        async with routed(azurite, sandbox) as (_, alerts, audit):
            await alerts.send("poison:m1", "gave up on u1")
            await alerts.send("guard:e1", "held")
            for receiver in (sandbox.teams, sandbox.hook, sandbox.legacy):
                receiver.faults.configure([])
            await alerts.send("poison:m1", "gave up on u1")
            return await audit.for_identity("alerts")

    rows = asyncio.run(scenario())
    assert [r["outcome"] for r in rows] == ["failed", "failed", "ok"]
    written = caplog.text + repr(rows)
    for secret in ("slack-secret-T000", "teams-secret-W000", "hook-secret-H000", "legacy-secret-L000", HOOK_KEY):
        assert secret not in written
    assert "hooks/" in caplog.text or "503" in caplog.text or "500" in caplog.text  # requests were logged at all
