"""``graph_webhook`` (HTTP POST /api/graph_webhook): Microsoft Graph change notifications.

Answers the validation handshake; otherwise validates every item (clientState, subscription,
resource, id), enqueues one work item per identity and answers 202. No Graph or Auth0 call happens
here: Graph wants an answer within 3 s. The route is anonymous because Graph sends no function
key; the clientState, compared in constant time, is what authenticates a notification.
"""

from __future__ import annotations

import azure.functions as func

from functions.common import accept_notifications
from shared.sources.graph.notifications import parse_changes

bp = func.Blueprint()


@bp.function_name("graph_webhook")
@bp.route(route="graph_webhook", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_webhook(req: func.HttpRequest) -> func.HttpResponse:
    return await accept_notifications(req, "notification", parse_changes, lambda batch: batch.items)
