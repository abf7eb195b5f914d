"""Sync state: subscriptions, delta links, watermarks, run records, held work."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.stores.keys import decode_key, encode_key, replace_if_unchanged, utcnow


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
        await self.table.upsert_entity(_entity(kind, name, value), mode=UpdateMode.REPLACE)

    async def read(self, kind: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            e = await self.table.get_entity(encode_key(kind), encode_key(name))
        except ResourceNotFoundError:
            return None, None
        return dict(json.loads(e["value"])), str(e.metadata["etag"])

    async def put_if(self, kind: str, name: str, value: Mapping[str, Any], version: str | None) -> str | None:
        entity = _entity(kind, name, value)
        if version is not None:
            return await replace_if_unchanged(self.table, entity, version)
        try:
            meta = await self.table.create_entity(entity)
        except ResourceExistsError:
            return None
        return str(meta["etag"])

    async def delete(self, kind: str, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            await self.table.delete_entity(encode_key(kind), encode_key(name))

    async def list(self, kind: str) -> dict[str, dict[str, Any]]:
        query = self.table.query_entities("PartitionKey eq @pk", parameters={"pk": encode_key(kind)})
        return {decode_key(str(e["RowKey"])): dict(json.loads(e["value"])) async for e in query}

    async def delete_older(self, kind: str, before: str, limit: int) -> int:
        """Delete up to ``limit`` documents of ``kind`` last written before ``before`` (ISO 8601)."""
        query = self.table.query_entities(
            "PartitionKey eq @pk and updated_at lt @cutoff",
            parameters={"pk": encode_key(kind), "cutoff": before},
            select=["PartitionKey", "RowKey"],
        )
        deleted = 0
        async for entity in query:
            if deleted >= limit:
                break
            await self.table.delete_entity(entity["PartitionKey"], entity["RowKey"])
            deleted += 1
        return deleted


def _entity(kind: str, name: str, value: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "PartitionKey": encode_key(kind),
        "RowKey": encode_key(name),
        "value": json.dumps(value, separators=(",", ":"), default=str),
        "updated_at": utcnow(),
    }
