"""``sync_lane`` (queue trigger on ``sync-lane``): the same work as ``sync_worker``, from the lane.

Items someone is waiting on (a change notification, a leaver, a risk response, a lifecycle event,
an operator's command) are sent to the lane; bulk work (backfill, reconciliation repairs, delta
passes) to ``sync-work``. Two queues, two functions: the host polls and scales each on its own, so a
10,000-user backfill never sits in front of a leaver. Failures are handled exactly as in
``sync_worker``; after ``maxDequeueCount`` attempts a message moves to ``sync-lane-poison``.
"""

from __future__ import annotations

import azure.functions as func

from functions.sync_worker import run_message
from shared import names

bp = func.Blueprint()


@bp.function_name("sync_lane")
@bp.queue_trigger(arg_name="msg", queue_name=names.LANE_QUEUE, connection="AzureWebJobsStorage")
async def sync_lane(msg: func.QueueMessage) -> None:
    await run_message(msg)
