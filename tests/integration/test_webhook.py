"""graph_webhook and graph_lifecycle through the indexed functions: the handshake, validation at
the edge, auditing of what was refused, and one work item per identity; and the queue's edge, a work
item that reaches the worker from elsewhere."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from tests.integration.world import World, audit_rows, http_request, queued, run_worker, services_for
from tests.support import CLIENT_STATE

SUB_USERS = "11111111-aaaa-4bbb-8ccc-000000000001"
SUB_GROUPS = "11111111-aaaa-4bbb-8ccc-000000000002"
SUB_UNKNOWN = "99999999-aaaa-4bbb-8ccc-000000000009"
CAP = 1000  # items per request, as the README promises (shared.sources.graph.notifications.MAX_ITEMS)
NOSNIFF = "nosniff"
NAMED = {"unknown subscription": f"; unknown subscriptions: {SUB_UNKNOWN}"}  # what a refusal row names


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=10, groups=3).start()
    try:
        yield w
    finally:
        w.stop()


def note(
    user_id: str, *, state: str | None = CLIENT_STATE, sub: str = SUB_USERS, kind: str = "Users"
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "subscriptionId": sub,
        "changeType": "updated",
        "resource": f"{kind}/{user_id}",
        "resourceData": {
            "@odata.type": f"#Microsoft.Graph.{kind[:-1]}",
            "@odata.id": f"{kind}/{user_id}",
            "id": user_id,
        },
        "tenantId": "00000000-0000-0000-0000-000000000000",
    }
    if state is not None:
        item["clientState"] = state
    return item


def lifecycle_note(*, state: str | None = CLIENT_STATE, sub: str = SUB_USERS) -> dict[str, Any]:
    item: dict[str, Any] = {"subscriptionId": sub, "lifecycleEvent": "reauthorizationRequired"}
    if state is not None:
        item["clientState"] = state
    return item


# One well-formed item per function; ``state`` None leaves the clientState out.
ITEM: dict[str, Callable[..., dict[str, Any]]] = {
    "graph_webhook": lambda state=CLIENT_STATE: note(str(uuid.uuid4()), state=state),
    "graph_lifecycle": lambda state=CLIENT_STATE: lifecycle_note(state=state),
}


async def call(indexed: dict[str, Any], name: str, request: Any) -> Any:
    return await indexed[name].get_user_function()(request)


async def known(svc: Any) -> None:
    for resource, sub in (("users", SUB_USERS), ("groups", SUB_GROUPS)):
        await svc.state.put("subscription", resource, {"id": sub, "resource": resource})


def scenario(
    world: World, indexed: dict[str, Any], name: str, request: Any
) -> tuple[Any, list[Any], list[dict[str, Any]]]:
    async def go() -> tuple[Any, list[Any], list[dict[str, Any]]]:
        async with services_for(world) as svc:
            await known(svc)
            response = await call(indexed, name, request)
            return response, await queued(svc), await audit_rows(svc)

    return asyncio.run(go())


@pytest.mark.parametrize("name", ["graph_webhook", "graph_lifecycle"])
def test_the_validation_handshake_echoes_the_decoded_token(world: World, indexed: dict[str, Any], name: str) -> None:
    token = "Validation: Token with spaces & symbols <>"
    response, items, _ = scenario(world, indexed, name, http_request(params={"validationToken": token}))
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_body().decode() == token
    assert items == []


def test_a_batch_becomes_one_work_item_per_identity(world: World, indexed: dict[str, Any]) -> None:
    a, b, g = (str(uuid.uuid4()) for _ in range(3))
    body = {"value": [note(a), note(b), note(a), note(g, sub=SUB_GROUPS, kind="Groups")]}
    response, items, rows = scenario(world, indexed, "graph_webhook", http_request(body))
    assert response.status_code == 202
    assert sorted((i.kind, i.id, i.source, i.source_ref) for i in items) == sorted(
        [
            ("user", a, "notification", SUB_USERS),
            ("user", b, "notification", SUB_USERS),
            ("group", g, "notification", SUB_GROUPS),
        ]
    )
    assert len({i.correlation_id for i in items}) == 3
    assert rows == []


@pytest.mark.parametrize(
    ("item_change", "reason"),
    [
        ({"clientState": "sandbox-client-state-WRONG-000000"}, "clientState missing or wrong"),
        ({"clientState": None}, "clientState missing or wrong"),
        ({"subscriptionId": SUB_UNKNOWN}, "unknown subscription"),
        (
            {"resourceData": {"id": "not-a-guid"}, "resource": "Users/not-a-guid"},
            "resourceData.id is not the resource's GUID",
        ),
        ({"resource": "Devices/11111111-2222-3333-4444-555555555555"}, "resource is not a user or group"),
        ({"changeType": "exploded"}, "unknown changeType"),
    ],
)
def test_a_refused_item_is_audited_and_nothing_is_enqueued(
    world: World, indexed: dict[str, Any], item_change: dict[str, Any], reason: str
) -> None:
    item = {**note(str(uuid.uuid4())), **item_change}
    if item.get("clientState") is None:
        item.pop("clientState")
    response, items, rows = scenario(world, indexed, "graph_webhook", http_request({"value": [item]}))
    assert response.status_code == 403
    assert items == []
    assert [(r["action"], r["outcome"], r["detail"]) for r in rows] == [
        ("refuse_notification", "refused", f"1 refused: {reason} 1" + NAMED.get(reason, ""))
    ]
    assert all(CLIENT_STATE not in json.dumps(r, default=str) for r in rows)


def test_good_items_go_through_beside_a_refused_one(world: World, indexed: dict[str, Any]) -> None:
    good = str(uuid.uuid4())
    body = {"value": [note(good), note(str(uuid.uuid4()), state="forged-state-value-000000000")]}
    response, items, rows = scenario(world, indexed, "graph_webhook", http_request(body))
    assert response.status_code == 202
    assert [i.id for i in items] == [good]
    assert [r["detail"] for r in rows] == ["1 refused: clientState missing or wrong 1"]


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"raw": b"{not json"}, 400),
        ({"raw": b'{"value": "nope"}'}, 400),
        ({"raw": b"[]"}, 400),
        ({"body": {"value": []}, "content_type": "text/plain"}, 415),
        ({"raw": b'{"value": [' + b" " * (1024 * 1024) + b"]}"}, 413),
        ({"params": {"validationToken": "x" * 5000}}, 400),
    ],
)
def test_malformed_requests_get_a_clear_status_and_are_audited(
    world: World, indexed: dict[str, Any], request_kwargs: dict[str, Any], status: int
) -> None:
    response, items, rows = scenario(world, indexed, "graph_webhook", http_request(**request_kwargs))
    assert response.status_code == status
    assert items == []
    if status != 400 or "params" not in request_kwargs:
        assert [r["outcome"] for r in rows] == ["refused"]


def test_a_batch_that_cannot_be_enqueued_gets_a_503(world: World, indexed: dict[str, Any]) -> None:
    class BrokenQueue:
        async def send(self, items: Any) -> int:
            raise ConnectionError("queue service unavailable")

    async def go() -> Any:
        async with services_for(world) as svc:
            svc.queue = BrokenQueue()  # type: ignore[assignment]
            await known(svc)
            return await call(indexed, "graph_webhook", http_request({"value": [note(str(uuid.uuid4()))]}))

    response = asyncio.run(go())
    assert response.status_code == 503
    assert response.headers.get("X-Content-Type-Options") == NOSNIFF


def test_reauthorization_required_is_queued_for_the_worker(world: World, indexed: dict[str, Any]) -> None:
    body = {
        "value": [
            {"subscriptionId": SUB_USERS, "clientState": CLIENT_STATE, "lifecycleEvent": "reauthorizationRequired"},
            {
                "subscriptionId": SUB_USERS,
                "clientState": "wrong-state-0000000000000",
                "lifecycleEvent": "reauthorizationRequired",
            },
        ]
    }
    response, items, rows = scenario(world, indexed, "graph_lifecycle", http_request(body))
    assert response.status_code == 202
    assert [(i.kind, i.id, i.source, i.source_ref) for i in items] == [
        ("subscription", SUB_USERS, "lifecycle", "reauthorizationRequired")
    ]
    assert [r["detail"] for r in rows] == ["1 refused: clientState missing or wrong 1"]


# ------------------------------------------------------------------------------------------------
# What an anonymous request can cost
# ------------------------------------------------------------------------------------------------


class CountingSubscriptions:
    """The real subscription manager, counting the webhook's look-ups (each may read Table Storage)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.lookups = 0

    async def known_ids(self) -> frozenset[str]:
        self.lookups += 1
        return await self.inner.known_ids()  # type: ignore[no-any-return]

    async def refresh_known(self) -> frozenset[str]:
        self.lookups += 1
        return await self.inner.refresh_known()  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["graph_webhook", "graph_lifecycle"])
def test_a_flood_of_unauthenticated_items_costs_one_audit_row_and_one_warning(
    world: World, indexed: dict[str, Any], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"value": [ITEM[name](state=None) for _ in range(CAP)]}
    with caplog.at_level(logging.WARNING):
        response, items, rows = scenario(world, indexed, name, http_request(body))
    assert response.status_code == 403
    assert items == []
    [row] = rows
    assert (row["action"], row["outcome"]) == ("refuse_notification", "refused")
    assert row["detail"] == f"{CAP} refused: clientState missing or wrong {CAP}"
    assert json.loads(row["diff"]) == {"refused": CAP, "reasons": {"clientState missing or wrong": CAP}}
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "entra_sync.webhook"]) == 1


def test_refusals_are_counted_per_reason_in_one_audit_row_without_the_client_state(
    world: World, indexed: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    good = str(uuid.uuid4())
    body = {
        "value": [
            note(good),
            note(str(uuid.uuid4()), state=None),
            note(str(uuid.uuid4()), state=CLIENT_STATE + "x"),
            note(str(uuid.uuid4()), sub=SUB_UNKNOWN),
            {**note(str(uuid.uuid4())), "changeType": "exploded"},
        ]
    }
    with caplog.at_level(logging.WARNING):
        response, items, rows = scenario(world, indexed, "graph_webhook", http_request(body))
    assert response.status_code == 202
    assert [i.id for i in items] == [good]
    [row] = rows
    assert row["detail"] == (
        "4 refused: clientState missing or wrong 2, unknown subscription 1, unknown changeType 1; "
        f"unknown subscriptions: {SUB_UNKNOWN}"
    )
    assert json.loads(row["diff"]) == {
        "refused": 4,
        "reasons": {"clientState missing or wrong": 2, "unknown subscription": 1, "unknown changeType": 1},
        "unknown_subscriptions": [SUB_UNKNOWN],
    }
    assert CLIENT_STATE not in json.dumps(rows, default=str)
    assert CLIENT_STATE not in caplog.text


def test_a_mixed_request_names_its_unknown_subscriptions_but_echoes_no_forged_id(
    world: World, indexed: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    good, other = str(uuid.uuid4()), "99999999-aaaa-4bbb-8ccc-00000000000a"
    injected = 'x", "outcome": "ok"}\r\nWARNING forged line ' + "y" * 300
    body = {
        "value": [
            note(good),  # valid
            note(str(uuid.uuid4()), sub=SUB_UNKNOWN),  # an unknown subscription, twice, and another
            note(str(uuid.uuid4()), sub=SUB_UNKNOWN),
            note(str(uuid.uuid4()), sub=other),
            note(str(uuid.uuid4()), sub=injected),  # the right clientState, a subscription id that is no id
            note(str(uuid.uuid4()), state="forged-state-value-000000000", sub=injected),  # forged
        ]
    }
    with caplog.at_level(logging.WARNING):
        response, items, rows = scenario(world, indexed, "graph_webhook", http_request(body))
    assert response.status_code == 202
    assert [i.id for i in items] == [good]
    [row] = rows
    assert json.loads(row["diff"])["unknown_subscriptions"] == [SUB_UNKNOWN, other]  # distinct, named
    assert json.loads(row["diff"])["unknown_subscriptions_malformed"] == 1
    assert f"unknown subscriptions: {SUB_UNKNOWN}, {other}" in row["detail"]
    assert row["source_ref"] == ""  # several subscriptions: none is the request's
    assert "forged" not in json.dumps(rows, default=str) and "forged" not in caplog.text


def test_subscriptions_are_looked_up_only_once_an_item_carries_the_right_client_state(
    world: World, indexed: dict[str, Any]
) -> None:
    forged = {"value": [note(str(uuid.uuid4()), state=None, sub=SUB_UNKNOWN) for _ in range(20)]}
    user = str(uuid.uuid4())

    async def go() -> tuple[int, int, int, int, list[Any]]:
        async with services_for(world) as svc:
            await known(svc)
            spy = CountingSubscriptions(svc.subscriptions)
            svc.subscriptions = spy
            refused = await call(indexed, "graph_webhook", http_request(forged))
            after_forged = spy.lookups
            accepted = await call(indexed, "graph_webhook", http_request({"value": [note(user)]}))
            return refused.status_code, after_forged, accepted.status_code, spy.lookups, await queued(svc)

    refused, after_forged, accepted, lookups, items = asyncio.run(go())
    assert (refused, after_forged) == (403, 0)
    assert accepted == 202 and lookups >= 1
    assert [i.id for i in items] == [user]


@pytest.mark.parametrize("name", ["graph_webhook", "graph_lifecycle"])
def test_more_items_than_the_cap_refuse_the_whole_request_audited_once(
    world: World, indexed: dict[str, Any], name: str
) -> None:
    body = {"value": [ITEM[name]() for _ in range(CAP + 1)]}
    response, items, rows = scenario(world, indexed, name, http_request(body))
    assert response.status_code == 413
    assert f"at most {CAP}" in response.get_body().decode()
    assert items == []
    assert [(r["action"], r["outcome"]) for r in rows] == [("refuse_notification", "refused")]
    assert f"at most {CAP}" in rows[0]["detail"]


# ------------------------------------------------------------------------------------------------
# Input edges
# ------------------------------------------------------------------------------------------------


def test_a_guid_with_a_trailing_newline_is_refused(world: World, indexed: dict[str, Any]) -> None:
    response, items, rows = scenario(
        world, indexed, "graph_webhook", http_request({"value": [note(str(uuid.uuid4()) + "\n")]})
    )
    assert response.status_code == 403
    assert items == []
    assert [r["detail"] for r in rows] == ["1 refused: resourceData.id is not the resource's GUID 1"]


@pytest.mark.parametrize(
    ("name", "field", "reason"),
    [
        ("graph_webhook", "changeType", "unknown changeType"),
        ("graph_lifecycle", "lifecycleEvent", "unknown lifecycleEvent"),
    ],
)
def test_an_event_that_is_not_a_string_is_refused_not_a_crash(
    world: World, indexed: dict[str, Any], name: str, field: str, reason: str
) -> None:
    item = {**ITEM[name](), field: ["updated"]}
    response, items, rows = scenario(world, indexed, name, http_request({"value": [item]}))
    assert response.status_code == 403
    assert items == []
    assert [r["detail"] for r in rows] == [f"1 refused: {reason} 1"]


@pytest.mark.parametrize("name", ["graph_webhook", "graph_lifecycle"])
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"value": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "body is nested too deeply"),
        (b'{"value": [], "n": ' + b"9" * 5000 + b"}", "body is not valid JSON"),
    ],
    ids=["nested", "long-number"],
)
def test_json_that_python_cannot_parse_is_a_400_and_audited(
    world: World, indexed: dict[str, Any], name: str, raw: bytes, reason: str
) -> None:
    response, items, rows = scenario(world, indexed, name, http_request(raw=raw))
    assert response.status_code == 400
    assert response.get_body().decode().startswith(reason)
    assert items == []
    assert [(r["outcome"], r["detail"][: len(reason)]) for r in rows] == [("refused", reason)]


@pytest.mark.parametrize("name", ["graph_webhook", "graph_lifecycle"])
def test_an_empty_validation_token_is_a_400(world: World, indexed: dict[str, Any], name: str) -> None:
    response, items, _ = scenario(world, indexed, name, http_request(params={"validationToken": ""}))
    assert response.status_code == 400
    assert response.get_body().decode() == "validationToken is empty"
    assert items == []


@pytest.mark.parametrize("name", ["graph_webhook", "graph_lifecycle"])
def test_every_answer_carries_nosniff(world: World, indexed: dict[str, Any], name: str) -> None:
    requests = {
        200: http_request(params={"validationToken": "token"}),
        202: http_request({"value": [ITEM[name]()]}),
        403: http_request({"value": [ITEM[name](state=None)]}),
        400: http_request(raw=b"{not json"),
        415: http_request({"value": []}, content_type="text/plain"),
        413: http_request(raw=b" " * (1024 * 1024 + 1)),
    }

    async def go() -> dict[int, Any]:
        async with services_for(world) as svc:
            await known(svc)
            return {status: await call(indexed, name, request) for status, request in requests.items()}

    answers = asyncio.run(go())
    assert {status: a.status_code for status, a in answers.items()} == {status: status for status in requests}
    assert {status: a.headers.get("X-Content-Type-Options") for status, a in answers.items()} == dict.fromkeys(
        requests, NOSNIFF
    )


def test_a_work_item_whose_source_ref_is_over_256_characters_is_refused_and_audited_not_cut(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    ref = "ticket-" + "7" * 300  # no producer of entra-sync writes one: another tool put it on the queue
    text = json.dumps({"v": 1, "kind": "user", "id": user["id"], "source": "manual", "source_ref": ref})

    async def go() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, text)  # through sync_worker, as the host delivers a message
            return await audit_rows(svc)

    rows = asyncio.run(go())
    assert [(r["action"], r["outcome"]) for r in rows] == [("refuse_work_item", "refused")]
    assert rows[0]["detail"] == "work item source_ref is 307 characters; at most 256 are accepted, none cut"
    assert world.account(user["id"]) is None  # nothing was done on a reference the trail could not keep
