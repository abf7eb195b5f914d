"""Target health records in Table Storage, shared by every instance.

One row per target in the state table (partition ``health``; the document's shape is the state
store's, so ``StateStore.get("health", target)`` reads it too). Writes are conditional on the
version read: insert-only for the first, an ETag-guarded replace after it, so a probe claim or an
opening is taken by exactly one instance.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Final

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables.aio import TableClient

from shared.core.ports import HealthRecord
from shared.stores.keys import MAX_TEXT, encode_key, replace_if_unchanged, utcnow

PARTITION: Final = "health"
_FIELDS: Final = {f.name for f in dataclasses.fields(HealthRecord)}


def record_from(value: dict[str, Any]) -> HealthRecord:
    """A stored document as a record (fields it does not know are left out: a newer writer's)."""
    return HealthRecord(**{k: v for k, v in value.items() if k in _FIELDS})


def document(record: HealthRecord) -> str:
    value = dataclasses.asdict(record)
    value["reason"] = str(value["reason"])[:1000]
    return json.dumps(value, separators=(",", ":"))[:MAX_TEXT]


class HealthStore:
    def __init__(self, table: TableClient):
        self.table = table

    async def read(self, target: str) -> tuple[HealthRecord, str | None]:
        try:
            entity = await self.table.get_entity(encode_key(PARTITION), encode_key(target))
        except ResourceNotFoundError:
            return HealthRecord(), None
        return record_from(json.loads(entity["value"])), str(entity.metadata["etag"])

    async def write(self, target: str, record: HealthRecord, version: str | None) -> str | None:
        entity = {
            "PartitionKey": encode_key(PARTITION),
            "RowKey": encode_key(target),
            "value": document(record),
            "updated_at": utcnow(),
        }
        if version is None:
            try:
                meta = await self.table.create_entity(entity)
            except ResourceExistsError:
                return None
            return str(meta["etag"])
        return await replace_if_unchanged(self.table, entity, version)
