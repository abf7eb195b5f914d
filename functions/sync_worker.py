"""``sync_worker`` (queue trigger on ``sync-work``, bulk work): one work item per message, routed by kind.

The dispatcher (``shared.services.dispatch``) hands the item to its service and decides what a
failure means: waiting (a rate limit, a busy identity) re-schedules the item without spending an
attempt; a permanent failure is audited and the message completes; anything else raises, so the
host retries it and, after ``maxDequeueCount`` attempts, moves it to ``sync-work-poison`` (audited
and alerted first). A message that is not a work item is refused and audited.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap, names
from shared.core.work import WorkItem
from shared.errors import BadInput
from shared.stores.audit import AuditRow

bp = func.Blueprint()
log = logging.getLogger("entra_sync.worker")

MAX_DEQUEUE_COUNT = bootstrap.MAX_DEQUEUE_COUNT  # host.json extensions.queues.maxDequeueCount


@bp.function_name("sync_worker")
@bp.queue_trigger(arg_name="msg", queue_name=names.WORK_QUEUE, connection="AzureWebJobsStorage")
async def sync_worker(msg: func.QueueMessage) -> None:
    await run_message(msg)


async def run_message(msg: func.QueueMessage) -> None:
    """One queue message, from either queue: a work item to the dispatcher, anything else refused."""
    app = bootstrap.app()
    await app.ensure_storage()
    try:
        item = WorkItem.from_json(msg.get_body())
    except BadInput as exc:
        await app.audit.write(
            AuditRow("", "queue", str(msg.id or ""), "unknown", "", "", "refuse_work_item", "refused", detail=str(exc))
        )
        log.warning("refused a malformed work item %s: %s", msg.id, exc)
        return
    queue = names.LANE_QUEUE if item.in_lane else names.WORK_QUEUE
    with app.observe.work_item(item, queue):  # its span: correlation id, source, target, identity
        await app.dispatcher.run(item, msg.dequeue_count or 1, str(msg.id or ""))
