"""Graph change and lifecycle notifications: validated at the edge, turned into work items.

Nothing here calls Graph or Auth0. Every item is checked on its own: the ``clientState`` (in
constant time), the subscription (only ones entra-sync created), the resource and the id (a GUID).
Refused items are reported back so the caller can audit them; accepted ones are de-duplicated to
one work item per identity.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from shared.work import GUID, WorkItem

MAX_BODY_BYTES: Final = 1024 * 1024  # Graph batches are far smaller; anything bigger is not Graph
MAX_VALIDATION_TOKEN: Final = 2048
CHANGE_TYPES: Final = frozenset({"created", "updated", "deleted"})
_RESOURCE: Final = re.compile(r"^/?(?P<kind>users|groups)/(?P<id>[^/?#]+)$", re.IGNORECASE)


class NotificationRejected(Exception):
    """The whole request is unusable; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Refusal:
    reason: str
    identity: str = "unknown"
    subscription_id: str = ""


@dataclass
class ParsedBatch:
    items: list[WorkItem] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    lifecycle: list[tuple[str, str]] = field(default_factory=list)  # (subscription id, event)


def validation_token(params: dict[str, str]) -> str | None:
    """The decoded ``validationToken`` query value of a handshake, or ``None``."""
    token = params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_VALIDATION_TOKEN:
        raise NotificationRejected(400, "validationToken is too long")
    return token


def _body(body: bytes, content_type: str) -> list[Any]:
    if len(body) > MAX_BODY_BYTES:
        raise NotificationRejected(413, f"body larger than {MAX_BODY_BYTES} bytes")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise NotificationRejected(415, "content type must be application/json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotificationRejected(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise NotificationRejected(400, "body must be an object with a 'value' array")
    return list(data["value"])


def _common(item: Any, client_state: str, known_subscriptions: frozenset[str]) -> tuple[str, Refusal | None]:
    if not isinstance(item, dict):
        return "", Refusal("notification item is not an object")
    sub = item.get("subscriptionId")
    sub_id = sub if isinstance(sub, str) else ""
    state = item.get("clientState")
    given = state.encode() if isinstance(state, str) else b""
    if not hmac.compare_digest(given, client_state.encode()):
        return sub_id, Refusal("clientState missing or wrong", subscription_id=sub_id[:64])
    if sub_id not in known_subscriptions:
        return sub_id, Refusal("unknown subscription", subscription_id=sub_id[:64])
    return sub_id, None


def parse_changes(
    body: bytes, content_type: str, client_state: str, known_subscriptions: frozenset[str]
) -> ParsedBatch:
    batch = ParsedBatch()
    seen: set[tuple[str, str]] = set()
    for item in _body(body, content_type):
        sub_id, refusal = _common(item, client_state, known_subscriptions)
        if refusal is not None:
            batch.refused.append(refusal)
            continue
        if item.get("changeType") not in CHANGE_TYPES:
            batch.refused.append(Refusal("unknown changeType", subscription_id=sub_id))
            continue
        resource = item.get("resource")
        data = item.get("resourceData")
        match = _RESOURCE.match(resource) if isinstance(resource, str) else None
        rid = data.get("id") if isinstance(data, dict) else None
        if match is None or not isinstance(rid, str):
            batch.refused.append(Refusal("resource is not a user or group", subscription_id=sub_id))
            continue
        if not GUID.match(rid) or rid.lower() != match.group("id").lower():
            batch.refused.append(Refusal("resourceData.id is not the resource's GUID", subscription_id=sub_id))
            continue
        kind = "user" if match.group("kind").lower() == "users" else "group"
        key = (kind, rid.lower())
        if key in seen:
            continue
        seen.add(key)
        batch.items.append(WorkItem(kind, rid.lower(), "notification", sub_id))
    return batch


def parse_lifecycle(
    body: bytes, content_type: str, client_state: str, known_subscriptions: frozenset[str]
) -> ParsedBatch:
    batch = ParsedBatch()
    for item in _body(body, content_type):
        sub_id, refusal = _common(item, client_state, known_subscriptions)
        if refusal is not None:
            batch.refused.append(refusal)
            continue
        event = item.get("lifecycleEvent")
        if event not in {"reauthorizationRequired", "subscriptionRemoved", "missed"}:
            batch.refused.append(Refusal("unknown lifecycleEvent", subscription_id=sub_id))
            continue
        batch.lifecycle.append((sub_id, str(event)))
    return batch
