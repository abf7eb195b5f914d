"""``risk_monitor`` (timer, ``%RISK_SCHEDULE%``): poll Entra ID Protection for new risk detections
(and, when the policy restores, risky users' state changes) and queue one ``risk`` work item per
incident for ``sync_worker``. Paced under Identity Protection's one request per second per tenant;
a 429 ends the run and the next one continues from the stored watermark."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap
from shared.services.runlog import logged_run

bp = func.Blueprint()
log = logging.getLogger("entra_sync.risk")


@bp.function_name("risk_monitor")
@bp.timer_trigger(arg_name="timer", schedule="%RISK_SCHEDULE%", run_on_startup=False)
async def risk_monitor(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("risk_monitor is running late")
    app = bootstrap.app()
    if app.source is None:
        return  # no entra source: no risk feed to read
    await app.ensure_storage()
    async with logged_run(app.state, "risk_monitor") as run:
        result = await app.entra()[3].poll()
        run.detail = (
            f"{result.detections} detections read, {result.enqueued} queued, {result.restores} restores queued"
            + (" (throttled: continuing next run)" if result.throttled else "")
        )
    log.info(
        "risk_monitor: %d detections read, %d queued, %d already queued, %d restores queued%s",
        result.detections, result.enqueued, result.duplicates, result.restores,
        " (throttled: continuing next run)" if result.throttled else "",
    )  # fmt: skip
