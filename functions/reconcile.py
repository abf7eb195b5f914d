"""``reconcile`` (timer, ``%RECONCILE_SCHEDULE%``, e.g. nightly): prove both sides agree.

Classifies drift for every identity, queues the mapping's safe classes for the worker, writes the
JSON, CSV and HTML report (its provenance gives "timer" as trigger and operator), and holds
(alerts, waits for ``entra-sync approve <run>``) a run that would block or delete more managed
users than the circuit breaker allows.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap
from shared.core.drift import Provenance
from shared.services.reconcile import ReconcileFailed, reconcile_every
from shared.services.report import provenance

bp = func.Blueprint()
log = logging.getLogger("entra_sync.reconcile")


@bp.function_name("reconcile")
@bp.timer_trigger(arg_name="timer", schedule="%RECONCILE_SCHEDULE%", run_on_startup=False)
async def reconcile(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("reconcile is running late")
    app = bootstrap.app()
    await app.ensure_storage()

    def origin(target: str) -> Provenance:  # the nightly run: no person started it
        return provenance(app.mapping, target, settings=app.settings, trigger="timer", operator="timer")

    try:
        summaries = await reconcile_every(app.reconcilers, "apply", provenance=origin)
    except ReconcileFailed:
        app.observe.reconciled("*", "failed")  # each failure is recorded, reported and alerted already
        raise
    for summary in summaries:
        app.observe.reconciled(summary.target, summary.status)
        log.info(
            "reconciliation %s of %s %s: %s; enqueued %d, held %d",
            summary.run_id, summary.target, summary.status, summary.counts or "in sync", summary.enqueued,
            summary.held,
        )  # fmt: skip
