"""Table Storage: links, leases, sync state and audit rows.

Keys are encoded before they reach the service: Table Storage forbids ``/ \\ # ?`` and control
characters in PartitionKey and RowKey (the SDK does not check; the service answers a bare 400 and
Azurite sometimes a 500), so any Entra id, UPN or email becomes a valid key, reversibly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared import names
from shared.model import DeprovisionState, Link
from shared.redact import redact
from shared.work import WorkItem

_FORBIDDEN: Final = (
    frozenset("/\\#?%") | frozenset(chr(c) for c in range(0x20)) | frozenset(chr(c) for c in range(0x7F, 0xA0))
)
MAX_TEXT: Final = 30_000  # a string property holds 64 KiB of UTF-16; keep well inside it
BATCH_LIMIT: Final = 100  # operations in one table transaction (Azurite crashes past it)


def encode_key(value: str) -> str:
    """Make ``value`` a valid PartitionKey/RowKey: forbidden characters (and ``%``) become ``%XX``."""
    if not value:
        raise ValueError("a table key cannot be empty")
    out = "".join(f"%{ord(ch):02X}" if ch in _FORBIDDEN else ch for ch in value)
    if len(out.encode("utf-16-le")) > 2048:  # the service's 1 KiB limit is in UTF-16 characters
        raise ValueError("a table key is limited to 1 KiB")
    return out


def decode_key(key: str) -> str:
    out, i = [], 0
    while i < len(key):
        if key[i] == "%":
            out.append(chr(int(key[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(key[i])
            i += 1
    return "".join(out)


def odata_string(value: str) -> str:
    """An OData string literal for a table filter: quotes doubled, whole value quoted."""
    return "'" + value.replace("'", "''") + "'"


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def ensure_tables(service: TableServiceClient, tables: tuple[str, ...] = names.TABLES) -> None:
    for table in tables:
        with contextlib.suppress(ResourceExistsError):
            await service.create_table(table)


# ------------------------------------------------------------------------------------------------
# Links
# ------------------------------------------------------------------------------------------------


class LinkStore:
    """Entra object id -> target account, one partition per target system."""

    def __init__(self, table: TableClient, target: str = "auth0"):
        self.table = table
        self.target = target

    async def get(self, entra_id: str) -> Link | None:
        try:
            e = await self.table.get_entity(self.target, encode_key(entra_id))
        except ResourceNotFoundError:
            return None
        return Link(
            entra_id=entra_id,
            user_id=str(e["user_id"]),
            deprovision=DeprovisionState(e.get("deprovision", "none")),
            blocked_by_sync=bool(e.get("blocked_by_sync", False)),
            target_deleted=bool(e.get("target_deleted", False)),
            risk_locked=bool(e.get("risk_locked", False)),
        )

    def _entity(self, link: Link) -> dict[str, Any]:
        return {
            "PartitionKey": self.target,
            "RowKey": encode_key(link.entra_id),
            "entra_id": link.entra_id,
            "user_id": link.user_id,
            "deprovision": link.deprovision.value,
            "blocked_by_sync": link.blocked_by_sync,
            "target_deleted": link.target_deleted,
            "risk_locked": link.risk_locked,
            "updated_at": utcnow(),
        }

    async def put(self, link: Link) -> None:
        await self.table.upsert_entity(self._entity(link), mode=UpdateMode.REPLACE)

    async def put_many(self, links: list[Link]) -> None:
        """Write many links in batch transactions (one partition, at most 100 operations each)."""
        for start in range(0, len(links), BATCH_LIMIT):
            chunk = links[start : start + BATCH_LIMIT]
            await self.table.submit_transaction(
                [("upsert", self._entity(link), {"mode": UpdateMode.REPLACE}) for link in chunk]
            )

    async def all(self) -> AsyncIterator[Link]:
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": self.target})
        async for e in query:
            yield Link(
                entra_id=str(e["entra_id"]),
                user_id=str(e["user_id"]),
                deprovision=DeprovisionState(e.get("deprovision", "none")),
                blocked_by_sync=bool(e.get("blocked_by_sync", False)),
                target_deleted=bool(e.get("target_deleted", False)),
                risk_locked=bool(e.get("risk_locked", False)),
            )


# ------------------------------------------------------------------------------------------------
# Leases
# ------------------------------------------------------------------------------------------------


class LeaseBusy(Exception):
    """Another worker holds the identity's lease; the message is retried later."""


@dataclass
class Lease:
    key: str
    owner: str
    etag: str


class LeaseStore:
    """One lease per identity: insert-only create, or an ETag-guarded take-over once expired, so a
    crashed worker cannot wedge an identity for longer than the lease's time to live."""

    def __init__(self, table: TableClient, ttl_s: float = 60.0, partition: str = "identity"):
        self.table = table
        self.ttl_s = ttl_s
        self.partition = partition

    async def try_acquire(self, identity: str, owner: str | None = None) -> Lease | None:
        owner = owner or uuid.uuid4().hex
        key = encode_key(identity)
        entity = {
            "PartitionKey": self.partition,
            "RowKey": key,
            "owner": owner,
            "expires": time.time() + self.ttl_s,
        }
        try:
            meta = await self.table.create_entity(entity)
            return Lease(key, owner, str(meta["etag"]))
        except ResourceExistsError:
            pass
        try:
            current = await self.table.get_entity(self.partition, key)
        except ResourceNotFoundError:
            return None  # released between our two calls: the caller tries again
        if float(current.get("expires", 0)) > time.time():
            return None
        try:
            meta = await self.table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None  # another worker took it over first
        return Lease(key, owner, str(meta["etag"]))

    async def acquire(self, identity: str, wait_s: float = 3.0, poll_s: float = 0.05) -> Lease:
        """Wait up to ``wait_s`` for the lease, then raise :class:`LeaseBusy`."""
        deadline = time.monotonic() + wait_s
        while True:
            lease = await self.try_acquire(identity)
            if lease is not None:
                return lease
            if time.monotonic() >= deadline:
                raise LeaseBusy(f"identity {identity} is being synced by another worker")
            await asyncio.sleep(poll_s)

    async def release(self, lease: Lease) -> None:
        # If it expired and another worker took it over, it is theirs now: nothing to release.
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            await self.table.delete_entity(
                self.partition, lease.key, etag=lease.etag, match_condition=MatchConditions.IfNotModified
            )


# ------------------------------------------------------------------------------------------------
# Sync state (subscriptions, delta links, watermarks)
# ------------------------------------------------------------------------------------------------


class StateStore:
    def __init__(self, table: TableClient):
        self.table = table

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            e = await self.table.get_entity(encode_key(kind), encode_key(name))
        except ResourceNotFoundError:
            return None
        return dict(json.loads(e["value"]))

    async def put(self, kind: str, name: str, value: Mapping[str, Any]) -> None:
        await self.table.upsert_entity(
            {
                "PartitionKey": encode_key(kind),
                "RowKey": encode_key(name),
                "value": json.dumps(value, separators=(",", ":"), default=str),
                "updated_at": utcnow(),
            },
            mode=UpdateMode.REPLACE,
        )

    async def delete(self, kind: str, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            await self.table.delete_entity(encode_key(kind), encode_key(name))

    async def list(self, kind: str) -> dict[str, dict[str, Any]]:
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": encode_key(kind)})
        return {decode_key(str(e["RowKey"])): dict(json.loads(e["value"])) async for e in query}


# ------------------------------------------------------------------------------------------------
# Audit
# ------------------------------------------------------------------------------------------------


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
        """A row about one work item: its correlation id, source and identity carried over."""
        return cls(
            item.correlation_id, item.source, item.source_ref, item.id, target, target_id, action, outcome,
            diff, detail, error,
        )  # fmt: skip


class AuditStore:
    """One row per decision and action; partitioned by identity, ordered by time within it."""

    def __init__(self, table: TableClient):
        self.table = table

    @staticmethod
    def _entity(row: AuditRow) -> dict[str, Any]:
        diff = json.dumps(row.diff, sort_keys=True, default=str) if row.diff else ""
        return {
            "PartitionKey": encode_key(row.identity),
            "RowKey": f"{row.at}_{uuid.uuid4().hex[:12]}",
            "at": row.at,
            "correlation_id": row.correlation_id,
            "source": row.source,
            "source_ref": row.source_ref,
            "identity": row.identity,
            "target": row.target,
            "target_id": row.target_id,
            "action": row.action,
            "outcome": row.outcome,
            "diff": redact(diff)[:MAX_TEXT],
            "detail": redact(row.detail)[:MAX_TEXT],
            "error": redact(row.error)[:MAX_TEXT],
        }

    async def write(self, row: AuditRow) -> None:
        await self.table.create_entity(self._entity(row))

    async def write_many(self, rows: list[AuditRow]) -> None:
        """Rows about one identity in one round trip: a table transaction holds up to 100 operations
        of one partition (Azurite fails on more, so batches are split)."""
        by_partition: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            entity = self._entity(row)
            by_partition.setdefault(entity["PartitionKey"], []).append(entity)
        for entities in by_partition.values():
            for start in range(0, len(entities), 100):
                chunk = entities[start : start + 100]
                if len(chunk) == 1:
                    await self.table.create_entity(chunk[0])
                else:
                    await self.table.submit_transaction([("create", e) for e in chunk])

    async def for_identity(self, identity: str) -> list[dict[str, Any]]:
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": encode_key(identity)})
        return [dict(e) async for e in query]

    async def all(self) -> list[dict[str, Any]]:
        rows = [dict(e) async for e in self.table.list_entities()]
        return sorted(rows, key=lambda r: str(r["RowKey"]))
