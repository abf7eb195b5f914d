"""Audit rows, and the write-ahead intent of the work under way."""

from __future__ import annotations

import heapq
import itertools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from shared.core.work import DEFAULT_SOURCE, WorkItem
from shared.redact import redact
from shared.stores.keys import BATCH_LIMIT, MAX_TEXT, encode_key, utcnow


@dataclass(frozen=True)
class AuditRow:
    correlation_id: str
    source: str  # "notification", "delta", "reconcile", "risk", "manual"
    source_ref: str  # notification/subscription id, run id, ...
    identity: str  # Entra object id
    target: str  # "auth0"
    target_id: str  # Auth0 user_id, or "" when none
    action: str
    outcome: str  # "ok", "skipped", "refused", "warning", "failed"
    diff: Mapping[str, Any] | None = None
    detail: str = ""
    error: str = ""
    at: str = field(default_factory=utcnow)  # when it happened (not when the row was written)
    # The identity source ``identity`` belongs to (a name under the mapping's sources); "" for a row
    # about no source's identity (an alert, a run). Rows written before sources were plural have no
    # such column and are Entra's (:func:`identity_source_of`).
    identity_source: str = ""

    @classmethod
    def for_item(
        cls,
        item: WorkItem,
        target: str,
        action: str,
        outcome: str,
        target_id: str = "",
        diff: Mapping[str, Any] | None = None,
        detail: str = "",
        error: str = "",
    ) -> AuditRow:
        """A row about one work item: its correlation id, source, identity and the identity's source
        carried over."""
        return cls(
            item.correlation_id, item.source, item.source_ref, item.id, target, target_id, action, outcome,
            diff, detail, error, identity_source=item.identity_source or DEFAULT_SOURCE,
        )  # fmt: skip


def identity_source_of(row: Mapping[str, Any]) -> str:
    """The identity source a stored row is about (a row written before the column existed: Entra)."""
    return str(row.get("identity_source") or DEFAULT_SOURCE)


INTENT_PREFIX: Final = "~intent~"  # RowKey of a write-ahead intent: after every audit row's time key

# Rows are ordered by RowKey: the time, then this process's write sequence, so rows of the same
# millisecond (a create and its grants on a fast target) keep the order they were written in.
_WRITTEN: Final = itertools.count()


@dataclass(frozen=True)
class AuditQuery:
    """Which audit rows an operator asks for: every given field must match (times are ISO 8601 in
    UTC as rows keep them, ``since`` included, ``until`` included); ``limit`` rows at most, the
    newest."""

    identity: str | None = None
    since: str | None = None
    until: str | None = None
    target: str | None = None
    action: str | None = None
    outcome: str | None = None
    correlation_id: str | None = None
    limit: int = 200

    def matches(self, row: Mapping[str, Any]) -> bool:
        at = str(row.get("at", ""))
        equal = (("identity", self.identity), ("target", self.target), ("action", self.action),
                 ("outcome", self.outcome), ("correlation_id", self.correlation_id))  # fmt: skip
        return (
            all(wanted is None or row.get(name) == wanted for name, wanted in equal)
            and (self.since is None or at >= self.since)
            and (self.until is None or at <= self.until)
        )


class Newest:
    """The ``limit`` newest rows (by time, then write order) of those added, holding no more than
    that many at once: a search streams its pages through it."""

    def __init__(self, limit: int):
        self.limit = limit
        self._heap: list[tuple[str, str, int, dict[str, Any]]] = []
        self._seen = itertools.count()

    def add(self, row: dict[str, Any]) -> None:
        entry = (str(row.get("at", "")), str(row.get("RowKey", "")), next(self._seen), row)
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, entry)
        elif entry > self._heap[0]:
            heapq.heapreplace(self._heap, entry)

    def rows(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [entry[3] for entry in sorted(self._heap, reverse=True)]


class AuditStore:
    """One row per decision and action; partitioned by identity, ordered by time within it.

    The partition also holds, per target, the *write-ahead intent* of the work under way: what is
    about to be written, recorded before the first target write. The audit rows of the work and the
    intent's removal are then written in one transaction (:meth:`settle`), so a worker killed between
    a target write and its audit row leaves the intent behind, and the next attempt records what the
    killed one did.
    """

    def __init__(self, table: TableClient):
        self.table = table

    @staticmethod
    def entity(row: AuditRow) -> dict[str, Any]:
        """The row as stored: keys that keep time and write order, the diff and texts redacted and capped."""
        diff = json.dumps(row.diff, sort_keys=True, default=str) if row.diff else ""
        return {
            "PartitionKey": encode_key(row.identity),
            "RowKey": f"{row.at}_{next(_WRITTEN):012d}_{uuid.uuid4().hex[:8]}",
            "at": row.at,
            "correlation_id": row.correlation_id,
            "source": row.source,
            "source_ref": row.source_ref,
            "identity": row.identity,
            "identity_source": row.identity_source,
            "target": row.target,
            "target_id": row.target_id,
            "action": row.action,
            "outcome": row.outcome,
            "diff": redact(diff)[:MAX_TEXT],
            "detail": redact(row.detail)[:MAX_TEXT],
            "error": redact(row.error)[:MAX_TEXT],
        }

    async def write(self, row: AuditRow) -> None:
        await self.table.create_entity(self.entity(row))

    async def write_many(self, rows: list[AuditRow]) -> None:
        """Rows about one identity in one round trip: a table transaction holds up to 100 operations
        of one partition (Azurite fails on more, so batches are split)."""
        await self._submit(rows, [])

    async def _submit(self, rows: list[AuditRow], deletes: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        by_partition: dict[str, list[Any]] = {}
        for key, options in deletes:  # first, so a refused delete fails the first chunk: nothing written twice
            by_partition.setdefault(key["PartitionKey"], []).append(("delete", key, options))
        for row in rows:
            entity = self.entity(row)
            by_partition.setdefault(entity["PartitionKey"], []).append(("create", entity))
        for ops in by_partition.values():
            for start in range(0, len(ops), BATCH_LIMIT):
                chunk = ops[start : start + BATCH_LIMIT]
                if len(chunk) == 1 and chunk[0][0] == "create":
                    await self.table.create_entity(chunk[0][1])
                else:
                    await self.table.submit_transaction(chunk)

    # -- write-ahead intent ------------------------------------------------------------------------

    async def write_intent(self, identity: str, target: str, intent: Mapping[str, Any]) -> str:
        """Record (or replace) the intent; returns its ETag for :meth:`settle`."""
        meta = await self.table.upsert_entity(
            {
                "PartitionKey": encode_key(identity),
                "RowKey": INTENT_PREFIX + encode_key(target),
                "value": redact(json.dumps(intent, separators=(",", ":"), default=str)),
                "at": utcnow(),
            },
            mode=UpdateMode.REPLACE,
        )
        return str(meta["etag"])

    async def read_intent(self, identity: str, target: str) -> dict[str, Any] | None:
        try:
            e = await self.table.get_entity(encode_key(identity), INTENT_PREFIX + encode_key(target))
        except ResourceNotFoundError:
            return None
        return dict(json.loads(e["value"]))

    async def settle(
        self, rows: list[AuditRow], identity: str, target: str, *, drop_intent: bool, intent_etag: str | None = None
    ) -> None:
        """The work's audit rows and, with ``drop_intent``, the removal of the intent: one transaction.

        With ``intent_etag`` only the intent this worker wrote is removed: if another worker (that
        took the lease over) has replaced it since, its intent stays and the rows are written alone.
        """
        if not drop_intent:
            await self._submit(rows, [])
            return
        key = {"PartitionKey": encode_key(identity), "RowKey": INTENT_PREFIX + encode_key(target)}
        options: dict[str, Any] = {}
        if intent_etag is not None:
            options = {"etag": intent_etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await self._submit(rows, [(key, options)])
        except (TableTransactionError, ResourceModifiedError, ResourceNotFoundError):
            await self._submit(rows, [])  # the intent is not ours (any more): keep it, record the rows

    # -- reading -----------------------------------------------------------------------------------

    async def for_identity(self, identity: str) -> list[dict[str, Any]]:
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": encode_key(identity)})
        return [dict(e) async for e in query if not str(e["RowKey"]).startswith(INTENT_PREFIX)]

    async def search(self, query: AuditQuery) -> list[dict[str, Any]]:
        """The rows ``query`` asks for, newest first: one server-side query (an identity is its
        partition, times are RowKey bounds, the other fields filters; every value a parameter, never
        pasted into the filter), read page by page, keeping only the newest ``limit``."""
        clauses = ["RowKey lt @intents"]
        params: dict[str, Any] = {"intents": INTENT_PREFIX}
        if query.identity is not None:
            clauses.append("PartitionKey eq @pk")
            params["pk"] = encode_key(query.identity)
        if query.since is not None:
            clauses.append("RowKey ge @since")
            params["since"] = query.since
        if query.until is not None:
            clauses.append("RowKey lt @until")
            params["until"] = query.until + "~"  # every row of that very moment: "<at>_<seq>" < "<at>~"
        for name in ("target", "action", "outcome", "correlation_id"):
            wanted = getattr(query, name)
            if wanted is not None:
                clauses.append(f"{name} eq @{name}")
                params[name] = wanted
        kept = Newest(query.limit)
        async for entity in self.table.query_entities(" and ".join(clauses), parameters=params, results_per_page=1000):
            kept.add(dict(entity))
        return kept.rows()

    async def all(self) -> list[dict[str, Any]]:
        rows = [dict(e) async for e in self.table.list_entities() if not str(e["RowKey"]).startswith(INTENT_PREFIX)]
        return sorted(rows, key=lambda r: str(r["RowKey"]))
