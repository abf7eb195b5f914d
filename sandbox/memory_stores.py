"""In-memory stores, work queue and alerts: the storage ports of :mod:`shared.core.ports` with no
Azure Storage behind them.

For tests and benchmarks that want the services without Azurite, and as the second implementation
each storage contract suite (``tests/contracts/``) runs against beside the Azurite-backed one. Each
mirrors what its product store does that a caller can observe (what comes back, what is refused,
what stays hidden), not how: nothing here is a table or a queue (an audit row carries the
``PartitionKey`` and ``RowKey`` the product's rows have only because their readers may look at them).

* :class:`MemoryLinks`: one target's links; stores over one ``table`` share it, each sees its own.
* :class:`MemoryLeases`: expiring leases on an injected clock, renewed while held, fenced.
* :class:`MemoryState`: JSON documents by (kind, name), stamped with the wall-clock time written.
* :func:`MemoryHealth`: the health store over a :class:`MemoryState` (records written only over the version read).
* :class:`MemoryAudit`: rows per identity in time order, and the write-ahead intents.
* :class:`MemoryQueue`: items visible from a time on the injected clock, deferrals, the poison list.
* :class:`MemoryAlerts`: once per key, the same statuses and audit rows as the product's alerts.

Values go through JSON on the way in (as they do on the wire), so a caller that keeps a reference
to what it put cannot change what is stored, and gets back what the product store would return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from shared.clock import SYSTEM, Clock
from shared.core.model import LINK_SCHEMA, Link
from shared.core.work import MAX_MESSAGE_BYTES, WorkItem
from shared.errors import BadInput, LeaseLost
from shared.redact import redact
from shared.stores.audit import AuditQuery, AuditRow, AuditStore, Newest
from shared.stores.health import HealthStore
from shared.stores.keys import decode_key, encode_key, utcnow
from shared.stores.leases import LEASE_FENCE_MARGIN_S, LEASE_RENEW_EVERY_S, LEASE_TTL_S, Lease, LeaseKeeping
from shared.stores.links import applied_from_text, applied_to_text, link_row
from shared.stores.queue import MAX_VISIBILITY_S

if TYPE_CHECKING:
    from shared.core import ports

log = logging.getLogger("entra_sync.storage")

_etags: Final = itertools.count(1)  # one sequence for every store: an etag is never reused


def _etag() -> str:
    return f"m{next(_etags)}"


def _through_json(value: Any) -> Any:
    """What a value is after a trip through storage (``default=str`` as the product stores write)."""
    return json.loads(json.dumps(value, default=str))


# ------------------------------------------------------------------------------------------------
# Links
# ------------------------------------------------------------------------------------------------


class MemoryLinks:
    """One target's links of one source, by source id. ``table`` (target, row key) -> link may be
    shared by the stores of several targets and sources, as their Table Storage partitions share
    one table; the row key is the product store's (the id, ``<source>:<id>`` beside Entra)."""

    def __init__(
        self,
        table: dict[tuple[str, str], Link] | None = None,
        *,
        target: str,
        source: str,
    ):
        self.table: dict[tuple[str, str], Link] = {} if table is None else table
        self.target = target
        self.source = source

    def _key(self, source_id: str) -> tuple[str, str]:
        encode_key(source_id)  # refuses what a table key cannot hold, as the product store does
        return self.target, link_row(self.source, source_id)

    async def get(self, source_id: str) -> Link | None:
        await asyncio.sleep(0)
        return self.table.get(self._key(source_id))

    def _stored(self, link: Link) -> Link:
        # The store's target and source are stamped on every link, in the current schema.
        return dataclasses.replace(
            link,
            conflicts=dict(_through_json(dict(link.conflicts))),
            applied=applied_from_text(applied_to_text(link.applied)),
            target=self.target,
            source=self.source,
            schema_version=LINK_SCHEMA,
        )

    async def put(self, link: Link) -> None:
        await asyncio.sleep(0)
        self.table[self._key(link.source_id)] = self._stored(link)

    async def put_many(self, links: list[Link]) -> None:
        await asyncio.sleep(0)
        for link in links:
            self.table[self._key(link.source_id)] = self._stored(link)

    async def all(self, *, applied: bool = True) -> AsyncIterator[Link]:
        for (target, _), link in sorted(self.table.items(), key=lambda row: row[0]):
            if target == self.target and link.source == self.source:
                await asyncio.sleep(0)
                yield link if applied else dataclasses.replace(link, applied=None)

    async def count(self) -> int:
        await asyncio.sleep(0)
        return sum(1 for (target, _), link in self.table.items() if (target, link.source) == (self.target, self.source))


# ------------------------------------------------------------------------------------------------
# Leases
# ------------------------------------------------------------------------------------------------


@dataclass
class _LeaseRow:
    owner: str
    etag: str
    expires: float


class MemoryLeases(LeaseKeeping):
    """One writer per key, as :class:`shared.stores.leases.LeaseStore`: a lease is free once its
    ``expires_at`` has passed on ``clock``; waiting, holding, renewing and fencing are the product's
    own (:class:`~shared.stores.leases.LeaseKeeping`). Workers share ``table`` (encoded key -> the
    lease as stored)."""

    def __init__(
        self,
        table: dict[str, _LeaseRow] | None = None,
        ttl_s: float = LEASE_TTL_S,
        *,
        clock: Clock = SYSTEM,
        renew_every_s: float = LEASE_RENEW_EVERY_S,
        fence_margin_s: float = LEASE_FENCE_MARGIN_S,
    ):
        self.table: dict[str, _LeaseRow] = {} if table is None else table
        self.ttl_s = ttl_s
        self.clock = clock
        self.renew_every_s = min(renew_every_s, ttl_s / 3)
        self.fence_margin_s = min(fence_margin_s, ttl_s / 2)

    async def try_acquire(self, key: str, owner: str | None = None) -> Lease | None:
        await asyncio.sleep(0)  # a storage round trip: other tasks run meanwhile
        row = encode_key(key)
        now = self.clock.now()
        current = self.table.get(row)
        if current is not None and current.expires > now:
            return None
        taken = _LeaseRow(owner or uuid.uuid4().hex, _etag(), now + self.ttl_s)
        self.table[row] = taken
        return Lease(row, taken.owner, taken.etag, taken.expires)

    async def renew(self, lease: Lease) -> None:
        await asyncio.sleep(0)
        current = self.table.get(lease.key)
        if lease.lost or current is None or current.etag != lease.etag:
            lease.lost = True
            raise LeaseLost(f"lease {decode_key(lease.key)} was taken over by another worker", 5.0)
        current.expires, current.etag = self.clock.now() + self.ttl_s, _etag()
        lease.etag, lease.expires_at = current.etag, current.expires

    async def release(self, lease: Lease) -> None:
        await asyncio.sleep(0)
        current = self.table.get(lease.key)
        if current is not None and current.etag == lease.etag:  # else it is another worker's now
            del self.table[lease.key]


# ------------------------------------------------------------------------------------------------
# State
# ------------------------------------------------------------------------------------------------


class MemoryState:
    """Small JSON documents by (kind, name), each stamped with the time it was written (``utcnow``,
    wall-clock, as the product store stamps its rows) for :meth:`delete_older`."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, name) -> (JSON, written at)
        self._writes = 0  # a document's version is the number of the write that stored it
        self.versions: dict[tuple[str, str], str] = {}

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        found = self.table.get((kind, name))
        return None if found is None else dict(json.loads(found[0]))

    async def put(self, kind: str, name: str, value: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)
        encode_key(kind)  # keys a table cannot hold are refused, as the product store refuses them
        encode_key(name)
        self.table[(kind, name)] = (json.dumps(value, separators=(",", ":"), default=str), utcnow())
        self._writes += 1
        self.versions[(kind, name)] = str(self._writes)

    async def read(self, kind: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        document = await self.get(kind, name)
        return document, self.versions.get((kind, name)) if document is not None else None

    async def put_if(self, kind: str, name: str, value: Mapping[str, Any], version: str | None) -> str | None:
        await asyncio.sleep(0)
        encode_key(kind)
        encode_key(name)
        stored = self.versions.get((kind, name)) if (kind, name) in self.table else None
        if stored != version:
            return None
        # The check and the write with no await between them: one writer wins, as with an ETag.
        self.table[(kind, name)] = (json.dumps(value, separators=(",", ":"), default=str), utcnow())
        self._writes += 1
        self.versions[(kind, name)] = str(self._writes)
        return self.versions[(kind, name)]

    async def delete(self, kind: str, name: str) -> None:
        await asyncio.sleep(0)
        self.table.pop((kind, name), None)
        self.versions.pop((kind, name), None)

    async def list(self, kind: str) -> dict[str, dict[str, Any]]:
        await asyncio.sleep(0)
        return {n: dict(json.loads(text)) for (k, n), (text, _) in sorted(self.table.items()) if k == kind}

    async def delete_older(self, kind: str, before: str, limit: int) -> int:
        await asyncio.sleep(0)
        old = [key for key, (_, at) in sorted(self.table.items()) if key[0] == kind and at < before]
        for key in old[: max(limit, 0)]:
            del self.table[key]
        return min(len(old), max(limit, 0))


# ------------------------------------------------------------------------------------------------
# Target health
# ------------------------------------------------------------------------------------------------


def MemoryHealth() -> HealthStore:  # named as the other in-memory stores
    """Per-target health records over an in-memory state store: the product's health store on the
    in-memory implementation of the state port, so both keep one versioning rule."""
    return HealthStore(MemoryState())


# ------------------------------------------------------------------------------------------------
# Audit
# ------------------------------------------------------------------------------------------------


@dataclass
class _Intent:
    value: str  # JSON, redacted
    etag: str
    at: str


class MemoryAudit:
    """Audit rows per identity in time order (rows of one time in the order written), and one
    write-ahead intent per (identity, target), as :class:`shared.stores.audit.AuditStore`."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []  # in the order written
        self.intents: dict[tuple[str, str], _Intent] = {}

    def _row(self, row: AuditRow) -> dict[str, Any]:
        return AuditStore.entity(row)  # the stored row exactly as the product writes it

    async def write(self, row: AuditRow) -> None:
        await asyncio.sleep(0)
        self.rows.append(self._row(row))

    async def write_many(self, rows: list[AuditRow]) -> None:
        await asyncio.sleep(0)
        self.rows.extend(self._row(row) for row in rows)

    async def write_intent(self, identity: str, target: str, intent: Mapping[str, Any]) -> str:
        await asyncio.sleep(0)
        value = redact(json.dumps(intent, separators=(",", ":"), default=str))
        stored = _Intent(value, _etag(), utcnow())
        self.intents[(identity, target)] = stored
        return stored.etag

    async def read_intent(self, identity: str, target: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        stored = self.intents.get((identity, target))
        return None if stored is None else dict(json.loads(stored.value))

    async def settle(
        self, rows: list[AuditRow], identity: str, target: str, *, drop_intent: bool, intent_etag: str | None = None
    ) -> None:
        """The rows, and with ``drop_intent`` the intent's removal, at once. With ``intent_etag`` the
        intent is removed only while it is the one written with that ETag (another worker's stays)."""
        await asyncio.sleep(0)
        stored = self.intents.get((identity, target))
        if drop_intent and stored is not None and intent_etag in (None, stored.etag):
            del self.intents[(identity, target)]
        self.rows.extend(self._row(row) for row in rows)

    async def for_identity(self, identity: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return sorted((dict(r) for r in self.rows if r["identity"] == identity), key=lambda r: str(r["at"]))

    async def search(self, query: AuditQuery) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        kept = Newest(query.limit)
        for r in self.rows:
            if query.matches(r):
                kept.add(dict(r))
        return kept.rows()

    async def all(self) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return sorted((dict(r) for r in self.rows), key=lambda r: str(r["at"]))


# ------------------------------------------------------------------------------------------------
# Work queue
# ------------------------------------------------------------------------------------------------


@dataclass
class _Message:
    visible_at: float  # on the queue's clock
    item: WorkItem
    lane: bool = False


@dataclass
class MemoryQueue:
    """The work queue, the lane and their poison queues (an item goes where
    :attr:`WorkItem.in_lane` says, as in the product's queue). An item becomes visible at a time on
    ``clock``; :meth:`visible` shows what a receive from either queue would get now, :meth:`take`
    removes it, and :meth:`in_lane` shows the lane's share."""

    clock: Clock = SYSTEM
    jitter: random.Random = field(default_factory=random.Random)
    messages: list[_Message] = field(default_factory=list)
    poisoned: list[WorkItem] = field(default_factory=list)  # both poison queues

    def _enqueue(self, item: WorkItem, delay_s: float = 0.0) -> None:
        text = item.to_json()
        if len(text) > MAX_MESSAGE_BYTES:
            raise BadInput("work item too large for a queue message")
        # What the worker will read: the item as its message carries it.
        self.messages.append(_Message(self.clock.now() + delay_s, WorkItem.from_json(text), item.in_lane))

    async def send(self, items: Iterable[WorkItem]) -> int:
        """Every item that fits is queued; the first refusal is raised after the others went."""
        await asyncio.sleep(0)
        batch = list(items)
        refused: list[Exception] = []
        for item in batch:
            try:
                self._enqueue(item)
            except BadInput as exc:
                refused.append(exc)
        if refused:
            raise refused[0]
        return len(batch)

    async def defer(self, item: WorkItem, delay_s: float) -> float:
        await asyncio.sleep(0)
        spread = self.jitter.uniform(0.5, 1.0 + min(30.0, delay_s * 0.1))
        delay = min(max(delay_s, 0.0) + spread, MAX_VISIBILITY_S)
        self._enqueue(dataclasses.replace(item, deferrals=item.deferrals + 1), delay)
        return delay

    async def poison(self, item: WorkItem) -> None:
        await asyncio.sleep(0)
        self.poisoned.append(WorkItem.from_json(item.to_json()))

    def visible(self, at: float | None = None) -> list[WorkItem]:
        """What a receive would get now (or at time ``at`` on the clock), left in place."""
        now = self.clock.now() if at is None else at
        return [m.item for m in self.messages if m.visible_at <= now]

    def in_lane(self) -> list[WorkItem]:
        """What a receive from the lane alone would get now."""
        now = self.clock.now()
        return [m.item for m in self.messages if m.lane and m.visible_at <= now]

    def take(self) -> list[WorkItem]:
        """Remove and return what is visible now."""
        now = self.clock.now()
        taken = [m.item for m in self.messages if m.visible_at <= now]
        self.messages = [m for m in self.messages if m.visible_at > now]
        return taken


# ------------------------------------------------------------------------------------------------
# Alerts
# ------------------------------------------------------------------------------------------------

ALERTS_IDENTITY: Final = "alerts"
_OUTCOME: Final = {"sent": "ok", "already_sent": "skipped", "not_configured": "failed", "failed": "failed"}


class MemoryAlerts:
    """Alerts for the operators, once per key, as :class:`shared.services.alerts.Alerts`: the
    webhook is ``delivered`` (the texts it got); ``configured=False`` is a missing webhook URL,
    ``fail_with`` one that is down (a failed key is sent by its next attempt). Each alert leaves an
    audit row (identity ``alerts``) in ``audit`` when one is given."""

    def __init__(self, audit: ports.AuditStore | None = None, *, configured: bool = True):
        self.audit = audit
        self.configured = configured
        self.fail_with: Exception | None = None
        self.delivered: list[str] = []
        self._sent: set[str] = set()

    async def send(self, key: str, message: str, *, source: str = "alert", correlation_id: str = "") -> str:
        await asyncio.sleep(0)
        problem = ""
        if not self.configured:
            status, problem = "not_configured", "NOTIFY_WEBHOOK_URL is not set: the security team was not told"
        elif key in self._sent:
            status = "already_sent"
        elif self.fail_with is not None:
            status, problem = "failed", f"{type(self.fail_with).__name__}: {self.fail_with}"
        else:
            self.delivered.append(f"[entra-sync] {message}")
            self._sent.add(key)
            status = "sent"
        if self.audit is not None:
            await self.audit.write(
                AuditRow(correlation_id or key, source, key, ALERTS_IDENTITY, "", "", "alert", _OUTCOME[status],
                         detail=message, error=problem)
            )  # fmt: skip
        return status


if TYPE_CHECKING:  # each class is its port, as mypy sees it
    _links: ports.LinkStore = MemoryLinks(target="auth0", source="entra")
    _leases: ports.LeaseStore = MemoryLeases()
    _state: ports.StateStore = MemoryState()
    _audit: ports.AuditStore = MemoryAudit()
    _queue: ports.WorkQueue = MemoryQueue()
    _alerts: ports.Alerts = MemoryAlerts()
