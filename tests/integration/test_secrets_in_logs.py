"""No secret reaches a log record, from any logger at any level (the SDKs' included), or an audit row.

Everything runs through the indexed functions and the real composition root against the sandbox:
a notification through the webhook and the worker (to Auth0 and to a SCIM application), a risk
response that notifies the security webhook, a nightly reconciliation and a backfill, with the root
logger at DEBUG.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from sandbox.azurite import Azurite
from sandbox.mapping import scim_section
from sandbox.receiver import WebhookReceiver
from sandbox.scim import ScimApp
from shared.settings import Secret
from tests.integration.world import World, audit_rows, http_request, queued, run_worker, services_for
from tests.support import CLIENT_STATE

SUB_USERS = "11111111-aaaa-4bbb-8ccc-000000000001"
HOOK = "T0SECRET-B0SECRET-xoxb-webhook-path-5f1e"  # an incoming-webhook URL's path is its secret
RISK_SECRET = "risk-alert-secret-0123456789abcdef0123456789"
SCIM_TOKEN = "scim-bearer-token-5b9d0c7e1f2a"


class Capture(logging.Handler):
    """Every record, formatted the way a log sink would show it (traceback included)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def everything_logged() -> Iterator[Capture]:
    capture = Capture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(previous)


def test_no_secret_reaches_any_log_record_or_audit_row(
    azurite: Azurite,
    tmp_path: Path,
    indexed: dict[str, Any],
    receiver: WebhookReceiver,
    everything_logged: Capture,
) -> None:
    scim = ScimApp(token=SCIM_TOKEN).start()
    section = scim_section(scim.base_url, [("GROUP0", "Staff"), ("GROUP1", "Sales")])
    world = World(
        azurite, tmp_path, users=12, groups=4, other_targets=section, extra_env={"SCIM_CRM_TOKEN": SCIM_TOKEN}
    ).start()
    world.settings = dataclasses.replace(
        world.settings, notify_webhook_url=Secret(receiver.url(HOOK)), risk_alert_secret=Secret(RISK_SECRET)
    )
    user = world.member_user()
    settings = world.settings
    assert settings.graph_token is not None and settings.auth0 is not None and settings.auth0.token is not None
    assert settings.storage.connection_string is not None
    account_key = settings.storage.connection_string.reveal().split("AccountKey=")[1].split(";")[0]
    secrets = {
        "clientState": CLIENT_STATE,
        "Graph token": settings.graph_token.reveal(),
        "Auth0 token": settings.auth0.token.reveal(),
        "webhook URL path": HOOK,
        "risk secret": RISK_SECRET,
        "storage account key": account_key,
        "SCIM bearer token": SCIM_TOKEN,
    }

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await svc.state.put("subscription", "users", {"id": SUB_USERS, "resource": "users"})
            note = {
                "subscriptionId": SUB_USERS,
                "changeType": "updated",
                "resource": f"Users/{user['id']}",
                "resourceData": {"id": user["id"]},
                "clientState": CLIENT_STATE,
            }
            answer = await indexed["graph_webhook"].get_user_function()(http_request({"value": [note]}))
            assert answer.status_code == 202
            for item in await queued(svc):
                await run_worker(indexed, item)
            world.graph.raise_risk(user["id"], level="high", event_type="unfamiliarFeatures")
            await indexed["risk_monitor"].get_user_function()(TimerRequest(past_due=False))
            for item in await queued(svc):
                await run_worker(indexed, item)
            await indexed["reconcile"].get_user_function()(TimerRequest(past_due=False))
            await svc.delta.backfill()
            return await audit_rows(svc)

    try:
        rows = asyncio.run(scenario())
    finally:
        world.stop()
        scim.stop()

    assert len(receiver.messages()) == 1  # the risk response did reach the security webhook
    assert scim.users(), "the SCIM target was written to (its token was sent)"
    logged = "\n".join(everything_logged.lines)
    assert "HTTP Request: POST" in logged  # the SDKs' own request logging was captured
    audited = "\n".join(str(row) for row in rows)
    for what, value in secrets.items():
        assert value not in logged, f"the {what} reached a log record"
        assert value not in audited, f"the {what} reached an audit row"
