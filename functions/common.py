"""What the two Graph HTTP handlers share: the handshake, validation, auditing and enqueueing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable

import azure.functions as func

from shared import bootstrap
from shared.bootstrap import Services
from shared.notifications import NotificationRejected, ParsedBatch, Refusal, validation_token
from shared.storage import AuditRow
from shared.telemetry import correlated
from shared.work import WorkItem

log = logging.getLogger("entra_sync.webhook")

Parser = Callable[[bytes, str, str, frozenset[str]], ParsedBatch]


def _text(message: str, status: int) -> func.HttpResponse:
    return func.HttpResponse(message, status_code=status, mimetype="text/plain")


def handshake_response(req: func.HttpRequest) -> func.HttpResponse | None:
    """Graph's validation handshake: echo the decoded token as text/plain with 200."""
    try:
        token = validation_token(dict(req.params))
    except NotificationRejected as exc:
        return _text(exc.reason, exc.status)
    return None if token is None else _text(token, 200)


async def accept_notifications(
    req: func.HttpRequest, source: str, parse: Parser, to_items: Callable[[ParsedBatch], list[WorkItem]]
) -> func.HttpResponse:
    """Handshake, or: validate every item, audit refusals, enqueue the rest, answer 202.

    A batch that cannot be enqueued gets a 503 so Graph retries it whole (harmless: work items are
    level-triggered). A batch with nothing acceptable gets a 403.
    """
    handshake = handshake_response(req)
    if handshake is not None:
        return handshake
    svc = bootstrap.services()
    await svc.ensure_storage()
    client_state = svc.settings.graph_client_state.reveal()
    body, content_type = req.get_body(), req.headers.get("content-type", "")
    try:
        batch = parse(body, content_type, client_state, await svc.subscriptions.known_ids())
        if any(r.reason == "unknown subscription" for r in batch.refused):
            # A subscription created moments ago may not be in the cache yet: look once more.
            batch = parse(body, content_type, client_state, await svc.subscriptions.refresh_known())
    except NotificationRejected as exc:
        await audit_refusals(svc, source, [Refusal(exc.reason)])
        return _text(exc.reason, exc.status)
    await audit_refusals(svc, source, batch.refused)
    items = to_items(batch)
    if batch.refused and not items:
        return _text("no acceptable notification in the batch", 403)
    try:
        await svc.work_queue.send(items)
    except Exception:
        log.exception("could not enqueue %d work items; Graph will retry the batch", len(items))
        return _text("could not enqueue; retry later", 503)
    for item in items:
        correlated(log, item.correlation_id).info(
            "%s %s queued from %s %s", item.kind, item.id, source, item.source_ref
        )
    return func.HttpResponse(status_code=202)


async def audit_refusals(svc: Services, source: str, refusals: Iterable[Refusal]) -> None:
    """Every refused notification leaves an audit row (never the clientState it carried)."""
    correlation = uuid.uuid4().hex
    for refusal in refusals:
        log.warning("refused a %s: %s", source, refusal.reason)
        await svc.audit.write(
            AuditRow(
                correlation_id=correlation,
                source=source,
                source_ref=refusal.subscription_id,
                identity=refusal.identity,
                target="",
                target_id="",
                action="refuse_notification",
                outcome="refused",
                detail=refusal.reason,
            )
        )
