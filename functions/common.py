"""What the anonymous HTTP handlers share: responses, and for the two Graph handlers the handshake,
validation, auditing and enqueueing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

import azure.functions as func

from shared import bootstrap
from shared.bootstrap import App
from shared.core.work import WorkItem
from shared.sources.graph.notifications import (
    UNKNOWN_SUBSCRIPTION,
    Authenticated,
    NotificationRejected,
    ParsedBatch,
    Refusal,
    authenticate,
    summarise,
    validation_token,
)
from shared.stores.audit import AuditRow
from shared.telemetry import correlated

log = logging.getLogger("entra_sync.webhook")

Parser = Callable[[Authenticated, frozenset[str]], ParsedBatch]

# A browser must never guess a type for what these endpoints answer: a text answer can echo what
# the caller sent (the handshake token), and must not be sniffed into HTML or script.
SECURITY_HEADERS: Final = {"X-Content-Type-Options": "nosniff"}


def text_response(message: str, status: int) -> func.HttpResponse:
    return func.HttpResponse(message, status_code=status, mimetype="text/plain", headers=SECURITY_HEADERS)


def empty_response(status: int) -> func.HttpResponse:
    return func.HttpResponse(status_code=status, headers=SECURITY_HEADERS)


def handshake_response(req: func.HttpRequest) -> func.HttpResponse | None:
    """Graph's validation handshake: echo the decoded token as text/plain with 200."""
    try:
        token = validation_token(dict(req.params))
    except NotificationRejected as exc:
        return text_response(exc.reason, exc.status)
    return None if token is None else text_response(token, 200)


async def accept_notifications(
    req: func.HttpRequest, source: str, parse: Parser, to_items: Callable[[ParsedBatch], list[WorkItem]]
) -> func.HttpResponse:
    """Handshake, or: validate every item, audit refusals, enqueue the rest, answer 202.

    A batch that cannot be enqueued gets a 503 so Graph retries it whole (harmless: work items are
    level-triggered). A batch with nothing acceptable gets a 403. Whatever a request holds, its
    refusals cost one audit row and one warning.
    """
    handshake = handshake_response(req)
    if handshake is not None:
        return handshake
    svc = bootstrap.app()
    await svc.ensure_storage()
    if svc.settings.graph_client_state is None:  # no entra source: nobody may notify
        await _audit(svc, source, "this app reads no Entra ID source: no notification is expected")
        return text_response("no Entra ID source", 404)
    client_state = svc.settings.graph_client_state.reveal()
    try:
        authenticated = authenticate(req.get_body(), req.headers.get("content-type", ""), client_state)
    except NotificationRejected as exc:
        log.warning("refused a %s request: %s", source, exc.reason)
        await _audit(svc, source, exc.reason)
        return text_response(exc.reason, exc.status)
    batch = await _validate(svc, authenticated, parse)
    await audit_refusals(svc, source, batch.refused)
    items = to_items(batch)
    if batch.refused and not items:
        return text_response("no acceptable notification in the batch", 403)
    try:
        await svc.queue.send(items)
    except Exception:
        log.exception("could not enqueue %d work items; Graph will retry the batch", len(items))
        return text_response("could not enqueue; retry later", 503)
    for item in items:
        correlated(log, item.correlation_id).info(
            "%s %s queued from %s %s", item.kind, item.id, source, item.source_ref
        )
    return empty_response(202)


async def _validate(svc: App, authenticated: Authenticated, parse: Parser) -> ParsedBatch:
    """Check the authenticated items against our subscriptions.

    Storage is read only once an item proved it came from Graph, so forged items cause no I/O.
    """
    if not authenticated.items or svc.subscriptions is None:  # none: no entra source, no subscription of ours
        return parse(authenticated, frozenset())
    batch = parse(authenticated, await svc.subscriptions.known_ids())
    if any(r.reason == UNKNOWN_SUBSCRIPTION for r in batch.refused):
        # A subscription created moments ago may not be in the cache yet: look once more.
        batch = parse(authenticated, await svc.subscriptions.refresh_known())
    return batch


async def audit_refusals(svc: App, source: str, refusals: list[Refusal]) -> None:
    """A request's refused items leave one audit row and one warning, with the counts per reason and
    the unknown subscriptions (well-formed ids only, at most ten; never the clientState they
    carried): the cost of a forged batch does not grow with its size."""
    if not refusals:
        return
    detail, summary = summarise(refusals)
    log.warning("a %s request: %s", source, detail)
    subscriptions = {r.subscription_id for r in refusals}
    await _audit(svc, source, detail, diff=summary, source_ref=subscriptions.pop() if len(subscriptions) == 1 else "")


async def _audit(
    svc: App, source: str, detail: str, diff: Mapping[str, Any] | None = None, source_ref: str = ""
) -> None:
    await svc.audit.write(
        AuditRow(
            correlation_id=uuid.uuid4().hex,
            source=source,
            source_ref=source_ref,
            identity="unknown",
            target="",
            target_id="",
            action="refuse_notification",
            outcome="refused",
            diff=diff,
            detail=detail,
        )
    )
