"""The inbound store's rows: one partition per inbound source, written in atomic batches.

:class:`Rows` is the port (rows by key, a prefix scan, an all-or-nothing commit of a few writes
with conditions); :class:`TableRows` keeps them in Azure Table Storage (one table, the source's name
as the PartitionKey, so a batch is one entity-group transaction), and
:class:`sandbox.memory_inbox.MemoryRows` in memory. What the rows mean (users, groups, memberships,
the uniqueness index) is :mod:`.storage`'s, written once over either.

Trusted for: a commit either applies every operation or none; a ``replace`` or ``delete`` with an
etag applies only to that version; an ``insert`` only where no row is. Keys are encoded with
:func:`shared.stores.keys.encode_key` before they reach the service.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import EdmType, EntityProperty, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient

from shared.stores.keys import BATCH_LIMIT, decode_key, encode_key, odata_string

TABLE: Final = "scimInbox"

Verb = Literal["insert", "replace", "upsert", "delete"]


@dataclass(frozen=True)
class Row:
    key: str
    data: Mapping[str, Any]
    etag: str


@dataclass(frozen=True)
class Op:
    """One write of a commit. ``etag`` (replace, delete): only that version; None: any."""

    verb: Verb
    key: str
    data: Mapping[str, Any] = field(default_factory=dict)
    etag: str | None = None


class Conflict(Exception):
    """A commit's condition did not hold (a row exists, or is not the version named, or is gone):
    nothing of the commit was written. ``key``: the operation's row, when the store can tell."""

    def __init__(self, key: str | None):
        super().__init__(f"conflict on {key or 'a row'}")
        self.key = key


class Rows(Protocol):
    """One inbound source's rows."""

    async def get(self, key: str) -> Row | None: ...

    def scan(self, prefix: str, *, changed_after: int | None = None) -> AsyncIterator[list[Row]]:
        """Every row whose key starts with ``prefix`` (those whose ``changed`` is greater than
        ``changed_after``, when given), a page at a time, in key order."""

    async def commit(self, ops: Sequence[Op]) -> None:
        """Apply every op or none (at most :data:`BATCH_LIMIT`); :class:`Conflict` when one fails."""


class TableRows:
    """:class:`Rows` in one Table Storage partition. A row's data is one JSON property (``doc``)
    beside the two it is filtered on (``changed``, milliseconds), so what the SCIM side stores is
    never limited by Table Storage's property types."""

    PAGE: Final = 500

    def __init__(self, table: TableClient, partition: str):
        self.table = table
        self.partition = encode_key(partition)

    async def get(self, key: str) -> Row | None:
        try:
            entity = await self.table.get_entity(self.partition, encode_key(key))
        except ResourceNotFoundError:
            return None
        return _row(entity)

    async def scan(self, prefix: str, *, changed_after: int | None = None) -> AsyncIterator[list[Row]]:
        low = encode_key(prefix)
        high = low + "\uffff"  # every key that starts with ``low`` sorts below it
        query = (
            f"PartitionKey eq {odata_string(self.partition)} and RowKey ge {odata_string(low)}"
            f" and RowKey lt {odata_string(high)}"
        )
        if changed_after is not None:
            query += f" and changed gt {int(changed_after)}L"
        pages = self.table.query_entities(query, results_per_page=self.PAGE).by_page()
        try:
            async for page in pages:
                rows = [_row(entity) async for entity in page]
                if rows:
                    yield rows
        except ResourceNotFoundError:  # no table yet: nothing was ever pushed, the store is empty
            return

    async def commit(self, ops: Sequence[Op]) -> None:
        if not ops:
            return
        if len(ops) > BATCH_LIMIT:
            raise ValueError(f"a commit holds at most {BATCH_LIMIT} operations")
        if len(ops) == 1 and ops[0].verb != "delete":  # the SDK's delete_entity passes over a missing row
            await self._one(ops[0])
            return
        batch: list[Any] = []
        for op in ops:
            entity = self._entity(op)
            condition = (
                {"etag": op.etag, "match_condition": MatchConditions.IfNotModified} if op.etag is not None else {}
            )
            if op.verb == "insert":
                batch.append(("create", entity))
            elif op.verb == "upsert":
                batch.append(("upsert", entity, {"mode": UpdateMode.REPLACE}))
            elif op.verb == "replace":
                batch.append(("update", entity, {"mode": UpdateMode.REPLACE, **condition}))
            else:
                batch.append(("delete", entity, condition))
        try:
            await self.table.submit_transaction(batch)
        except TableTransactionError as exc:
            index = getattr(exc, "index", None)
            key = ops[index].key if isinstance(index, int) and 0 <= index < len(ops) else None
            raise Conflict(key) from exc

    async def _one(self, op: Op) -> None:
        """One write on its own: the entity call itself, not a one-operation batch (a batch is a
        multipart request that costs the client several times the CPU)."""
        entity = self._entity(op)
        match = MatchConditions.IfNotModified if op.etag is not None else MatchConditions.Unconditionally
        try:
            if op.verb == "insert":
                await self.table.create_entity(entity)
            elif op.verb == "upsert":
                await self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)
            else:
                await self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=op.etag, match_condition=match)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise Conflict(op.key) from exc
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                raise Conflict(op.key) from exc
            raise

    def _entity(self, op: Op) -> dict[str, Any]:
        """The entity an operation writes: its row in this partition, the data as one JSON property."""
        changed = op.data.get("changed")
        entity: dict[str, Any] = {
            "PartitionKey": self.partition,
            "RowKey": encode_key(op.key),
            "doc": json.dumps(dict(op.data), separators=(",", ":")),
        }
        if isinstance(changed, int):
            entity["changed"] = EntityProperty(changed, EdmType.INT64)
        return entity


def _row(entity: Mapping[str, Any]) -> Row:
    etag = str(getattr(entity, "metadata", {}).get("etag", ""))
    return Row(decode_key(str(entity["RowKey"])), json.loads(entity["doc"]), etag)
