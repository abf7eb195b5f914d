"""Which audit rows are events and what each says (pure), and the Event Grid form of a delivery
(to the sandbox's Event Grid topic on loopback)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sandbox.event_sink import API_VERSION, TOPIC_KEY, EventGridTopic
from shared.alerting.feed import EventGridSink, event_id, to_event
from shared.errors import TransientError
from shared.settings import Secret


def row(action: str, outcome: str = "ok", **extra: Any) -> dict[str, Any]:
    at = "2026-12-06T07:00:00.000Z"
    return {"PartitionKey": "u1", "RowKey": f"{at}_000000000001_abcd", "at": at,
            "identity": "u1", "identity_source": "entra", "target": "scim:crm", "target_id": "42", "action": action,
            "outcome": outcome, "correlation_id": "c1", "source": "notification", "diff": '{"email": ["a", "b"]}',
            "detail": "", "error": "", **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("action", "outcome", "kind"),
    [
        ("create", "ok", "account.created"),
        ("update", "warning", "account.updated"),
        ("add_to_groups", "ok", "entitlements.changed"),  # the SCIM target's word for a grant
        ("assign_roles", "ok", "entitlements.changed"),  # Auth0's
        ("block", "ok", "account.deprovisioned"),
        ("deactivate", "ok", "account.deprovisioned"),
        ("delete", "ok", "account.deprovisioned"),
        ("reactivate", "ok", "account.restored"),
        ("risk_response", "ok", "risk.responded"),
        ("risk_restore", "ok", "account.restored"),
        ("held", "held", "change.held"),
        ("approve", "ok", "change.released"),
    ],
)
def test_each_effective_change_is_an_event_of_its_type(action: str, outcome: str, kind: str) -> None:
    event = to_event(row(action, outcome))
    assert event is not None and event["type"] == f"com.entra-sync.{kind}"


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        ("create", "failed"),
        ("create", "refused"),
        ("none", "ok"),
        ("sync", "retrying"),
        ("held", "ok"),
        ("alert", "ok"),
        ("update", "skipped"),
    ],
)
def test_what_did_not_happen_is_no_event(action: str, outcome: str) -> None:
    assert to_event(row(action, outcome)) is None


def test_an_event_is_cloudevents_1_0_with_a_stable_id_and_the_rows_facts() -> None:
    event = to_event(row("create"))
    assert event is not None
    assert {k: event[k] for k in ("specversion", "source", "subject", "time", "correlationid")} == {
        "specversion": "1.0", "source": "/entra-sync/targets/scim:crm", "subject": "u1",
        "time": "2026-12-06T07:00:00.000Z", "correlationid": "c1",
    }  # fmt: skip
    assert event["id"] == event_id(row("create")) == to_event(row("update"))["id"]  # type: ignore[index]
    assert event["data"]["diff"] == {"email": ["a", "b"]} and event["data"]["target_id"] == "42"
    assert to_event(row("create", RowKey="another"))["id"] != event["id"]  # type: ignore[index]


def test_an_event_grid_topic_gets_a_cloudevents_batch_with_its_key_and_the_api_version() -> None:
    """The sink against the sandbox's topic on loopback, which refuses a post without the
    api-version, the key or the CloudEvents batch form."""
    with EventGridTopic() as topic:

        async def post(key: str) -> None:
            sink = EventGridSink(Secret(topic.url()), Secret(key))
            try:
                await sink.post(to_event(row("create")) or {})
            finally:
                await sink.close()

        asyncio.run(post(TOPIC_KEY))  # accepted: the api-version, the key and the batch were right
        with pytest.raises(TransientError, match="answered 401"):
            asyncio.run(post("a-wrong-key"))
        accepted = topic.events()
    assert [(e.route, e.status) for e in topic.log.entries()] == [("eventgrid.post", 200), ("eventgrid.post", 401)]
    assert [e["type"] for e in accepted] == ["com.entra-sync.account.created"]
    assert accepted[0]["id"] == event_id(row("create"))


def test_the_sandbox_topic_refuses_what_event_grid_refuses() -> None:
    event = to_event(row("create"))
    with EventGridTopic() as topic, httpx.Client(base_url=topic.origin, trust_env=False) as http:
        batch = {"content-type": "application/cloudevents-batch+json; charset=utf-8", "aeg-sas-key": TOPIC_KEY}
        url = f"/api/events?api-version={API_VERSION}"
        assert http.post(url, json=[event], headers=batch).status_code == 200
        assert http.post("/api/events", json=[event], headers=batch).status_code == 400  # no api-version
        assert http.post(url, json=[event], headers={**batch, "aeg-sas-key": "x"}).status_code == 401
        assert http.post(url, json=[{**(event or {}), "specversion": "0.3"}], headers=batch).status_code == 400
        assert http.post(url, json=[event], headers={**batch, "content-type": "application/json"}).status_code == 400
        assert http.post(url, content=b"[" + b" " * 1_048_576 + b"]", headers=batch).status_code == 413
        assert len(topic.events()) == 1
