"""``risk_alert`` (HTTP POST /api/risk_alert): a risk detection pushed by a Sentinel or Logic Apps
playbook, so the response need not wait for the next ``risk_monitor`` poll.

The route is anonymous at the host level; the caller authenticates with the shared secret in the
``x-risk-alert-secret`` header (``RISK_ALERT_SECRET``, compared in constant time). Without that
setting every call is refused (fail closed). The body is a Graph ``riskDetection`` object as the
playbook received it (``id``, ``userId``, ``riskLevel``, ``riskEventType``; optionally
``riskState``, ``detectedDateTime``, ``ipAddress``). Refusals are audited and answered 401/400/413;
an accepted alert is queued for ``sync_worker`` (202): no Auth0 call happens here.
"""

from __future__ import annotations

import hmac
import logging
import uuid

import azure.functions as func

from functions.common import empty_response, text_response
from shared import bootstrap
from shared.bootstrap import App
from shared.core.work import GUID, RiskSignal, parse_json
from shared.errors import BadInput
from shared.stores.audit import AuditRow

bp = func.Blueprint()
log = logging.getLogger("entra_sync.risk")

SECRET_HEADER = "x-risk-alert-secret"  # noqa: S105 - a header name, not a secret
MAX_BODY_BYTES = 16 * 1024


async def _refuse(
    svc: App, correlation_id: str, reason: str, status: int, identity: str = "unknown"
) -> func.HttpResponse:
    log.warning("refused a risk alert: %s", reason)
    await svc.audit.write(
        AuditRow(correlation_id, "risk", "risk_alert", identity, "", "", "refuse_risk_alert", "refused", detail=reason)
    )
    return text_response(reason, status)


def _authenticated(svc: App, req: func.HttpRequest) -> str:
    """Why the caller is not authenticated, or "" when it is."""
    secret = svc.settings.risk_alert_secret
    if secret is None:
        return "RISK_ALERT_SECRET is not set: the endpoint refuses every call"
    given = req.headers.get(SECRET_HEADER)
    if not given:
        return f"missing {SECRET_HEADER} header"
    if not hmac.compare_digest(given.encode(), secret.reveal().encode()):
        return f"wrong {SECRET_HEADER}"
    return ""


def _signal(body: bytes) -> tuple[str, RiskSignal]:
    data = parse_json(body, "body")
    if not isinstance(data, dict):
        raise BadInput("body must be a riskDetection JSON object")
    user_id = data.get("userId")
    if not isinstance(user_id, str) or not GUID.fullmatch(user_id):
        raise BadInput("userId must be the Entra object id (a GUID)")
    detection_id = data.get("id")
    if not isinstance(detection_id, str):
        raise BadInput("id (the detection id) is required")
    signal = RiskSignal.from_dict(
        {
            "incident": "detection",
            "ref": detection_id,
            "level": data.get("riskLevel"),
            "event_type": data.get("riskEventType"),
            "state": data.get("riskState") or "atRisk",
            "detected_at": data.get("detectedDateTime") or "",
            "ip_address": data.get("ipAddress") or "",
        }
    )
    return user_id.lower(), signal


@bp.function_name("risk_alert")
@bp.route(route="risk_alert", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def risk_alert(req: func.HttpRequest) -> func.HttpResponse:
    svc = bootstrap.app()
    await svc.ensure_storage()
    correlation_id = uuid.uuid4().hex
    problem = _authenticated(svc, req)
    if problem:
        return await _refuse(svc, correlation_id, problem, 401)
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return await _refuse(svc, correlation_id, f"body larger than {MAX_BODY_BYTES} bytes", 413)
    try:
        user_id, signal = _signal(body)
    except BadInput as exc:
        return await _refuse(svc, correlation_id, str(exc), 400)
    if svc.risk_monitor is None:
        return await _refuse(svc, correlation_id, "the mapping names no entra source to respond for", 404)
    try:
        item = await svc.risk_monitor.enqueue_alert(user_id, signal, correlation_id)
    except Exception:
        log.exception("could not enqueue a risk alert; the playbook should retry")
        return text_response("could not enqueue; retry later", 503)
    log.info("cid=%s risk alert %s for %s queued", item.correlation_id, signal.ref, user_id)
    return empty_response(202)
