"""``delta_sync`` (timer, ``%DELTA_SCHEDULE%``): the safety net under change notifications.

Graph does not report missed notifications for users and groups, and notifications can be dropped,
so this reads users and groups delta from the stored links and queues every changed user and every
member whose relevant membership changed. No link yet, or an expired one (410), means a full pass
and a fresh link. Links are stored only after their items are queued: a crash replays, never skips.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap
from shared.core.work import WorkItem
from shared.services.runlog import logged_run
from shared.telemetry import correlated

bp = func.Blueprint()
log = logging.getLogger("entra_sync.delta")


@bp.function_name("delta_sync")
@bp.timer_trigger(arg_name="timer", schedule="%DELTA_SCHEDULE%", run_on_startup=False)
async def delta_sync(timer: func.TimerRequest) -> None:
    app = bootstrap.app()
    if app.source is None:
        return  # no entra source: no Graph delta to catch up with
    await app.ensure_storage()
    item = WorkItem("delta", "all", "delta", "timer")
    clog = correlated(log, item.correlation_id)
    if timer.past_due:
        clog.warning("delta_sync is running late")
    async with logged_run(app.state, "delta_sync") as run:
        outcome = await app.entra()[1].catch_up(item)
        run.detail = f"queued {outcome.enqueued} users"
    clog.info("delta catch-up queued %d users", outcome.enqueued)
