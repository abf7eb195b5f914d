"""Links: what entra-sync remembers about a source identity and its account in one target.

One partition per target (its name: ``auth0``, ``scim:hr-app``), one row per source identity.
Rows are written in the link schema 2 (neutral names: ``source_id``, ``target_id``,
``disabled_by_sync``); rows written before it (``entra_id``, ``user_id``, ``blocked_by_sync``) are
read as they are and take the new form the next time the link changes, so no migration has to run.
A link also remembers what was last applied to its account (``applied``, JSON): rows without it are
planned from a read of the target, as before, and gain it with their next change.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.core.model import LINK_SCHEMA, DeprovisionState, LastApplied, Link
from shared.core.work import DEFAULT_SOURCE
from shared.stores.keys import BATCH_LIMIT, encode_key, utcnow

# A Table Storage string property holds 64 KiB (32K UTF-16 characters): a snapshot past this is
# not kept (the next change reads the target, as without one).
MAX_APPLIED_CHARS = 30_000
# What a link is read from, but its memory of the last write (``applied``); both schemas' names.
LISTED_WITHOUT_APPLIED = (
    "source_id", "target_id", "entra_id", "user_id", "deprovision", "disabled_by_sync", "blocked_by_sync",
    "target_deleted", "risk_locked", "conflicts", "schema_version", "source",
)  # fmt: skip


def link_row(source: str, source_id: str) -> str:
    """A link's row in its target's partition: Entra, the first source, keys rows by the object id
    alone (as before link schema 2); every other source by ``<source>:<id>``, so two sources' ids
    never meet (a target's source may change in the mapping; the old links stay the old source's)."""
    return source_id if source == DEFAULT_SOURCE else f"{source}:{source_id}"


def applied_to_text(applied: LastApplied | None) -> str:
    """How a link's :class:`LastApplied` is stored: JSON, or "" for none (or one too large to keep)."""
    if applied is None:
        return ""
    text = json.dumps(
        {
            "values": dict(applied.values),
            "entitlements": None if applied.entitlements is None else sorted(applied.entitlements),
            "managed": sorted(applied.managed),
            "active": applied.active,
        },
        sort_keys=True,
        default=str,
        separators=(",", ":"),
    )
    return text if len(text) <= MAX_APPLIED_CHARS else ""


def applied_from_text(text: str) -> LastApplied | None:
    """The stored form read back; anything unreadable is no snapshot (the target is read instead)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        held = data["entitlements"]
        return LastApplied(
            values=dict(data["values"]),
            entitlements=None if held is None else frozenset(str(e) for e in held),
            managed=frozenset(str(e) for e in data["managed"]),
            active=bool(data["active"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


class LinkStore:
    def __init__(self, table: TableClient, target: str, source: str):
        self.table = table
        self.target = target
        self.source = source
        self._partition = encode_key(target)

    def _row(self, source_id: str) -> str:
        return encode_key(link_row(self.source, source_id))

    def _mine(self, e: Mapping[str, Any]) -> bool:
        """Whether a row of the target's partition is this source's (a row without a source is Entra's)."""
        return (e.get("source") or DEFAULT_SOURCE) == self.source

    async def get(self, source_id: str) -> Link | None:
        try:
            e = await self.table.get_entity(self._partition, self._row(source_id))
        except ResourceNotFoundError:
            return None
        return self._link(e)

    def _entity(self, link: Link) -> dict[str, Any]:
        return {
            "PartitionKey": self._partition,
            "RowKey": self._row(link.source_id),
            "schema_version": LINK_SCHEMA,
            "source": self.source,
            "source_id": link.source_id,
            "target": self.target,
            "target_id": link.target_id,
            "deprovision": link.deprovision.value,
            "disabled_by_sync": link.disabled_by_sync,
            "target_deleted": link.target_deleted,
            "risk_locked": link.risk_locked,
            "conflicts": json.dumps(dict(link.conflicts), sort_keys=True, default=str) if link.conflicts else "",
            "applied": applied_to_text(link.applied),
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
        query = self.table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": self._partition}, select=["RowKey", "source"]
        )
        return sum([1 async for e in query if self._mine(e)])

    async def all(self, *, applied: bool = True) -> AsyncIterator[Link]:
        """Every link of the target, in row key order. ``applied=False``: without the memory of the
        last write (not even transferred), for a reader that reads the target anyway."""
        select = None if applied else list(LISTED_WITHOUT_APPLIED)
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": self._partition}, select=select)
        async for e in query:
            if self._mine(e):
                yield self._link({k: v for k, v in e.items() if v is not None})

    def _link(self, e: Mapping[str, Any]) -> Link:
        conflicts = e.get("conflicts") or ""
        old = "user_id" in e and "target_id" not in e  # a row from before link schema 2
        return Link(
            source_id=str(e["entra_id"] if old else e["source_id"]),
            target_id=str(e["user_id"] if old else e["target_id"]),
            target=self.target,
            source=self.source,
            deprovision=DeprovisionState(e.get("deprovision", "none")),
            disabled_by_sync=bool(e.get("blocked_by_sync" if old else "disabled_by_sync", False)),
            target_deleted=bool(e.get("target_deleted", False)),
            risk_locked=bool(e.get("risk_locked", False)),
            conflicts=dict(json.loads(conflicts)) if conflicts else {},
            applied=applied_from_text(str(e.get("applied") or "")),
            schema_version=int(e.get("schema_version", 1)),
        )
