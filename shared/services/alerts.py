"""Alerts for the operators: what needs a person now.

A reconciliation held by the circuit breaker, a reconciliation that failed, mass changes held on
the way in, a work item given up on (moved to the poison queue). Each is routed by its kind and
severity to the channels of the mapping's ``alerts:`` section, or to ``NOTIFY_WEBHOOK_URL`` where
no route takes it (:mod:`shared.alerting.router`: once per channel and incident, a storm as a
digest), is logged as an error, and leaves an audit row (identity ``alerts``) saying whether it was
sent. Sending never raises: an alert that cannot be delivered must not turn the incident into a
second failure; the audit row and the error log carry it instead.
"""

from __future__ import annotations

import logging
from typing import Final

from shared.alerting.alert import Alert, kind_of
from shared.alerting.router import AlertRouter
from shared.stores.audit import AuditRow, AuditStore

log = logging.getLogger("entra_sync.alerts")

AUDIT_IDENTITY: Final = "alerts"
_OUTCOMES: Final = {
    "sent": "ok", "digested": "ok", "already_sent": "skipped", "not_configured": "failed", "failed": "failed",
}  # fmt: skip
RUN_KEYS: Final = frozenset({"reconcile-held", "reconcile-failed"})  # keys whose second part is a run id


class Alerts:
    def __init__(self, router: AlertRouter, audit: AuditStore):
        self.router = router
        self.audit = audit

    async def send(self, key: str, message: str, *, source: str = "alert", correlation_id: str = "") -> str:
        """Tell the operators ``message`` for incident ``key`` (once per key and channel); returns
        the delivery status: ``sent``, ``digested``, ``already_sent``, ``not_configured`` or ``failed``."""
        log.error("%s", message)
        kind, severity = kind_of(key)
        prefix, _, rest = key.partition(":")
        alert = Alert(
            key=key, kind=kind, severity=severity, title=message.split(". ")[0][:150], text=message, source=source,
            correlation_id=correlation_id, run_id=rest if prefix in RUN_KEYS else "",
            plain=f"[entra-sync] {message}",
        )  # fmt: skip
        try:
            delivery = await self.router.deliver(alert)
            status, problem = delivery.status, delivery.detail
        except Exception as exc:  # a channel is down or refuses: say so where people will look
            status, problem = "failed", f"{type(exc).__name__}: {exc}"
            log.error("the alert %s could not be sent: %s", key, problem)
        if status == "not_configured":
            problem = f"NOTIFY_WEBHOOK_URL is not set and no alerts route takes {kind}: nobody was told"
        await self.audit.write(
            AuditRow(correlation_id or key, source, key, AUDIT_IDENTITY, "", "", "alert", _OUTCOMES[status],
                     detail=message, error=problem)
        )  # fmt: skip
        return status
