"""Alerts for the operators: what needs a person now.

A reconciliation held by the circuit breaker, a reconciliation that failed, mass changes held on
the way in, a work item given up on (moved to the poison queue). Each goes once per incident to
``NOTIFY_WEBHOOK_URL`` (through the :class:`~shared.services.notify.Notifier`'s claim, so a retried
function does not repeat it), is logged as an error, and leaves an audit row (identity ``alerts``)
saying whether it was sent. Sending never raises: an alert that cannot be delivered must not turn
the incident into a second failure; the audit row and the error log carry it instead.
"""

from __future__ import annotations

import logging
from typing import Final

from shared.services.notify import Notifier
from shared.stores.audit import AuditRow, AuditStore

log = logging.getLogger("entra_sync.alerts")

AUDIT_IDENTITY: Final = "alerts"
_OUTCOMES: Final = {"sent": "ok", "already_sent": "skipped", "not_configured": "failed", "failed": "failed"}


class Alerts:
    def __init__(self, notifier: Notifier, audit: AuditStore):
        self.notifier = notifier
        self.audit = audit

    async def send(self, key: str, message: str, *, source: str = "alert", correlation_id: str = "") -> str:
        """Tell the operators ``message`` for incident ``key`` (once per key); returns the delivery
        status: ``sent``, ``already_sent``, ``not_configured`` or ``failed``."""
        log.error("%s", message)
        try:
            delivery = await self.notifier.send_once(f"alert:{key}", f"[entra-sync] {message}")
            status, problem = delivery.status, delivery.detail
        except Exception as exc:  # the webhook is down or refuses: say so where people will look
            status, problem = "failed", f"{type(exc).__name__}: {exc}"
            log.error("the alert %s could not be sent: %s", key, problem)
        await self.audit.write(
            AuditRow(correlation_id or key, source, key, AUDIT_IDENTITY, "", "", "alert", _OUTCOMES[status],
                     detail=message, error=problem)
        )  # fmt: skip
        return status
