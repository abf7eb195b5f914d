"""Table Storage: links, leases, sync state and audit rows.

Keys are encoded before they reach the service: Table Storage forbids ``/ \\ # ?`` and control
characters in PartitionKey and RowKey (the SDK does not check; the service answers a bare 400 and
Azurite sometimes a 500), so any Entra id, UPN or email becomes a valid key, reversibly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared import names
from shared.clock import SYSTEM, Clock
from shared.errors import LeaseBusy, LeaseLost
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
        return _link(e, entra_id)

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
            "conflicts": json.dumps(dict(link.conflicts), sort_keys=True, default=str) if link.conflicts else "",
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

    async def count(self) -> int:
        """How many identities have a link to this target (reading keys only)."""
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": self.target}, select=["RowKey"])
        return sum([1 async for _ in query])

    async def all(self) -> AsyncIterator[Link]:
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": self.target})
        async for e in query:
            yield _link(e, str(e["entra_id"]))


def _link(e: Mapping[str, Any], entra_id: str) -> Link:
    conflicts = e.get("conflicts") or ""
    return Link(
        entra_id=entra_id,
        user_id=str(e["user_id"]),
        deprovision=DeprovisionState(e.get("deprovision", "none")),
        blocked_by_sync=bool(e.get("blocked_by_sync", False)),
        target_deleted=bool(e.get("target_deleted", False)),
        risk_locked=bool(e.get("risk_locked", False)),
        conflicts=dict(json.loads(conflicts)) if conflicts else {},
    )


# ------------------------------------------------------------------------------------------------
# Leases
# ------------------------------------------------------------------------------------------------


LEASE_TTL_S: Final = 60.0
LEASE_RENEW_EVERY_S: Final = 15.0  # a quarter of the lifetime: three renewals may fail before it lapses
# A target write starts only while at least this much of the lease is left. It exceeds the longest
# a target request may take (the clients' timeouts are shorter), so a write that starts fenced
# ends before the lease could pass to another worker.
LEASE_FENCE_MARGIN_S: Final = 25.0

log = logging.getLogger("entra_sync.storage")


@dataclass
class Lease:
    key: str
    owner: str
    etag: str
    expires_at: float  # epoch seconds, as written to the entity
    lost: bool = False  # a renewal found that another worker had taken it over


class LeaseStore:
    """One writer per identity: an expiring lease entity, taken insert-only or by an ETag-guarded
    take-over once expired, so a crashed worker cannot wedge an identity for longer than the lease's
    time to live.

    A lease taken with :meth:`held` is renewed in the background while the work runs, and every
    target write is *fenced* (:meth:`fence`): a worker whose lease lapsed (it was paused, starved or
    its renewals failed) or was taken over writes nothing more. A write already on the wire when the
    lease lapsed cannot be recalled; :meth:`fence_after_write` tells the caller to converge the
    identity again from a fresh read, so the newest state still lands last.
    """

    def __init__(
        self,
        table: TableClient,
        ttl_s: float = LEASE_TTL_S,
        partition: str = "identity",
        *,
        clock: Clock = SYSTEM,
        renew_every_s: float = LEASE_RENEW_EVERY_S,
        fence_margin_s: float = LEASE_FENCE_MARGIN_S,
    ):
        self.table = table
        self.ttl_s = ttl_s
        self.partition = partition
        self.clock = clock
        self.renew_every_s = min(renew_every_s, ttl_s / 3)
        self.fence_margin_s = min(fence_margin_s, ttl_s / 2)

    def _entity(self, key: str, owner: str, expires_at: float) -> dict[str, Any]:
        return {"PartitionKey": self.partition, "RowKey": key, "owner": owner, "expires": expires_at}

    async def try_acquire(self, identity: str, owner: str | None = None) -> Lease | None:
        owner = owner or uuid.uuid4().hex
        key = encode_key(identity)
        expires_at = self.clock.now() + self.ttl_s
        entity = self._entity(key, owner, expires_at)
        try:
            meta = await self.table.create_entity(entity)
            return Lease(key, owner, str(meta["etag"]), expires_at)
        except ResourceExistsError:
            pass
        try:
            current = await self.table.get_entity(self.partition, key)
        except ResourceNotFoundError:
            return None  # released between our two calls: the caller tries again
        if float(current.get("expires", 0)) > self.clock.now():
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
        return Lease(key, owner, str(meta["etag"]), expires_at)

    async def acquire(self, identity: str, wait_s: float = 3.0, poll_s: float = 0.05) -> Lease:
        """Wait up to ``wait_s`` for the lease, then raise :class:`LeaseBusy`."""
        deadline = time.monotonic() + wait_s
        while True:
            lease = await self.try_acquire(identity)
            if lease is not None:
                return lease
            if time.monotonic() >= deadline:
                raise LeaseBusy(f"identity {identity} is being synced by another worker", retry_after_s=5.0)
            await asyncio.sleep(poll_s)

    async def renew(self, lease: Lease) -> None:
        """Extend the lease; :class:`LeaseLost` when another worker took it over meanwhile."""
        if lease.lost:
            raise LeaseLost(f"lease {decode_key(lease.key)} was taken over by another worker", 5.0)
        expires_at = self.clock.now() + self.ttl_s
        try:
            meta = await self.table.update_entity(
                self._entity(lease.key, lease.owner, expires_at),
                mode=UpdateMode.REPLACE,
                etag=lease.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            lease.lost = True
            raise LeaseLost(f"lease {decode_key(lease.key)} was taken over by another worker", 5.0) from None
        lease.etag, lease.expires_at = str(meta["etag"]), expires_at

    def fence(self, lease: Lease) -> None:
        """Before a target write: raise :class:`LeaseLost` unless the lease is surely still ours
        (no I/O: another worker may take it over only after ``expires_at``)."""
        if lease.lost or self.clock.now() > lease.expires_at - self.fence_margin_s:
            raise LeaseLost(
                f"lease {decode_key(lease.key)} lapsed before a write; the write was not sent", retry_after_s=5.0
            )

    def fence_after_write(self, lease: Lease) -> None:
        """After a target write: raise :class:`LeaseLost` (``after_write``) if the lease may have passed
        to another worker while the write was under way."""
        if lease.lost or self.clock.now() > lease.expires_at:
            raise LeaseLost(
                f"lease {decode_key(lease.key)} lapsed while a write was under way; converging again",
                retry_after_s=5.0,
                after_write=True,
            )

    async def _keep(self, lease: Lease) -> None:
        while not lease.lost:
            await self.clock.sleep(self.renew_every_s)
            try:
                await self.renew(lease)
            except LeaseLost:
                log.warning("lease %s was taken over; its writes are fenced off", decode_key(lease.key))
                return
            except Exception as exc:  # storage trouble: the fence stops writes if renewals keep failing
                log.warning("could not renew lease %s: %s", decode_key(lease.key), type(exc).__name__)

    @contextlib.asynccontextmanager
    async def held(self, identity: str, wait_s: float = 3.0) -> AsyncIterator[Lease]:
        """The lease for the duration of the block, renewed in the background, then released."""
        lease = await self.acquire(identity, wait_s=wait_s)
        keeper = asyncio.create_task(self._keep(lease), name=f"lease:{identity}")
        try:
            yield lease
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self.release(lease)

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


INTENT_PREFIX: Final = "~intent~"  # RowKey of a write-ahead intent: after every audit row's time key


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
        await self._submit(rows, [])

    async def _submit(self, rows: list[AuditRow], deletes: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        by_partition: dict[str, list[Any]] = {}
        for key, options in deletes:  # first, so a refused delete fails the first chunk: nothing written twice
            by_partition.setdefault(key["PartitionKey"], []).append(("delete", key, options))
        for row in rows:
            entity = self._entity(row)
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

    async def all(self) -> list[dict[str, Any]]:
        rows = [dict(e) async for e in self.table.list_entities() if not str(e["RowKey"]).startswith(INTENT_PREFIX)]
        return sorted(rows, key=lambda r: str(r["RowKey"]))
