"""``sync_worker`` (queue trigger on ``sync-work``): converge one identity per message.

Waiting is not failing: a rate limit whose reset is far off, or an identity another worker holds,
re-schedules the item to become visible when it may go on (the message completes, so no attempt is
spent and a rate limit never poisons anything). Transient failures (5xx, timeouts) raise, so the
host makes the message visible again and retries it; after ``maxDequeueCount`` attempts the host
moves it to ``sync-work-poison``, and the last attempt writes its error to the audit table first.
Permanent failures are audited and the message completes: retrying cannot help.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap, names
from shared.core.work import WorkItem
from shared.errors import BadInput, PermanentError, TryLater
from shared.services.risk import risk_service
from shared.stores.audit import AuditRow
from shared.telemetry import correlated

bp = func.Blueprint()
log = logging.getLogger("entra_sync.worker")

MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount (a test keeps them equal)


@bp.function_name("sync_worker")
@bp.queue_trigger(arg_name="msg", queue_name=names.WORK_QUEUE, connection="AzureWebJobsStorage")
async def sync_worker(msg: func.QueueMessage) -> None:
    svc = bootstrap.services()
    await svc.ensure_storage()
    try:
        item = WorkItem.from_json(msg.get_body())
    except BadInput as exc:
        await svc.audit.write(
            AuditRow("", "queue", str(msg.id or ""), "unknown", "", "", "refuse_work_item", "refused", detail=str(exc))
        )
        log.warning("refused a malformed work item %s: %s", msg.id, exc)
        return
    clog = correlated(log, item.correlation_id)
    try:
        if item.kind == "subscription":
            done = await svc.subscriptions.handle_lifecycle(item)
            clog.info("subscription %s %s", item.id, done)
        elif item.kind == "risk":
            risk = await risk_service(svc).handle(item)
            clog.info(
                "risk %s for %s: %s; done: %s; problems: %s; notification: %s",
                item.risk.key if item.risk else "-", item.id, risk.status,
                "; ".join(risk.done) or "-", "; ".join(risk.problems) or "-", risk.notification or "-",
            )  # fmt: skip
        else:
            outcome = await svc.sync.handle(item)
            clog.info(
                "%s %s from %s: %s %s", item.kind, item.id, item.source, outcome.status, ",".join(outcome.actions)
            )
    except PermanentError as exc:
        clog.error("%s %s failed for good: %s", item.kind, item.id, exc)
        await svc.sync.audit_failure(item, exc)
    except Exception as exc:
        if isinstance(exc, TryLater) and (delay := await svc.sync.defer(item, exc)) is not None:
            clog.info("%s %s waits %.0f s: %s", item.kind, item.id, delay, exc)
            return
        if (msg.dequeue_count or 0) >= MAX_DEQUEUE_COUNT:
            error = f"{type(exc).__name__}: {exc}"
            await svc.audit.write(
                AuditRow(
                    item.correlation_id, item.source, item.source_ref, item.id, "auth0", "", "sync", "poisoned",
                    error=error,
                )
            )  # fmt: skip
            await svc.alerts.send(
                f"poison:{msg.id or item.correlation_id}",
                f"gave up on the {item.kind} work item for {item.id} after {msg.dequeue_count} attempts: {error}. "
                f"It is in the {names.WORK_POISON_QUEUE} queue; its audit trail: entra-sync audit --identity {item.id}",
                source=item.source,
                correlation_id=item.correlation_id,
            )
        raise
