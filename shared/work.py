"""Work items: the only thing sources hand to the worker ("this identity may have changed").

A work item names an identity, never its data: the worker re-reads Entra, so replays, duplicates
and out-of-order deliveries are harmless. Messages are JSON, base64-encoded on the queue as the
Functions host expects by default.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from shared import names
from shared.errors import BadInput

KINDS: Final = ("user", "group", "subscription", "delta")
SOURCES: Final = ("notification", "lifecycle", "delta", "reconcile", "risk", "backfill", "manual", "group")
GUID: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_MESSAGE_BYTES: Final = 48 * 1024  # base64 of this stays under the queue's 64 KiB limit
SEND_CONCURRENCY: Final = 16
VERSION: Final = 1


@dataclass(frozen=True)
class WorkItem:
    kind: str  # "user" | "group" | "subscription" | "delta"
    id: str  # Entra object id (user, group), subscription id, or resource for "delta"
    source: str
    source_ref: str = ""  # notification subscription id, run id, ...
    correlation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    enqueued_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps({"v": VERSION, **asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkItem:
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInput(f"work item is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise BadInput("work item must be a JSON object")
        if data.get("v") != VERSION:
            raise BadInput(f"work item version {data.get('v')!r} is not {VERSION}")
        kind, ident, source = data.get("kind"), data.get("id"), data.get("source")
        if kind not in KINDS:
            raise BadInput(f"work item kind {kind!r} is not one of {', '.join(KINDS)}")
        if source not in SOURCES:
            raise BadInput(f"work item source {source!r} is not one of {', '.join(SOURCES)}")
        if not isinstance(ident, str) or not ident or len(ident) > 256:
            raise BadInput("work item id must be a non-empty string")
        if kind in {"user", "group"} and not GUID.match(ident):
            raise BadInput(f"work item {kind} id {ident!r} is not a GUID")
        return cls(
            kind=kind,
            id=ident,
            source=source,
            source_ref=str(data.get("source_ref", ""))[:256],
            correlation_id=str(data.get("correlation_id") or uuid.uuid4().hex)[:64],
            enqueued_at=float(data.get("enqueued_at") or time.time()),
        )


def user_item(entra_id: str, source: str, source_ref: str = "", correlation_id: str | None = None) -> WorkItem:
    extra: dict[str, Any] = {"correlation_id": correlation_id} if correlation_id else {}
    return WorkItem("user", entra_id, source, source_ref, **extra)


class WorkQueue:
    """Sends work items to the worker's queue (base64, as the queue trigger reads them)."""

    def __init__(self, service: QueueServiceClient, queue: str = names.WORK_QUEUE):
        self.client = service.get_queue_client(
            queue, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )

    async def send(self, items: Iterable[WorkItem]) -> int:
        """Send every item; any failure raises after all sends finished (the caller answers 5xx and
        the source retries the whole batch, which is harmless because items are level-triggered)."""
        batch = list(items)
        gate = asyncio.Semaphore(SEND_CONCURRENCY)

        async def one(item: WorkItem) -> None:
            text = item.to_json()
            if len(text) > MAX_MESSAGE_BYTES:
                raise BadInput("work item too large for a queue message")
            async with gate:
                await self.client.send_message(text)

        results = await asyncio.gather(*(one(i) for i in batch), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return len(batch)
