"""One work item in: the handler table picks the service for its kind, and waiting, failing and
giving up are handled alike for every kind.

* Waiting is not failing: a :class:`~shared.errors.TryLater` (a rate limit's reset, another
  worker's lease) re-schedules the item and completes the message, so no attempt is spent.
* A permanent error is audited and the message completes: retrying cannot help.
* Anything else is transient: it raises, so the host makes the message visible again; on the
  host's last attempt the error is audited and the operators alerted before it moves the message
  to the poison queue.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from shared.core.ports import Alerts, AuditStore
from shared.core.work import WorkItem
from shared.errors import PermanentError, TryLater
from shared.services.waits import Waits
from shared.stores.audit import AuditRow
from shared.telemetry import correlated

log = logging.getLogger("entra_sync.worker")

Handler = Callable[[WorkItem], Awaitable[Any]]


def describe(result: Any) -> str:
    """A log line's account of what a handler did."""
    status = getattr(result, "status", None)
    if status is None:
        return str(result)
    actions = getattr(result, "actions", None) or getattr(result, "done", None) or []
    return f"{status} {','.join(str(a) for a in actions)}".strip()


class Dispatcher:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        waits: Waits,
        audit: AuditStore,
        alerts: Alerts,
        max_dequeue_count: int,
    ):
        self.handlers = dict(handlers)
        self.waits = waits
        self.audit = audit
        self.alerts = alerts
        self.max_dequeue_count = max_dequeue_count
        # Told about every finished item (benchmarks, metrics); an observer must be quick and not raise.
        self.observers: list[Callable[[WorkItem, Any], None]] = []

    async def run(self, item: WorkItem, dequeue_count: int = 1, message_id: str = "") -> Any:
        clog = correlated(log, item.correlation_id)
        handler = self.handlers.get(item.kind)
        try:
            if handler is None:
                raise PermanentError(f"no handler for work items of kind {item.kind!r}")
            result = await handler(item)
        except PermanentError as exc:
            clog.error("%s %s failed for good: %s", item.kind, item.id, exc)
            await self.audit.write(
                AuditRow.for_item(item, item.target, "sync", "failed", error=f"{type(exc).__name__}: {exc}")
            )
            return None
        except Exception as exc:
            if isinstance(exc, TryLater) and (delay := await self.waits.defer(item, exc)) is not None:
                clog.info("%s %s waits %.0f s: %s", item.kind, item.id, delay, exc)
                return None
            if dequeue_count >= self.max_dequeue_count:
                await self._give_up(item, dequeue_count, message_id, exc)
            raise
        clog.info("%s %s from %s: %s", item.kind, item.id, item.source, describe(result))
        for observe in self.observers:
            observe(item, result)
        return result

    async def _give_up(self, item: WorkItem, attempts: int, message_id: str, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        await self.audit.write(AuditRow.for_item(item, item.target, "sync", "poisoned", error=error))
        await self.alerts.send(
            f"poison:{message_id or item.correlation_id}",
            f"gave up on the {item.kind} work item for {item.id} after {attempts} attempts: {error}. "
            f"It is in the {item.poison_queue} queue; its audit trail: entra-sync audit --identity {item.id}",
            source=item.source,
            correlation_id=item.correlation_id,
        )
