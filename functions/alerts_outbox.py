"""``alerts_outbox`` (timer, every minute): what leaves entra-sync without a work item. The digests of
alert routes whose window ended (a storm's held-back alerts as one message), and the event feed's
pass over the audit trail (every effective change as a CloudEvent, at least once, from a cursor).
A fixed schedule: both are cheap when there is nothing to send, and a digest or an event should
not wait longer than a minute."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap

bp = func.Blueprint()
log = logging.getLogger("entra_sync.events")


@bp.function_name("alerts_outbox")
@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False)
async def alerts_outbox(timer: func.TimerRequest) -> None:
    app = bootstrap.app()
    await app.ensure_storage()
    digests = await app.router.flush() if app.router is not None else 0
    if app.events is None:
        if digests:
            log.info("alerts_outbox: %d digests sent", digests)
        return
    done = await app.events.publish()
    log.info(
        "alerts_outbox: %d digests sent; events: %d sent, %d already sent, %d parked, %d dead-lettered, cursor %s",
        digests, done.sent, done.skipped, done.parked, done.dead, done.cursor,
    )  # fmt: skip
