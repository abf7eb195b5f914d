"""Links: what entra-sync remembers about a source identity and its target account."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.core.model import DeprovisionState, Link
from shared.stores.keys import BATCH_LIMIT, encode_key, utcnow


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
