"""``telemetry_probe`` (timer, every minute): what is waiting now, as metrics the alert rules read.

The lane's and the work queue's oldest visible message, every queue's depth (the poison queues'
apart), each target's circuit breaker and the Graph subscriptions' hours left (``shared.observe``).
Reading them is a few storage calls; nothing is changed.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap
from shared.observe import PROBE_SCHEDULE

bp = func.Blueprint()
log = logging.getLogger("entra_sync.observe")


@bp.function_name("telemetry_probe")
@bp.timer_trigger(arg_name="timer", schedule=PROBE_SCHEDULE, run_on_startup=False)
async def telemetry_probe(timer: func.TimerRequest) -> None:
    app = bootstrap.app()
    await app.ensure_storage()
    await app.observe.probe(app)
