"""Target health records, shared by every instance: one document per target in the state store
(kind ``health``), written only over the version read (:meth:`StateStore.put_if`: insert-only for
the first, an ETag-guarded replace after it), so a probe claim or an opening is taken by exactly one
instance. It works over any implementation of the state port: Table Storage in production, memory
in tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from shared.core.ports import HealthRecord, StateStore

PARTITION: Final = "health"
MAX_REASON: Final = 1000
_FIELDS: Final = {f.name for f in dataclasses.fields(HealthRecord)}


def record_from(value: dict[str, Any]) -> HealthRecord:
    """A stored document as a record (fields it does not know are left out: a newer writer's)."""
    return HealthRecord(**{k: v for k, v in value.items() if k in _FIELDS})


def document(record: HealthRecord) -> dict[str, Any]:
    value = dataclasses.asdict(record)
    value["reason"] = str(value["reason"])[:MAX_REASON]
    return value


class HealthStore:
    def __init__(self, state: StateStore):
        self.state = state

    async def read(self, target: str) -> tuple[HealthRecord, str | None]:
        value, version = await self.state.read(PARTITION, target)
        return record_from(value or {}), version

    async def write(self, target: str, record: HealthRecord, version: str | None) -> str | None:
        return await self.state.put_if(PARTITION, target, document(record), version)
