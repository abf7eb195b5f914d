"""The poison queues, for an operator: what is there, and putting each message back to work or
dropping it, audited with the operator's name.

Two queues hold what was given up on: ``sync-work-poison`` and ``sync-lane-poison``. The Functions
host moves a message there after its last delivery, and the worker puts a share there after its
last attempt. A message is named by its queue message id.

Trusted for: a replayed item goes back to the side it came from (the lane or the work queue) with
its attempts and deferrals reset, and leaves the poison queue only once it is sent; a message that
is not a work item can only be dropped (its first characters are shown, never acted on); every
replay and drop writes an audit row. Listing peeks (the service shows at most 32 messages a queue
that way); acting receives the queue in bounded rounds and puts back at once whatever it did not
act on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

from shared import names
from shared.core.ports import AuditStore, WorkQueue
from shared.core.work import WorkItem
from shared.errors import BadInput
from shared.stores.audit import AuditRow

QUEUES: Final = (names.LANE_POISON_QUEUE, names.WORK_POISON_QUEUE)
PEEK_MAX: Final = 32  # the most messages the service shows a peek
HOLD_S: Final = 30  # a received message stays hidden this long if this process dies before acting
MAX_ROUNDS: Final = 200  # receive rounds per queue and action (32 messages each)
MAX_SECONDS: Final = 120.0
RAW_SHOWN: Final = 200


@dataclass(frozen=True)
class Poisoned:
    queue: str
    id: str
    inserted: str
    dequeue_count: int
    item: WorkItem | None  # None: the message is not a work item
    raw: str = ""  # its first characters, when it is not

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue, "id": self.id, "inserted": self.inserted, "dequeue_count": self.dequeue_count,
            "item": dataclasses.asdict(self.item) if self.item is not None else None, "raw": self.raw,
        }  # fmt: skip


class PoisonQueues:
    def __init__(self, service: Any, queue: WorkQueue, audit: AuditStore):
        self.service = service
        self.queue = queue
        self.audit = audit

    def _client(self, name: str) -> Any:
        # Both policies: a message put back (update_message) is written again with its content, which
        # must stay base64 for the queue trigger.
        return self.service.get_queue_client(
            name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
        )

    async def peek(self) -> list[Poisoned]:
        """The messages a peek shows (at most 32 a queue), the lane's first, oldest first."""
        found: list[Poisoned] = []
        for name in QUEUES:
            try:
                found += [_poisoned(name, m) for m in await self._client(name).peek_messages(max_messages=PEEK_MAX)]
            except ResourceNotFoundError:
                continue
        return found

    async def replay(self, ids: Iterable[str] | None, by: str) -> list[Poisoned]:
        """Send the messages ``ids`` (None: every one) back to work; the ones replayed. A message that
        is not a work item stays (it can only be dropped)."""

        async def again(p: Poisoned) -> bool:
            if p.item is None:
                return False
            await self.queue.send([dataclasses.replace(p.item, attempt=0, deferrals=0)])
            await self._audit(p, by, "poison_replay", "sent back to work, its attempts reset")
            return True

        return await self._each(ids, again)

    async def drop(self, ids: Iterable[str] | None, by: str) -> list[Poisoned]:
        """Delete the messages ``ids`` (None: every one); the ones dropped."""

        async def gone(p: Poisoned) -> bool:
            await self._audit(p, by, "poison_drop", "dropped from the poison queue")
            return True

        return await self._each(ids, gone)

    async def _each(self, ids: Iterable[str] | None, act: Callable[[Poisoned], Awaitable[bool]]) -> list[Poisoned]:
        wanted = None if ids is None else set(ids)
        done: list[Poisoned] = []
        deadline = time.monotonic() + MAX_SECONDS
        for name in QUEUES:
            client = self._client(name)
            seen: set[str] = set()
            for _ in range(MAX_ROUNDS):
                if time.monotonic() > deadline or (wanted is not None and wanted <= {p.id for p in done}):
                    break
                try:
                    batch = [m async for m in client.receive_messages(
                        messages_per_page=PEEK_MAX, max_messages=PEEK_MAX, visibility_timeout=HOLD_S
                    )]  # fmt: skip
                except ResourceNotFoundError:
                    break
                fresh = False
                for message in batch:
                    poisoned = _poisoned(name, message)
                    if message.id not in seen and (wanted is None or message.id in wanted) and await act(poisoned):
                        await client.delete_message(message)
                        done.append(poisoned)
                    else:  # not ours to act on, or met again: visible again at once
                        await client.update_message(message, visibility_timeout=0)
                    fresh = fresh or message.id not in seen
                    seen.add(message.id)
                if not fresh:  # every message of the queue was met
                    break
        return done

    async def _audit(self, p: Poisoned, by: str, action: str, what: str) -> None:
        item = p.item
        await self.audit.write(
            AuditRow(
                correlation_id=item.correlation_id if item is not None else p.id,
                source="operator", source_ref=by,
                identity=item.id if item is not None else "operator",
                target=(item.target if item is not None else "") or "", target_id="", action=action, outcome="ok",
                detail=f"message {p.id} of {p.queue} {what} by {by}",
                identity_source=(item.identity_source if item is not None else ""),
            )
        )  # fmt: skip


def _poisoned(queue: str, message: Any) -> Poisoned:
    content = message.content if isinstance(message.content, str) else str(message.content)
    try:
        item: WorkItem | None = WorkItem.from_json(content)
        raw = ""
    except (BadInput, ValueError):
        item, raw = None, content[:RAW_SHOWN]
    inserted = message.inserted_on.isoformat(timespec="seconds") if message.inserted_on else ""
    return Poisoned(queue, str(message.id), inserted, int(message.dequeue_count or 0), item, raw)
