"""Graph change and lifecycle notifications: validated at the edge, turned into work items.

Nothing here calls Graph or Auth0. Validation runs in two steps. :func:`authenticate` reads the
body and checks every item's ``clientState`` (in constant time): it needs no storage, so a flood of
forged items costs the caller nothing but the parse. Only the items that carried the right
``clientState`` go on to :func:`parse_changes` or :func:`parse_lifecycle`, which check the
subscription (only ones entra-sync created), the resource and the id (a GUID). Refused items are
reported back so the caller can audit them (:func:`summarise` counts them per reason and names the
unknown subscriptions); accepted ones are de-duplicated to one work item per identity.

A refused item's subscription id is untrusted: a :class:`Refusal` keeps it only when it has the
shape of a Graph subscription id (a GUID, so 36 characters of hex and dashes), which is all that
may reach an audit row or a log line.
"""

from __future__ import annotations

import hmac
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from shared.core.work import GUID, WorkItem, parse_json
from shared.errors import BadInput

MAX_BODY_BYTES: Final = 1024 * 1024  # Graph batches are far smaller; anything bigger is not Graph
# Items per request: Graph sends small batches, so this leaves ample room while bounding the work
# one anonymous request can cause (each item is parsed, compared and counted).
MAX_ITEMS: Final = 1000
MAX_VALIDATION_TOKEN: Final = 2048
CHANGE_TYPES: Final = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS: Final = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
WRONG_CLIENT_STATE: Final = "clientState missing or wrong"
UNKNOWN_SUBSCRIPTION: Final = "unknown subscription"
# Distinct unknown subscription ids named in a request's audit row; the rest are only counted, so a
# request of 1,000 forged ids still writes one short row.
MAX_LISTED_SUBSCRIPTIONS: Final = 10
_RESOURCE: Final = re.compile(r"/?(?P<kind>users|groups)/(?P<id>[^/?#]+)", re.IGNORECASE)  # fullmatch only


class NotificationRejected(Exception):
    """The whole request is unusable; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Refusal:
    reason: str
    subscription_id: str = ""  # a GUID (lower case), or "" when the item named none of that shape


@dataclass
class Authenticated:
    """The items of a request that carried the right ``clientState``, and the refusals of the rest."""

    items: list[dict[str, Any]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


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
    if not token:
        raise NotificationRejected(400, "validationToken is empty")
    if len(token) > MAX_VALIDATION_TOKEN:
        raise NotificationRejected(400, "validationToken is too long")
    return token


def _body(body: bytes, content_type: str) -> list[Any]:
    if len(body) > MAX_BODY_BYTES:
        raise NotificationRejected(413, f"body larger than {MAX_BODY_BYTES} bytes")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise NotificationRejected(415, "content type must be application/json")
    try:
        data = parse_json(body, "body")
    except BadInput as exc:
        raise NotificationRejected(400, str(exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise NotificationRejected(400, "body must be an object with a 'value' array")
    if len(data["value"]) > MAX_ITEMS:
        raise NotificationRejected(
            413, f"{len(data['value'])} notifications in one request; at most {MAX_ITEMS} are accepted"
        )
    return list(data["value"])


def _subscription_id(item: dict[str, Any]) -> str:
    sub = item.get("subscriptionId")
    return sub if isinstance(sub, str) else ""


def _echoable(sub_id: str) -> str:
    """What of an untrusted subscription id may be written down: the id if it is a GUID, else ""."""
    return sub_id.lower() if GUID.fullmatch(sub_id) else ""


def authenticate(body: bytes, content_type: str, client_state: str) -> Authenticated:
    """Read the body and keep the items whose ``clientState`` matches; refuse the rest.

    Raises :class:`NotificationRejected` when the request as a whole is unusable (too big, not
    JSON, too many items).
    """
    expected = client_state.encode()
    result = Authenticated()
    for item in _body(body, content_type):
        if not isinstance(item, dict):
            result.refused.append(Refusal("notification item is not an object"))
            continue
        state = item.get("clientState")
        given = state.encode() if isinstance(state, str) else b""
        if not hmac.compare_digest(given, expected):
            result.refused.append(Refusal(WRONG_CLIENT_STATE, subscription_id=_echoable(_subscription_id(item))))
            continue
        result.items.append(item)
    return result


def summarise(refusals: Iterable[Refusal]) -> tuple[str, dict[str, Any]]:
    """What a request's one audit row says: a line with the counts per reason, most frequent first,
    and the distinct unknown subscription ids (at most :data:`MAX_LISTED_SUBSCRIPTIONS`, then how
    many more; ids not shaped like a GUID are counted, never shown); and the same as data."""
    refusals = list(refusals)
    counts = dict(Counter(r.reason for r in refusals).most_common())
    line = f"{sum(counts.values())} refused: " + ", ".join(f"{reason} {n}" for reason, n in counts.items())
    summary: dict[str, Any] = {"refused": len(refusals), "reasons": counts}
    unknown = [r.subscription_id for r in refusals if r.reason == UNKNOWN_SUBSCRIPTION]
    distinct = list(dict.fromkeys(s for s in unknown if s))
    if distinct:
        listed = distinct[:MAX_LISTED_SUBSCRIPTIONS]
        more = len(distinct) - len(listed)
        summary["unknown_subscriptions"] = listed
        line += f"; unknown subscriptions: {', '.join(listed)}"
        if more:
            summary["unknown_subscriptions_not_listed"] = more
            line += f" and {more} more"
    if malformed := unknown.count(""):
        summary["unknown_subscriptions_malformed"] = malformed
        line += f"; {malformed} with a subscription id that is not a GUID (not shown)"
    return line, summary


def _subscribed(item: dict[str, Any], known_subscriptions: frozenset[str], batch: ParsedBatch) -> str | None:
    """The item's subscription id if it is one of ours; otherwise the refusal is recorded."""
    sub_id = _subscription_id(item)
    if sub_id not in known_subscriptions:
        batch.refused.append(Refusal(UNKNOWN_SUBSCRIPTION, subscription_id=_echoable(sub_id)))
        return None
    return sub_id


def parse_changes(authenticated: Authenticated, known_subscriptions: frozenset[str]) -> ParsedBatch:
    batch = ParsedBatch(refused=list(authenticated.refused))
    seen: set[tuple[str, str]] = set()
    for item in authenticated.items:
        sub_id = _subscribed(item, known_subscriptions, batch)
        if sub_id is None:
            continue
        change = item.get("changeType")
        if not isinstance(change, str) or change not in CHANGE_TYPES:
            batch.refused.append(Refusal("unknown changeType", subscription_id=sub_id))
            continue
        resource = item.get("resource")
        data = item.get("resourceData")
        match = _RESOURCE.fullmatch(resource) if isinstance(resource, str) else None
        rid = data.get("id") if isinstance(data, dict) else None
        if match is None or not isinstance(rid, str):
            batch.refused.append(Refusal("resource is not a user or group", subscription_id=sub_id))
            continue
        if not GUID.fullmatch(rid) or rid.lower() != match.group("id").lower():
            batch.refused.append(Refusal("resourceData.id is not the resource's GUID", subscription_id=sub_id))
            continue
        kind = "user" if match.group("kind").lower() == "users" else "group"
        key = (kind, rid.lower())
        if key in seen:
            continue
        seen.add(key)
        batch.items.append(WorkItem(kind, rid.lower(), "notification", sub_id))
    return batch


def parse_lifecycle(authenticated: Authenticated, known_subscriptions: frozenset[str]) -> ParsedBatch:
    batch = ParsedBatch(refused=list(authenticated.refused))
    for item in authenticated.items:
        sub_id = _subscribed(item, known_subscriptions, batch)
        if sub_id is None:
            continue
        event = item.get("lifecycleEvent")
        if not isinstance(event, str) or event not in LIFECYCLE_EVENTS:
            batch.refused.append(Refusal("unknown lifecycleEvent", subscription_id=sub_id))
            continue
        batch.lifecycle.append((sub_id, event))
    return batch
