"""``health`` (HTTP GET /api/health): is this instance configured and can it reach its storage?

Settings were validated at start-up, so a running app has good settings; this checks the
dependencies that can fail later (Table and Queue Storage). It never reveals secrets or
setting values: only which check failed and the error type.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import azure.functions as func

from shared import bootstrap

bp = func.Blueprint()

CHECK_TIMEOUT_S = 5.0


async def _check(name: str, probe: Any) -> dict[str, str]:
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure of a dependency is a finding, not a crash
        return {"check": name, "status": "fail", "error": type(exc).__name__}
    return {"check": name, "status": "ok"}


async def _first_page(pager: Any) -> None:
    async for _ in pager.by_page():
        return


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    services = bootstrap.app()
    checks = await asyncio.gather(
        _check("table_storage", lambda: _first_page(services.tables.list_tables(results_per_page=1))),
        _check("queue_storage", lambda: _first_page(services.queues.list_queues(results_per_page=1))),
    )
    healthy = all(c["status"] == "ok" for c in checks)
    body = {"status": "ok" if healthy else "degraded", "checks": checks}
    return func.HttpResponse(json.dumps(body), status_code=200 if healthy else 503, mimetype="application/json")
