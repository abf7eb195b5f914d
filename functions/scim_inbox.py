"""``scim_inbox`` (HTTP, ``/api/scim/{source}/v2/...``): the inbound SCIM 2.0 endpoint Entra
provisioning pushes to, one Tenant URL per inbound source.

Anonymous at the Functions level: the source's bearer token is what authenticates a request, and
it is checked before anything else is read (:class:`shared.sources.scim_inbox.endpoint.InboxEndpoints`).
The handler only translates: the HTTP request in, the SCIM reply out.
"""

from __future__ import annotations

import azure.functions as func

from shared.sources.scim_inbox.factory import inbox

bp = func.Blueprint()

ROUTE = "scim/{source}/v2/{*path}"


@bp.function_name("scim_inbox")
@bp.route(route=ROUTE, methods=["GET", "POST", "PUT", "PATCH", "DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
async def scim_inbox(req: func.HttpRequest) -> func.HttpResponse:
    source = req.route_params.get("source", "")
    path = "/" + req.route_params.get("path", "").strip("/")
    url = req.url.split("?", 1)[0]
    base_url = url[: url.index("/v2") + 3] if "/v2" in url else url
    box = inbox()
    await box.ensure_table()
    reply = await box.endpoints.handle(
        source, req.method, path, dict(req.params), dict(req.headers), req.get_body(), base_url
    )
    return func.HttpResponse(
        reply.text or None, status_code=reply.status, headers=dict(reply.headers), mimetype="application/scim+json"
    )
