"""The event feed: every effective change as a CloudEvents 1.0 event, published from the audit trail.

**Why from the audit trail, by a timer, and not by the worker after its audit write.** The audit
row is written in the same transaction that settles a piece of work (:meth:`AuditStore.settle`),
so it exists exactly when the change is known to have reached the target. A publisher that posts
after that write, in the worker, loses the event when the process dies between the two; a
publisher that reads the audit trail (``events_publish``, every minute) cannot lose it: it keeps a
cursor in the state store and moves it only after the events before it were delivered, parked for
a retry, or dead-lettered. A crash re-sends what was in flight: delivery is at-least-once, and the
event id is stable (a digest of the audit row's keys), so consumers dedupe on ``id``.

**Late rows.** A row's time is when the change happened, and its write can land a little later
(a settled batch, another instance's clock): each pass reads from ``OVERLAP_S`` before the cursor
and to ``LAG_S`` before now, and skips the ids it already sent (kept, per id, for the overlap).

**Failures.** One delivery is tried a few times with exponential backoff (the clock's sleep); an
event still refused is parked (``events-pending``) and tried again by the next passes, its wait
doubling; after ``max_attempts`` it is dead-lettered (``events-dead``, an audit row and an alert).

**What is an event.** Rows whose action is an effective change (:data:`EVENT_TYPES`: created,
updated, entitlements changed, deprovisioned, restored, risk response, held, released) with an
outcome that says it happened. The ``data`` carries the identity's source, the target, the
identity, the target's account id, the audit row's diff (redacted when it was written), the detail
and the correlation id. Nothing else from the row, and no setting, reaches an event.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import httpx
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.eventgrid.aio import EventGridPublisherClient

from shared.alerting.signing import signed_headers
from shared.clock import SYSTEM, Clock
from shared.core.model import ActionKind
from shared.core.ports import StateStore
from shared.errors import TransientError
from shared.settings import Secret
from shared.stores.audit import AuditRow, AuditStore, identity_source_of
from shared.stores.keys import utc_text
from shared.targets.auth0.rules import LABELS as AUTH0_LABELS
from shared.targets.salesforce.rules import LABELS as SALESFORCE_LABELS
from shared.targets.scim.rules import LABELS as SCIM_LABELS

log = logging.getLogger("entra_sync.events")

SPEC_VERSION: Final = "1.0"
TYPE_PREFIX: Final = "com.entra-sync."
CURSOR: Final = ("events-cursor", "feed")
SENT: Final = "events-sent"
PENDING: Final = "events-pending"
DEAD: Final = "events-dead"
OVERLAP_S: Final = 900.0
LAG_S: Final = 30.0
SLICE_S: Final = 3600.0  # at most this much of the trail per pass
TRIES_PER_PASS: Final = 3
BACKOFF_S: Final = 0.5
PARKED_BACKOFF_S: Final = 60.0
TIMEOUT_S: Final = 10.0

_KIND_TYPES: Final = {
    ActionKind.CREATE: "account.created",
    ActionKind.UPDATE: "account.updated",
    ActionKind.GRANT: "entitlements.changed",
    ActionKind.UNGRANT: "entitlements.changed",
    ActionKind.DISABLE: "account.deprovisioned",
    ActionKind.DELETE: "account.deprovisioned",
    ActionKind.ENABLE: "account.restored",
}
_LABELS: Final = {kind.value: kind for kind in _KIND_TYPES} | {
    label: kind for labels in (AUTH0_LABELS, SCIM_LABELS, SALESFORCE_LABELS) for kind, label in labels.items()
}
# The audit row's action -> the event type (after the prefix), for the outcomes that mean it happened.
EVENT_TYPES: Final = {label: _KIND_TYPES[kind] for label, kind in _LABELS.items() if kind in _KIND_TYPES} | {
    "risk_response": "risk.responded",
    "risk_restore": "account.restored",
    "held": "change.held",
    "approve": "change.released",
}
HAPPENED: Final = frozenset({"ok", "warning", "held"})


def event_id(row: Mapping[str, Any]) -> str:
    """Stable for a row: the same id however often the row is published or replayed."""
    return hashlib.sha256(f"{row['PartitionKey']}|{row['RowKey']}".encode()).hexdigest()[:32]


def event_type(row: Mapping[str, Any]) -> str | None:
    kind = EVENT_TYPES.get(str(row.get("action", "")))
    if kind is None or row.get("outcome") not in HAPPENED:
        return None
    if (kind == "change.held") != (row.get("outcome") == "held"):
        return None
    return TYPE_PREFIX + kind


def to_event(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The CloudEvent of an audit row, or None for a row that is no effective change."""
    kind = event_type(row)
    if kind is None:
        return None
    target = str(row.get("target") or "")
    diff_text = str(row.get("diff") or "")
    try:
        diff = json.loads(diff_text) if diff_text else {}
    except json.JSONDecodeError:
        diff = {"redacted": diff_text}
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(row),
        "source": f"/entra-sync/targets/{target or 'none'}",
        "type": kind,
        "subject": str(row.get("identity", "")),
        "time": str(row.get("at", "")),
        "datacontenttype": "application/json",
        "correlationid": str(row.get("correlation_id", "")),
        "data": {
            "source": identity_source_of(row),
            "target": target,
            "identity": str(row.get("identity", "")),
            "target_id": str(row.get("target_id", "")),
            "action": str(row.get("action", "")),
            "outcome": str(row.get("outcome", "")),
            "diff": diff,
            "detail": str(row.get("detail", "")),
            "trigger": str(row.get("source", "")),
            "correlation_id": str(row.get("correlation_id", "")),
        },
    }


class Sink(Protocol):
    """Where the feed posts one event; a refusal or an unreachable endpoint is a TransientError."""

    async def post(self, event: Mapping[str, Any]) -> None: ...


class EventSink:
    """Posts one event to an HTTP endpoint: structured CloudEvents JSON, signed with the HMAC
    headers of :mod:`shared.alerting.signing`."""

    def __init__(self, url: Secret, key: Secret, http: httpx.AsyncClient, clock: Clock = SYSTEM):
        self.url, self.key, self.http, self.clock = url, key, http, clock

    async def post(self, event: Mapping[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
        headers |= signed_headers(self.key.reveal().encode(), int(self.clock.now()), body)
        try:
            response = await self.http.post(self.url.reveal(), content=body, headers=headers, timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise TransientError(f"the event endpoint is unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise TransientError(f"the event endpoint answered {response.status_code}")


class EventGridSink:
    """Publishes one event to an Azure Event Grid custom topic (CloudEvents 1.0 input schema)
    through the Event Grid SDK, authenticated with the topic's access key. The SDK's own retries
    are off: the feed owns retries, parking and dead-lettering, so one attempt is one request."""

    def __init__(self, url: Secret, key: Secret):
        self.url, self.key = url, key
        self._client: EventGridPublisherClient | None = None

    def _publisher(self) -> EventGridPublisherClient:
        if self._client is None:
            self._client = EventGridPublisherClient(
                self.url.reveal(), AzureKeyCredential(self.key.reveal()), retry_total=0,
                connection_timeout=TIMEOUT_S, read_timeout=TIMEOUT_S,
            )  # fmt: skip
        return self._client

    async def post(self, event: Mapping[str, Any]) -> None:
        try:
            await self._publisher().send([dict(event)])
        except HttpResponseError as exc:
            raise TransientError(f"the Event Grid topic answered {exc.status_code}") from None
        except AzureError as exc:
            raise TransientError(f"the Event Grid topic is unreachable ({type(exc).__name__})") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


@dataclass
class Pass:
    """What one publishing pass did."""

    sent: int = 0
    skipped: int = 0  # already sent (the overlap)
    parked: int = 0
    dead: int = 0
    cursor: str = ""


def _iso(epoch: float) -> str:
    return utc_text(datetime.fromtimestamp(epoch, UTC))


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def trail(audit: AuditStore, since: str, until: str) -> AsyncIterator[dict[str, Any]]:
    """The audit rows of ``since`` <= time < ``until``, oldest first (never an intent: its RowKey
    starts with ``~``, after every time)."""
    query = "RowKey ge @since and RowKey lt @until"
    rows = [dict(e) async for e in audit.table.query_entities(query, parameters={"since": since, "until": until})]
    rows.sort(key=lambda r: str(r["RowKey"]))
    for row in rows:
        yield row


class EventFeed:
    def __init__(
        self,
        audit: AuditStore,
        state: StateStore,
        sink: Sink,
        *,
        max_attempts: int = 8,
        clock: Clock = SYSTEM,
        alert: Callable[[str, str], Any] | None = None,
    ):
        self.audit, self.state, self.sink = audit, state, sink
        self.max_attempts = max_attempts
        self.clock = clock
        self.alert = alert

    async def publish(self) -> Pass:
        """One pass: the parked events that are due, then the trail from the cursor (see the module docs)."""
        done = Pass()
        await self._retry_parked(done)
        now = self.clock.now()
        cursor = (await self.state.get(*CURSOR) or {}).get("at") or _iso(now - OVERLAP_S)
        since_epoch = _epoch(cursor) - OVERLAP_S
        until_epoch = min(now - LAG_S, _epoch(cursor) + SLICE_S)
        if until_epoch <= _epoch(cursor):
            done.cursor = cursor
            return done
        since, until = _iso(since_epoch), _iso(until_epoch)
        sent = await self.state.list(SENT)
        async for row in trail(self.audit, since, until):
            event = to_event(row)
            if event is None:
                continue
            if event["id"] in sent:
                done.skipped += 1
                continue
            await self._deliver(event, 0, done)
        await self.state.put(*CURSOR, {"at": until})
        await self._forget_sent(since)
        done.cursor = until
        return done

    async def _deliver(self, event: dict[str, Any], attempts: int, done: Pass) -> bool:
        error = ""
        for attempt in range(TRIES_PER_PASS):
            try:
                await self.sink.post(event)
            except TransientError as exc:
                error = str(exc)
                if attempt + 1 < TRIES_PER_PASS:
                    await self.clock.sleep(BACKOFF_S * 2**attempt)
                continue
            await self.state.put(SENT, event["id"], {"at": event["time"]})
            await self.state.delete(PENDING, event["id"])
            done.sent += 1
            return True
        attempts += 1
        if attempts >= self.max_attempts:
            await self._dead_letter(event, attempts, error)
            done.dead += 1
        else:
            wait = PARKED_BACKOFF_S * 2 ** (attempts - 1)
            await self.state.put(
                PENDING,
                event["id"],
                {"event": event, "attempts": attempts, "due": self.clock.now() + wait, "error": error},
            )
            done.parked += 1
        return False

    async def _retry_parked(self, done: Pass) -> None:
        now = self.clock.now()
        for parked in (await self.state.list(PENDING)).values():
            if float(parked.get("due", 0)) <= now:
                await self._deliver(dict(parked["event"]), int(parked["attempts"]), done)

    async def _dead_letter(self, event: dict[str, Any], attempts: int, error: str) -> None:
        await self.state.put(DEAD, event["id"], {"event": event, "attempts": attempts, "error": error})
        await self.state.delete(PENDING, event["id"])
        await self.state.put(SENT, event["id"], {"at": event["time"], "dead": True})
        message = (
            f"the event {event['id']} ({event['type']} for {event['subject']}) was dead-lettered after {attempts} "
            f"attempts: {error}. It stays in the state store (kind {DEAD}); replay it with entra-sync events --since"
        )
        await self.audit.write(
            AuditRow(str(event.get("correlationid") or event["id"]), "events", event["id"], "events", "", "",
                     "event_dead_letter", "failed", detail=message, error=error)
        )  # fmt: skip
        if self.alert is not None:
            await self.alert(f"poison:event:{event['id']}", message)

    async def _forget_sent(self, before: str) -> None:
        """Sent ids older than the overlap are never read again."""
        await self.state.delete_older(SENT, before, limit=1000)


async def replay(audit: AuditStore, since: str, until: str | None = None) -> AsyncIterator[dict[str, Any]]:
    """The feed's events from the audit trail, oldest first, with the ids the feed gave them."""
    end = until or _iso(datetime.now(UTC).timestamp() + 1)
    async for row in trail(audit, since, end):
        event = to_event(row)
        if event is not None:
            yield event


async def post_again(audit: AuditStore, sink: Sink, since: str, until: str | None = None) -> int:
    """The feed's events of ``since`` <= time < ``until`` delivered again to ``sink``, oldest first,
    with their ids (``entra-sync events --post``); how many."""
    posted = 0
    async for event in replay(audit, since, until):
        await sink.post(event)
        posted += 1
    return posted
