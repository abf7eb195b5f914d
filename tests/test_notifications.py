"""What the HTTP edge validates with, as pure functions: notification parsing, and the work items
and risk signals that arrive from outside (a pushed alert, a queue message)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared.core.work import RiskSignal, WorkItem
from shared.errors import BadInput
from shared.sources.graph.notifications import (
    MAX_ITEMS,
    NotificationRejected,
    Refusal,
    authenticate,
    parse_changes,
    summarise,
    validation_token,
)

STATE = "unit-test-client-state-0123456789"
SUB = "11111111-aaaa-4bbb-8ccc-000000000001"
NESTED = "[" * 100_000 + "]" * 100_000
LONG_NUMBER = "9" * 5000


def body(items: list[Any]) -> bytes:
    return json.dumps({"value": items}).encode()


def change(user_id: str, state: str | None = STATE) -> dict[str, Any]:
    item: dict[str, Any] = {
        "subscriptionId": SUB,
        "changeType": "updated",
        "resource": f"Users/{user_id}",
        "resourceData": {"id": user_id},
    }
    if state is not None:
        item["clientState"] = state
    return item


def test_only_items_with_the_right_client_state_are_authenticated() -> None:
    good = change(str(uuid.uuid4()))
    authenticated = authenticate(body([good, change(str(uuid.uuid4()), None), "junk"]), "application/json", STATE)
    assert authenticated.items == [good]
    assert [r.reason for r in authenticated.refused] == [
        "clientState missing or wrong",
        "notification item is not an object",
    ]


def test_the_subscription_is_checked_only_for_authenticated_items() -> None:
    user = str(uuid.uuid4())
    authenticated = authenticate(body([change(user), change(str(uuid.uuid4()), None)]), "application/json", STATE)
    batch = parse_changes(authenticated, frozenset({SUB}))
    assert [(i.kind, i.id) for i in batch.items] == [("user", user)]
    assert [r.reason for r in batch.refused] == ["clientState missing or wrong"]
    assert [r.reason for r in parse_changes(authenticated, frozenset()).refused] == [
        "clientState missing or wrong",
        "unknown subscription",
    ]


def test_more_items_than_the_cap_refuse_the_whole_request() -> None:
    assert len(authenticate(body([{}] * MAX_ITEMS), "application/json", STATE).refused) == MAX_ITEMS
    with pytest.raises(NotificationRejected) as info:
        authenticate(body([{}] * (MAX_ITEMS + 1)), "application/json", STATE)
    assert info.value.status == 413
    assert info.value.reason == f"{MAX_ITEMS + 1} notifications in one request; at most {MAX_ITEMS} are accepted"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(NESTED, "body is nested too deeply"), ('{"value": [], "n": ' + LONG_NUMBER + "}", "body is not valid JSON")],
    ids=["nested", "long-number"],
)
def test_json_that_python_cannot_parse_rejects_the_request_with_a_400(raw: str, reason: str) -> None:
    with pytest.raises(NotificationRejected) as info:
        authenticate(raw.encode(), "application/json", STATE)
    assert info.value.status == 400
    assert info.value.reason.startswith(reason)


def test_refusals_are_summarised_per_reason_most_frequent_first() -> None:
    refusals = [Refusal("unknown changeType"), *[Refusal("clientState missing or wrong")] * 3, Refusal("x")]
    assert summarise(refusals) == (
        "5 refused: clientState missing or wrong 3, unknown changeType 1, x 1",
        {"refused": 5, "reasons": {"clientState missing or wrong": 3, "unknown changeType": 1, "x": 1}},
    )


def test_unknown_subscriptions_are_named_at_most_ten_and_only_when_shaped_like_a_graph_id() -> None:
    ids = [f"{n:08x}-aaaa-4bbb-8ccc-dddddddddddd" for n in range(12)]
    forged = ['x"}\nINFO forged log line', "0" * 5000, ids[0].upper() + "\n"]
    items = [{"clientState": "s", "subscriptionId": sub} for sub in [*ids, ids[3].upper(), *forged]]
    batch = parse_changes(authenticate(body(items), "application/json", "s"), frozenset())
    line, data = summarise(batch.refused)
    assert data["reasons"] == {"unknown subscription": 16}
    assert data["unknown_subscriptions"] == ids[:10]  # distinct, in order, lower case: the 13th was ids[3]
    assert data["unknown_subscriptions_not_listed"] == 2
    assert data["unknown_subscriptions_malformed"] == 3
    assert line.endswith(f"{ids[9]} and 2 more; 3 with a subscription id that is not a GUID (not shown)")
    assert "forged" not in line and "\n" not in line and "00000000000" not in line


def test_an_empty_validation_token_is_refused() -> None:
    with pytest.raises(NotificationRejected) as info:
        validation_token({"validationToken": ""})
    assert (info.value.status, info.value.reason) == (400, "validationToken is empty")
    assert validation_token({"validationToken": "t"}) == "t"
    assert validation_token({}) is None


def work_item(**fields: Any) -> str:
    return json.dumps({"v": 1, "kind": "user", "id": str(uuid.uuid4()), "source": "delta", **fields})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (NESTED, "work item is nested too deeply"),
        ('{"v": ' + LONG_NUMBER + "}", "work item is not valid JSON"),
        (work_item(id=str(uuid.uuid4()) + "\n"), "is not a GUID"),
        (work_item(enqueued_at="soon"), "enqueued_at must be a number"),
        (work_item(enqueued_at=[1]), "enqueued_at must be a number"),
    ],
    ids=["nested", "long-number", "guid-newline", "enqueued-at-text", "enqueued-at-list"],
)
def test_a_queue_message_python_cannot_use_is_bad_input_not_a_crash(text: str, problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        WorkItem.from_json(text)


def test_a_source_ref_is_kept_whole_up_to_256_characters_and_refused_past_them() -> None:
    whole = "r" * 256
    assert WorkItem.from_json(work_item(source_ref=whole)).source_ref == whole
    for ref, problem in (("r" * 257, "source_ref is 257 characters; at most 256"), ("run\nforged", "printable"),
                         (["a"], "source_ref must be a string")):  # fmt: skip
        with pytest.raises(BadInput, match=problem):
            WorkItem.from_json(work_item(source_ref=ref))


def test_a_work_item_round_trips() -> None:
    item = WorkItem("user", str(uuid.uuid4()), "notification", SUB)
    assert WorkItem.from_json(item.to_json()) == item


@pytest.mark.parametrize("field", ["ref", "event_type"])
def test_a_risk_token_with_a_trailing_newline_is_bad_input(field: str) -> None:
    signal = {"incident": "detection", "ref": "det-1", "level": "high", "event_type": "leakedCredentials"}
    RiskSignal.from_dict(signal)
    with pytest.raises(BadInput):
        RiskSignal.from_dict({**signal, field: signal[field] + "\n"})


def test_an_item_names_the_identity_source_only_when_it_is_not_the_default() -> None:
    pushed = WorkItem("user", str(uuid.uuid4()), "push", identity_source="hr-push")
    assert WorkItem.from_json(pushed.to_json()) == pushed and pushed.in_lane
    plain = WorkItem("user", str(uuid.uuid4()), "notification", SUB)
    assert "identity_source" not in plain.to_json()  # the message format items had before
    for bad in ("HR", "-x", "x" * 40, "a:b", 7):
        with pytest.raises(BadInput, match="identity_source"):
            WorkItem.from_json(work_item(identity_source=bad))
