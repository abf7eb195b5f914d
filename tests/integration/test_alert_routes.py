"""Alerts and the event feed through the composition root and the indexed functions: a mapping
with an ``alerts:`` section routes a poisoned share to a Teams Workflows webhook as an Adaptive
Card (valid against the card schema) and nothing to NOTIFY_WEBHOOK_URL; the ``alerts_outbox``
timer publishes the feed of what the worker did."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from sandbox.azurite import Azurite
from sandbox.event_sink import DEFAULT_KEY, EventSink
from sandbox.receiver import WebhookReceiver
from sandbox.server import FaultRule
from shared.alerting.feed import LAG_S
from shared.core.work import user_item
from tests.alerting.test_cards import ADAPTIVE, errors
from tests.integration.world import World, run_worker, services_for
from tests.support import FakeClock

KEY = DEFAULT_KEY
ALERTS = """alerts:
  channels:
    it-ops: {kind: teams, url_setting: ALERTS_TEAMS_URL}
  routes:
    - {kinds: [poison, failed_run], channels: [it-ops]}
  events: {url_setting: EVENTS_URL, secret_setting: EVENTS_SIGNING_KEY}
"""


@pytest.fixture
def teams() -> Iterator[WebhookReceiver]:
    """A second webhook receiver: the Teams Workflows endpoint (``receiver`` is NOTIFY_WEBHOOK_URL)."""
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture
def world(
    azurite: Azurite, tmp_path: Path, teams: WebhookReceiver, receiver: WebhookReceiver, event_sink: EventSink
) -> Iterator[World]:
    env = {"ALERTS_TEAMS_URL": teams.url("workflow"), "NOTIFY_WEBHOOK_URL": receiver.url(),
           "EVENTS_URL": event_sink.url(), "EVENTS_SIGNING_KEY": KEY}  # fmt: skip
    w = World(azurite, tmp_path, other_targets="", mapping_extra=ALERTS, extra_env=env).start()
    try:
        yield w
    finally:
        w.stop()


def test_a_poisoned_share_reaches_the_teams_route_as_a_card_and_not_the_default_webhook(
    world: World, indexed: dict[str, Any], teams: WebhookReceiver, receiver: WebhookReceiver
) -> None:
    user = world.member_user()
    world.auth0.faults.configure([FaultRule("mgmt.users.get", kind="error", status=503)])
    last = dataclasses.replace(user_item(user["id"], "notification"), target="auth0", attempt=4)

    async def scenario() -> None:
        async with services_for(world):
            for _ in range(2):  # the host may run a message twice
                await run_worker(indexed, last)

    asyncio.run(scenario())
    (card,) = teams.messages()
    assert errors(ADAPTIVE, card.body) == []
    assert card.text.startswith(f"gave up on auth0 for {user['id']} after 5 attempts")
    facts = card.body["attachments"][0]["content"]["body"][1]["facts"]
    assert facts[:2] == [{"title": "Event", "value": "poison"}, {"title": "Severity", "value": "high"}]
    assert receiver.messages() == []  # the route took it: the default webhook is for what no route takes


def test_the_alerts_outbox_timer_publishes_what_the_worker_did(
    world: World, indexed: dict[str, Any], event_sink: EventSink
) -> None:
    user = world.member_user()
    clock = FakeClock(start=time.time())

    async def scenario() -> None:
        async with services_for(world, clock=clock):
            await run_worker(indexed, user_item(user["id"], "notification"))
            clock.advance(LAG_S + 120)
            for _ in range(2):  # a second run sends nothing again
                await indexed["alerts_outbox"].get_user_function()(TimerRequest(past_due=False))

    asyncio.run(scenario())
    events = event_sink.events()
    assert events and len(events) == len(event_sink.unique())
    assert {(e["subject"], e["type"]) for e in events} >= {(user["id"], "com.entra-sync.account.created")}
