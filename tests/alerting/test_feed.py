"""Which audit rows are events and what each says (pure), and the Event Grid form of a delivery
(through an httpx transport in the test: no network)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from shared.alerting.feed import EventSink, event_id, to_event
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


def test_an_event_grid_topic_gets_a_cloudevents_batch_with_its_key() -> None:
    seen: list[httpx.Request] = []

    def topic(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async def post() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(topic)) as http:
            url = Secret("https://evgt-abc.westeurope-1.eventgrid.azure.net/api/events")
            await EventSink(url, Secret("topic-key"), http).post(to_event(row("create")) or {})

    asyncio.run(post())
    (request,) = seen
    assert request.headers["aeg-sas-key"] == "topic-key"
    assert request.headers["content-type"].startswith("application/cloudevents-batch+json")
    assert [e["type"] for e in json.loads(request.content)] == ["com.entra-sync.account.created"]
