"""The event feed end to end: the worker converges people (real Auth0 emulator writes, audit rows
on Azurite), the feed the app builds from the mapping's ``alerts.events`` publishes them from the
audit trail to a signed endpoint on loopback; at least once with stable ids across passes, failed
deliveries retried with backoff and dead-lettered after the bound, the replay giving the same ids,
and no secret in any event; and the same feed to an Event Grid topic (the sandbox's) through the
Event Grid SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.event_sink import DEFAULT_KEY, TOPIC_KEY, EventGridTopic, EventSink
from sandbox.server import FaultRule
from shared.alerting.build import event_feed
from shared.alerting.feed import LAG_S, EventGridSink, replay
from shared.bootstrap import App
from shared.cli import main
from shared.core.work import WorkItem
from tests.integration.world import World, services_for
from tests.support import FakeClock

KEY = DEFAULT_KEY
ALERTS = "alerts:\n  events: {url_setting: EVENTS_URL, secret_setting: EVENTS_SIGNING_KEY, max_attempts: 2}\n"


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, event_sink: EventSink) -> Iterator[World]:
    env = {"EVENTS_URL": event_sink.url(), "EVENTS_SIGNING_KEY": KEY}
    w = World(azurite, tmp_path, users=12, groups=4, other_targets="", mapping_extra=ALERTS, extra_env=env).start()
    try:
        yield w
    finally:
        w.stop()


def members(world: World) -> list[str]:
    dump = world.graph.snapshot(full=True)["dump"]
    return [u["id"] for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"]


async def converge(svc: App, *ids: str) -> None:
    for n, user_id in enumerate(ids):
        await svc.worker.sync_user(WorkItem("user", user_id, "notification", "sub-1", f"corr-{user_id}"))
        assert n < 50


def test_effective_changes_reach_the_endpoint_signed_once_each_and_the_replay_gives_the_same_ids(
    world: World, event_sink: EventSink
) -> None:
    first, second, third = members(world)[:3]
    clock = FakeClock(start=time.time())

    async def scenario() -> dict[str, Any]:
        async with services_for(world, reports=False) as svc:
            assert svc.events is not None  # built from the mapping: the app's own feed
            feed = event_feed(world.settings, svc.mapping.alerts, svc.audit, svc.state, svc.notifier.http, clock=clock)
            assert feed is not None
            await converge(svc, first, second)
            clock.advance(LAG_S + 120)  # past the rows just written (their times are the real clock's)
            one = await feed.publish()
            again = await feed.publish()
            await converge(svc, third)
            clock.advance(LAG_S + 120)  # past the rows just written (their times are the real clock's)
            two = await feed.publish()
            replayed = [e async for e in replay(svc.audit, "2000-01-01T00:00:00.000Z")]
            return {"one": one, "again": again, "two": two, "replayed": replayed}

    out = asyncio.run(scenario())
    events = event_sink.events()
    assert out["one"].sent > 0 and out["again"].sent == 0 and out["two"].sent > 0
    assert out["two"].skipped == out["one"].sent  # the overlap read them again and sent none twice
    assert len(events) == len(event_sink.unique()) == out["one"].sent + out["two"].sent  # each once
    kinds = {(e["subject"], e["type"]) for e in events}
    for user in (first, second, third):
        assert (user, "com.entra-sync.account.created") in kinds
    created = next(e for e in events if e["subject"] == first and e["type"].endswith("account.created"))
    assert created["specversion"] == "1.0" and created["source"] == "/entra-sync/targets/auth0"
    assert created["correlationid"] == f"corr-{first}"
    assert created["data"]["target"] == "auth0" and created["data"]["source"] == "entra"
    assert created["data"]["target_id"] == f"auth0|{first}" and isinstance(created["data"]["diff"], dict)
    assert [e["id"] for e in out["replayed"]] == [e["id"] for e in events]  # the replay's ids are the feed's
    assert KEY not in json.dumps(events) and event_sink.url() not in json.dumps(events)


def test_a_refused_delivery_is_retried_with_backoff_and_delivered_by_a_later_pass(
    world: World, event_sink: EventSink
) -> None:
    user, later = members(world)[:2]
    clock = FakeClock(start=time.time())

    async def scenario() -> tuple[Any, ...]:
        async with services_for(world, reports=False) as svc:
            feed = event_feed(world.settings, svc.mapping.alerts, svc.audit, svc.state, svc.notifier.http, clock=clock)
            assert feed is not None
            event_sink.faults.configure([FaultRule("events.post", kind="error", status=503)])
            await converge(svc, user)
            clock.advance(LAG_S + 120)  # past the rows just written (their times are the real clock's)
            task = asyncio.create_task(feed.publish())
            while not task.done():  # the backoff sleeps on the test's clock
                await asyncio.sleep(0.01)
                clock.advance(5)
            parked = task.result()
            event_sink.faults.configure([])
            await converge(svc, later)
            clock.advance(LAG_S + 120)  # past the parked events' first wait
            retried = await feed.publish()
            return parked, retried

    parked, retried = asyncio.run(scenario())
    assert parked.parked > 0 and parked.sent == 0
    assert retried.sent > parked.parked and retried.parked == 0  # the parked ones, then the later change's
    assert {e["subject"] for e in event_sink.events()} == {user, later}
    assert len(event_sink.events()) == len(event_sink.unique())


def test_an_event_refused_for_every_attempt_is_dead_lettered_audited_and_alerted(
    world: World, event_sink: EventSink
) -> None:
    user = members(world)[0]
    clock = FakeClock(start=time.time())

    async def scenario() -> tuple[Any, ...]:
        async with services_for(world, reports=False) as svc:
            told: list[str] = []

            async def alert(key: str, message: str) -> str:
                told.append(key)
                return "sent"

            feed = event_feed(world.settings, svc.mapping.alerts, svc.audit, svc.state, svc.notifier.http, clock=clock,
                              alert=alert)  # fmt: skip
            assert feed is not None
            event_sink.faults.configure([FaultRule("events.post", kind="error", status=500)])
            await converge(svc, user)
            passes = []
            for _ in range(3):  # max_attempts is 2: the second pass dead-letters
                clock.advance(LAG_S + 600)
                task = asyncio.create_task(feed.publish())
                while not task.done():
                    await asyncio.sleep(0.01)
                    clock.advance(5)
                passes.append(task.result())
            dead = [r for r in await svc.audit.all() if r["action"] == "event_dead_letter"]
            return passes, dead, told

    passes, dead, told = asyncio.run(scenario())
    assert passes[0].parked > 0 and passes[1].dead == passes[0].parked and passes[2].dead == 0
    assert len(dead) == passes[1].dead and all(r["outcome"] == "failed" for r in dead)
    assert len(told) == len(dead) and all(k.startswith("poison:event:") for k in told)
    assert event_sink.events() == []


def test_the_events_command_replays_the_feed_with_its_ids_and_posts_it_again(
    world: World, event_sink: EventSink, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in world.environment().items():
        monkeypatch.setenv(name, value)
    user = members(world)[0]

    async def scenario() -> list[str]:
        async with services_for(world, reports=False) as svc:
            await converge(svc, user)
            return [e["id"] async for e in replay(svc.audit, "2000-01-01T00:00:00.000Z")]

    ids = asyncio.run(scenario())
    capsys.readouterr()
    assert main(["events", "--since", "2000-01-01T00:00:00Z"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["id"] for e in printed] == ids and ids
    assert {e["subject"] for e in printed} == {user}
    assert main(["events", "--since", "2000-01-01T00:00:00Z", "--post"]) == 0
    assert list(event_sink.unique()) == ids  # delivered again, signed (the sink checks), with the same ids


GRID = (
    "alerts:\n  events: {kind: event_grid, url_setting: EVENTS_TOPIC_URL, secret_setting: EVENTS_TOPIC_KEY,"
    " max_attempts: 2}\n"
)


def test_an_event_grid_topic_gets_each_event_once_through_the_sdk_with_its_key_and_a_wrong_key_is_parked(
    azurite: Azurite, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The app's feed with ``kind: event_grid`` publishes through the Event Grid SDK to the sandbox's
    topic (api-version, key header, CloudEvents batch: the topic refuses anything else); a wrong key
    is a 401 that parks the event, and the key reaches no log, at any level."""
    with EventGridTopic() as topic:
        env = {"EVENTS_TOPIC_URL": topic.url(), "EVENTS_TOPIC_KEY": TOPIC_KEY}
        world = World(azurite, tmp_path, users=8, groups=4, other_targets="", mapping_extra=GRID, extra_env=env)
        world.start()
        try:
            first, second = members(world)[:2]
            clock = FakeClock(start=time.time())

            async def scenario() -> tuple[Any, ...]:
                async with services_for(world, reports=False) as svc:
                    assert isinstance(svc.events.sink if svc.events else None, EventGridSink)  # the app's own
                    feed = event_feed(world.settings, svc.mapping.alerts, svc.audit, svc.state, svc.notifier.http,
                                      clock=clock)  # fmt: skip
                    assert feed is not None
                    try:
                        await converge(svc, first)
                        clock.advance(LAG_S + 120)
                        one = await feed.publish()
                        again = await feed.publish()
                        topic.key = "the-topic-key-was-rotated"  # the app still has the old one
                        await converge(svc, second)
                        clock.advance(LAG_S + 120)
                        task = asyncio.create_task(feed.publish())
                        while not task.done():  # the backoff sleeps on the test's clock
                            await asyncio.sleep(0.01)
                            clock.advance(5)
                        return one, again, task.result()
                    finally:
                        await feed.sink.close()  # type: ignore[attr-defined]

            with caplog.at_level(logging.DEBUG):
                one, again, refused = asyncio.run(scenario())
        finally:
            world.stop()
        events = topic.events()
    assert one.sent > 0 and again.sent == 0 and topic.posts() == one.sent  # one event a post, each once
    assert {e["subject"] for e in events} == {first}
    assert all(e["specversion"] == "1.0" and e["type"].startswith("com.entra-sync.") for e in events)
    assert refused.parked > 0 and refused.sent == 0
    assert TOPIC_KEY not in caplog.text and TOPIC_KEY not in json.dumps(events)
