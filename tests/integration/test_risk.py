"""Risky sign-in response through the indexed functions (risk_monitor, risk_alert, sync_worker),
with the SDKs against the Graph and Auth0 emulators, Azurite, and a loopback webhook receiver."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from sandbox.azurite import Azurite
from sandbox.receiver import WebhookReceiver
from sandbox.server import FaultRule, RateLimit
from shared import names
from shared.core.model import DeprovisionState
from shared.core.work import WorkItem, user_item
from shared.errors import TransientError
from shared.services.notify import Notifier
from shared.settings import Secret
from tests.integration.world import World, audit_rows, drain, queued, run_worker, services_for

SECRET = "risk-alert-secret-0123456789abcdef0123456789"
IP_ROUTES = "identityProtection.*"


def make_world(azurite: Azurite, tmp_path: Path, receiver: WebhookReceiver | None, risk: str = "") -> World:
    w = World(azurite, tmp_path, mapping_extra=risk).start()
    # Identity Protection as Graph enforces it: one request per second per tenant, no Retry-After.
    w.graph.limits.configure({IP_ROUTES: RateLimit(burst=1, per_second=1.0, retry_after=False)})
    w.settings = dataclasses.replace(
        w.settings,
        notify_webhook_url=Secret(receiver.url()) if receiver is not None else None,
        risk_alert_secret=Secret(SECRET),
    )
    return w


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, receiver: WebhookReceiver) -> Iterator[World]:
    w = make_world(azurite, tmp_path, receiver)
    try:
        yield w
    finally:
        w.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def poll(indexed: dict[str, Any]) -> None:
    await indexed["risk_monitor"].get_user_function()(TimerRequest(past_due=False))


async def respond(indexed: dict[str, Any], svc: Any, dequeue_count: int = 1) -> list[WorkItem]:
    """Run the worker on every queued risk item; return them."""
    items = await queued(svc)
    for item in items:
        await run_worker(indexed, item, dequeue_count)
    return items


async def synced(indexed: dict[str, Any], user_id: str) -> None:
    await run_worker(indexed, user_item(user_id, "notification"))


def ip_requests(world: World) -> list[Any]:
    return [e for e in world.graph.log.entries() if e.route.startswith("identityProtection.")]


def alert_request(body: Any, secret: str | None = SECRET, raw: bytes | None = None) -> func.HttpRequest:
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["x-risk-alert-secret"] = secret
    data = raw if raw is not None else json.dumps(body).encode()
    return func.HttpRequest(method="POST", url="/api/risk_alert", headers=headers, params={}, body=data)


# ------------------------------------------------------------------------------------------------
# Polling and acting
# ------------------------------------------------------------------------------------------------


def test_a_high_risk_detection_blocks_and_revokes_within_one_poll_and_tells_the_team_once(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    user = world.member_user()
    uid = f"auth0|{user['id']}"

    async def scenario() -> Any:
        async with services_for(world) as svc:
            await synced(indexed, user["id"])
            world.auth0.add_sessions(uid, 3, refresh_tokens=2)
            detection = world.graph.raise_risk(user["id"], level="high", event_type="unfamiliarFeatures")
            world.auth0.log.clear()
            await poll(indexed)
            items = await respond(indexed, svc)
            return detection, items, await svc.job().links.get(user["id"]), await audit_rows(svc)

    detection, items, link, rows = run(scenario())
    assert [(i.kind, i.id, i.risk.ref if i.risk else None) for i in items] == [("risk", user["id"], detection["id"])]
    account = world.account(user["id"])
    assert account is not None and account["blocked"] is True
    assert world.auth0.sessions_of(uid) == {"sessions": 0, "refresh_tokens": 0}
    assert link is not None and link.risk_locked is True
    assert world.auth0_writes() == {
        "mgmt.users.write.update": 1,
        "mgmt.users.sessions.delete": 1,
        "mgmt.users.refresh_tokens.delete": 1,
    }
    [message] = receiver.texts()
    assert message.startswith(f"[entra-sync] HIGH sign-in risk for {user['displayName']}")
    assert "unfamiliarFeatures" in message and detection["id"] in message and "203.0.113.7" in message
    assert "Done: blocked the Auth0 account; revoked all sessions; revoked all refresh tokens" in message
    assert "Could not do" not in message
    assert "sandbox-auth0-token" not in message and "hooks/" not in message
    actions = [(r["action"], r["outcome"]) for r in rows if r["source"] == "risk"]
    assert ("risk_block", "ok") in actions and ("notify", "ok") in actions


def test_replays_and_overlapping_windows_act_once(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    user = world.member_user()

    async def scenario() -> Any:
        async with services_for(world) as svc:
            await synced(indexed, user["id"])
            world.graph.raise_risk(user["id"], level="high")
            world.auth0.log.clear()
            await poll(indexed)
            first = await queued(svc, take=False)
            await poll(indexed)  # the same detection is inside the overlap window again
            items = await queued(svc)
            for item in items:
                await run_worker(indexed, item)
                await run_worker(indexed, item)  # a redelivered message
            alert = {"id": items[0].risk.ref, "userId": user["id"], "riskLevel": "high", "riskEventType": "x"}
            await indexed["risk_alert"].get_user_function()(alert_request(alert))  # pushed as well
            await respond(indexed, svc)
            return first, items, await audit_rows(svc)

    first, items, rows = run(scenario())
    assert len(first) == 1 and len(items) == 1
    assert world.auth0_writes() == {
        "mgmt.users.write.update": 1,
        "mgmt.users.sessions.delete": 1,
        "mgmt.users.refresh_tokens.delete": 1,
    }
    assert len(receiver.texts()) == 1
    assert sum(1 for r in rows if r["action"] == "risk_replay") == 2


def test_medium_revokes_sessions_and_requires_mfa_and_low_only_notifies(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    medium, low = world.member_user(), world.member_user(skip=1)

    async def scenario() -> None:
        async with services_for(world) as svc:
            await synced(indexed, medium["id"])
            await synced(indexed, low["id"])
            world.auth0.add_sessions(f"auth0|{medium['id']}", 2, refresh_tokens=1)
            world.graph.raise_risk(medium["id"], level="medium", event_type="anonymizedIPAddress")
            world.graph.raise_risk(low["id"], level="low", event_type="unlikelyTravel")
            world.auth0.log.clear()
            await poll(indexed)
            await respond(indexed, svc)

    run(scenario())
    account = world.account(medium["id"])
    assert account is not None
    assert account["blocked"] is False
    assert account["app_metadata"]["require_mfa"] is True
    assert world.auth0.sessions_of(f"auth0|{medium['id']}") == {"sessions": 0, "refresh_tokens": 1}
    low_account = world.account(low["id"])
    assert low_account is not None and low_account["blocked"] is False
    assert "require_mfa" not in low_account.get("app_metadata", {})
    assert world.auth0_writes() == {"mgmt.users.write.update": 1, "mgmt.users.sessions.delete": 1}
    texts = sorted(receiver.texts())
    assert len(texts) == 2
    low_text = next(t for t in texts if "LOW" in t)
    medium_text = next(t for t in texts if "MEDIUM" in t)
    assert "Done: nothing in Auth0" in low_text
    assert "revoked all sessions; set app_metadata.require_mfa = true" in medium_text


def test_no_match_and_ambiguous_users_are_notified_not_guessed_at(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    lonely, twin = world.member_user(), world.member_user(skip=1)
    for n in (1, 2):
        world.auth0.add_user(
            {"user_id": f"dup-{n}", "email": f"dup{n}@x.example", "app_metadata": {"entra_object_id": twin["id"]}}
        )

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            world.graph.raise_risk(lonely["id"], level="high")
            world.graph.raise_risk(twin["id"], level="high")
            world.auth0.log.clear()
            await poll(indexed)
            await respond(indexed, svc)
            return await audit_rows(svc)

    rows = run(scenario())
    assert world.auth0_writes() == {}
    assert not (world.auth0.get_user("auth0|dup-1") or {}).get("blocked")
    texts = receiver.texts()
    assert len(texts) == 2
    assert any(lonely["displayName"] in t and "no Auth0 account is linked to or matches" in t for t in texts)
    assert any(twin["displayName"] in t and "not guessing" in t and "auth0|dup-1, auth0|dup-2" in t for t in texts)
    refused = [r for r in rows if r["action"] == "risk_response"]
    assert sorted(r["outcome"] for r in refused) == ["refused", "refused"]


def test_revocation_refused_by_the_plan_still_blocks_and_the_message_says_so(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    user = world.member_user()
    world.auth0.set_plan("free")
    world.auth0.limits.configure({})

    async def scenario() -> None:
        async with services_for(world) as svc:
            await synced(indexed, user["id"])
            world.graph.raise_risk(user["id"], level="high")
            await poll(indexed)
            await respond(indexed, svc)

    run(scenario())
    account = world.account(user["id"])
    assert account is not None and account["blocked"] is True
    [message] = receiver.texts()
    assert "Done: blocked the Auth0 account" in message
    assert "Could not do: could not revoke sessions: Auth0 refused (403" in message
    assert "could not revoke refresh tokens" in message


def test_the_first_send_failing_still_ends_in_exactly_one_message(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    user = world.member_user()
    receiver.faults.configure([FaultRule("webhook.post", status=500, count=1)])

    async def scenario() -> Any:
        async with services_for(world) as svc:
            await synced(indexed, user["id"])
            world.graph.raise_risk(user["id"], level="high")
            await poll(indexed)
            [item] = await queued(svc)
            world.auth0.log.clear()
            with pytest.raises(TransientError, match="answered 500"):
                await run_worker(indexed, item)  # acted, but the message did not go out: retried
            await run_worker(indexed, item, dequeue_count=2)
            await run_worker(indexed, item, dequeue_count=3)  # and a stray redelivery
            notifier: Notifier = svc.notifier
            return await notifier.state_of(f"{user['id']}:detection:{item.risk.ref}")

    state = run(scenario())
    assert len(receiver.texts()) == 1
    assert [e.status for e in receiver.log.entries()] == [500, 200]
    assert world.auth0_writes() == {  # the retries did not act again
        "mgmt.users.write.update": 1,
        "mgmt.users.sessions.delete": 1,
        "mgmt.users.refresh_tokens.delete": 1,
    }
    assert state == "sent"


def test_a_crash_between_claim_and_record_is_taken_over_once_the_claim_is_stale(
    world: World, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> list[str]:
        async with services_for(world) as svc:
            notifier = Notifier(svc.table(names.STATE_TABLE), Secret(receiver.url()))
            try:
                await notifier.table.create_entity(
                    {"PartitionKey": "notify", "RowKey": "k1", "incident": "k1", "state": "sending", "claimed": 0.0}
                )  # an attempt that crashed long ago, after claiming
                await notifier.table.create_entity(
                    {"PartitionKey": "notify", "RowKey": "k2", "incident": "k2", "state": "sending",
                     "claimed": 9e12}
                )  # fmt: skip  # an attempt still sending
                first = (await notifier.send_once("k1", "taken over")).status
                again = (await notifier.send_once("k1", "taken over")).status
                with pytest.raises(TransientError, match="another attempt is sending"):
                    await notifier.send_once("k2", "busy")
                return [first, again]
            finally:
                await notifier.close()

    assert run(scenario()) == ["sent", "already_sent"]
    assert receiver.texts() == ["taken over"]


def test_without_a_webhook_the_failed_notification_is_audited(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any]
) -> None:
    world = make_world(azurite, tmp_path, receiver=None)
    try:
        user = world.member_user()

        async def scenario() -> list[dict[str, Any]]:
            async with services_for(world) as svc:
                await synced(indexed, user["id"])
                world.graph.raise_risk(user["id"], level="high")
                await poll(indexed)
                await respond(indexed, svc)
                return await audit_rows(svc)

        rows = run(scenario())
        account = world.account(user["id"])
        assert account is not None and account["blocked"] is True
        [notify] = [r for r in rows if r["action"] == "notify"]
        assert notify["outcome"] == "failed"
        assert "NOTIFY_WEBHOOK_URL is not set" in notify["detail"]
    finally:
        world.stop()


# ------------------------------------------------------------------------------------------------
# Identity Protection's limit
# ------------------------------------------------------------------------------------------------


def test_requests_are_paced_one_per_second_pages_included(azurite: Azurite, tmp_path: Path, indexed: dict[str, Any],
                                                          receiver: WebhookReceiver) -> None:  # fmt: skip
    world = make_world(azurite, tmp_path, receiver, risk="risk: {restore_on: [dismissed]}")
    try:
        users = [u["id"] for u in world.graph.snapshot(full=True)["dump"]["users"]]
        for n in range(130):  # two pages of detections (100 a page)
            world.graph.raise_risk(users[n % len(users)], level="low")

        async def scenario() -> Any:
            async with services_for(world) as svc:
                await poll(indexed)
                return svc.risk_monitor.feed.calls, len(await queued(svc))

        calls, enqueued = run(scenario())
        requests = ip_requests(world)
        assert calls == {"identityProtection.riskDetections": 2, "identityProtection.riskyUsers": 1}
        assert [r.status for r in requests] == [200, 200, 200]  # the 1 rps bucket never said 429
        gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
        assert all(gap >= 1.0 for gap in gaps), gaps
        assert enqueued == 130
    finally:
        world.stop()


def test_a_429_ends_the_run_without_hammering_and_the_next_run_catches_up(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    user = world.member_user()
    world.graph.faults.configure([FaultRule("identityProtection.riskDetections.list", status=429, count=1)])

    async def scenario() -> Any:
        async with services_for(world) as svc:
            await synced(indexed, user["id"])
            world.graph.raise_risk(user["id"], level="high")
            await poll(indexed)
            after_429 = (
                len(ip_requests(world)),
                await queued(svc, take=False),
                await svc.state.get("risk", "detections"),
            )
            await poll(indexed)
            await respond(indexed, svc)
            return after_429, await audit_rows(svc)

    (requests, items, watermark), rows = run(scenario())
    assert requests == 1  # no SDK retry, no second request in that run
    assert items == [] and watermark is None
    assert any(r["action"] == "risk_poll" and "throttled" in r["detail"] for r in rows)
    account = world.account(user["id"])
    assert account is not None and account["blocked"] is True
    assert len(receiver.texts()) == 1


# ------------------------------------------------------------------------------------------------
# The push endpoint
# ------------------------------------------------------------------------------------------------


def test_the_push_endpoint_refuses_and_audits_unauthenticated_and_malformed_alerts(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    good = {"id": "det-1", "userId": user["id"], "riskLevel": "high", "riskEventType": "maliciousIPAddress"}
    alert = indexed["risk_alert"].get_user_function()

    async def scenario() -> Any:
        async with services_for(world) as svc:
            answers = [
                (await alert(alert_request(good, secret=None))).status_code,
                (await alert(alert_request(good, secret=SECRET[:-1] + "x"))).status_code,
                (await alert(alert_request({**good, "userId": "not-a-guid"}))).status_code,
                (await alert(alert_request({**good, "riskLevel": "severe"}))).status_code,
                (await alert(alert_request(None, raw=b"{not json"))).status_code,
            ]
            refused_queue = await queued(svc, take=False)
            answers.append((await alert(alert_request(good))).status_code)
            items = await queued(svc, take=False)
            return answers, refused_queue, items, await audit_rows(svc)

    answers, refused_queue, items, rows = run(scenario())
    assert answers == [401, 401, 400, 400, 400, 202]
    assert refused_queue == []
    [item] = items
    assert (item.kind, item.id, item.risk.ref, item.risk.level) == ("risk", user["id"], "det-1", "high")
    refusals = [r for r in rows if r["action"] == "refuse_risk_alert"]
    assert [r["outcome"] for r in refusals] == ["refused"] * 5
    assert "missing x-risk-alert-secret" in refusals[0]["detail"]
    assert all(SECRET not in r["detail"] and SECRET[:-1] not in r["detail"] for r in refusals)


def test_the_push_endpoint_fails_closed_without_a_secret_and_an_accepted_alert_is_acted_on(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    user = world.member_user()
    good = {"id": "det-9", "userId": user["id"], "riskLevel": "high", "riskEventType": "leakedCredentials"}
    alert = indexed["risk_alert"].get_user_function()
    configured = world.settings

    async def scenario() -> Any:
        world.settings = dataclasses.replace(configured, risk_alert_secret=None)
        async with services_for(world) as svc:
            closed = (await alert(alert_request(good))).status_code
            detail = [r["detail"] for r in await audit_rows(svc)]
        world.settings = configured
        async with services_for(world) as svc:
            await synced(indexed, user["id"])
            accepted = (await alert(alert_request(good))).status_code
            await drain(indexed, svc)
        return closed, detail, accepted

    closed, detail, accepted = run(scenario())
    assert closed == 401
    assert detail == ["RISK_ALERT_SECRET is not set: the endpoint refuses every call"]
    assert accepted == 202
    account = world.account(user["id"])
    assert account is not None and account["blocked"] is True
    [message] = receiver.texts()
    assert "leakedCredentials" in message and "det-9" in message


async def refused_alerts(world: World, indexed: dict[str, Any], requests: list[func.HttpRequest]) -> Any:
    """Send each request; return the answers, what was queued and the refusal details."""
    alert = indexed["risk_alert"].get_user_function()
    async with services_for(world) as svc:
        answers = [(await alert(request)).status_code for request in requests]
        rows = await audit_rows(svc)
        return answers, await queued(svc, take=False), [r["detail"] for r in rows if r["action"] == "refuse_risk_alert"]


def test_the_push_endpoint_refuses_ids_with_a_trailing_newline(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    good = {"id": "det-2", "userId": user["id"], "riskLevel": "high", "riskEventType": "maliciousIPAddress"}
    requests = [
        alert_request({**good, "userId": user["id"] + "\n"}),
        alert_request({**good, "id": "det-2\n"}),
        alert_request({**good, "riskEventType": "maliciousIPAddress\n"}),
    ]
    answers, items, details = run(refused_alerts(world, indexed, requests))
    assert answers == [400] * 3
    assert items == []
    assert details == [
        "userId must be the Entra object id (a GUID)",
        "risk ref must be a detection id or timestamp (letters, digits, . _ : + -)",
        "riskEventType must be a short identifier such as unfamiliarFeatures",
    ]


def test_the_push_endpoint_answers_json_it_cannot_parse_with_a_400_and_audits_it(
    world: World, indexed: dict[str, Any]
) -> None:
    requests = [
        alert_request(None, raw=b"[" * 5_000 + b"]" * 5_000),
        alert_request(None, raw=b'{"id": ' + b"9" * 5000 + b"}"),
    ]
    answers, items, details = run(refused_alerts(world, indexed, requests))
    assert answers == [400, 400]
    assert items == []
    assert details[0] == "body is nested too deeply"
    assert details[1].startswith("body is not valid JSON")


def test_every_push_endpoint_answer_carries_nosniff(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    good = {"id": "det-3", "userId": user["id"], "riskLevel": "high", "riskEventType": "maliciousIPAddress"}
    alert = indexed["risk_alert"].get_user_function()
    requests = {
        401: alert_request(good, secret=None),
        400: alert_request({**good, "userId": "not-a-guid"}),
        413: alert_request(None, raw=b" " * (16 * 1024 + 1)),
        202: alert_request(good),
    }

    async def scenario() -> dict[int, Any]:
        async with services_for(world):
            return {status: await alert(request) for status, request in requests.items()}

    answers = run(scenario())
    assert {status: a.status_code for status, a in answers.items()} == {status: status for status in requests}
    assert {status: a.headers.get("X-Content-Type-Options") for status, a in answers.items()} == dict.fromkeys(
        requests, "nosniff"
    )


# ------------------------------------------------------------------------------------------------
# Restore, and the sync leaving a risk lock alone
# ------------------------------------------------------------------------------------------------

RESTORING = """risk:
  rules:
    - {level: high, actions: [block, revoke_sessions, require_mfa, notify]}
  restore_on: [dismissed]
"""


def test_restore_on_lifts_only_what_the_response_did(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    world = make_world(azurite, tmp_path, receiver, risk=RESTORING)
    try:
        ours, admins = world.member_user(), world.member_user(skip=1)

        async def scenario() -> Any:
            async with services_for(world) as svc:
                await synced(indexed, ours["id"])
                await synced(indexed, admins["id"])
                # An admin had already blocked this account and required MFA: not the response's doing.
                world.auth0.add_sessions(f"auth0|{admins['id']}", 1)
                await svc.job().target.update(
                    f"auth0|{admins['id']}", {"blocked": True, "app_metadata": {"require_mfa": True}}
                )
                world.graph.raise_risk(ours["id"], level="high")
                world.graph.raise_risk(admins["id"], level="high")
                await poll(indexed)
                await respond(indexed, svc)
                during = (world.account(ours["id"]), await svc.job().links.get(ours["id"]))
                world.graph.set_user_risk_state([ours["id"], admins["id"]], "dismissed")
                await poll(indexed)
                await respond(indexed, svc)
                await poll(indexed)  # the dismissal again, inside the overlap: nothing more
                replayed = await queued(svc)
                return during, replayed, await svc.job().links.get(ours["id"]), await svc.job().links.get(admins["id"])

        (during_account, during_link), replayed, link, admins_link = run(scenario())
        assert during_account["blocked"] is True and during_account["app_metadata"]["require_mfa"] is True
        assert during_link.risk_locked is True
        assert replayed == []
        restored = world.account(ours["id"])
        assert restored is not None
        assert restored["blocked"] is False
        assert "require_mfa" not in restored["app_metadata"]
        assert link is not None and link.risk_locked is False
        untouched = world.account(admins["id"])
        assert untouched is not None
        assert untouched["blocked"] is True  # the admin's block stays
        assert untouched["app_metadata"]["require_mfa"] is True  # and so does the admin's flag
        assert admins_link is not None and admins_link.risk_locked is False
        lifted = [t for t in receiver.texts() if "Risk response lifted" in t]
        assert len(lifted) == 2
        assert any("unblocked the Auth0 account" in t and ours["displayName"] in t for t in lifted)
        assert any("left the existing block in place" in t and admins["displayName"] in t for t in lifted)
    finally:
        world.stop()


def test_a_later_sync_does_not_unblock_a_risk_locked_account(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    user = world.member_user()

    async def scenario() -> Any:
        async with services_for(world) as svc:
            await synced(indexed, user["id"])
            world.graph.update_user(user["id"], accountEnabled=False)
            await synced(indexed, user["id"])  # leaver: blocked by sync (the planner may lift this block)
            world.graph.raise_risk(user["id"], level="high")
            await poll(indexed)
            await respond(indexed, svc)
            world.graph.update_user(user["id"], accountEnabled=True)
            await synced(indexed, user["id"])  # re-enabled: without the risk lock this would unblock
            return await svc.job().links.get(user["id"])

    link = run(scenario())
    account = world.account(user["id"])
    assert account is not None and account["blocked"] is True
    assert link is not None and link.risk_locked is True and link.deprovision is DeprovisionState.NONE
