"""``graph_lifecycle`` (HTTP POST /api/graph_lifecycle): Graph lifecycle notifications.

For users and groups the only event is ``reauthorizationRequired``: it is validated like a change
notification and queued; the worker reauthorizes (or recreates) the subscription and queues a delta
catch-up for anything missed meanwhile.
"""

from __future__ import annotations

import azure.functions as func

from functions.common import accept_notifications
from shared.core.work import WorkItem
from shared.sources.graph.notifications import ParsedBatch, parse_lifecycle

bp = func.Blueprint()


def _items(batch: ParsedBatch) -> list[WorkItem]:
    return [WorkItem("subscription", sub_id, "lifecycle", event) for sub_id, event in batch.lifecycle]


@bp.function_name("graph_lifecycle")
@bp.route(route="graph_lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return await accept_notifications(req, "lifecycle", parse_lifecycle, _items)
