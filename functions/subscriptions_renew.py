"""``subscriptions_renew`` (timer, ``%SUBSCRIPTIONS_SCHEDULE%``): keep the users and groups
subscriptions alive, renewing each to just under Graph's 41,760-minute limit on every run."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap

bp = func.Blueprint()
log = logging.getLogger("entra_sync.subscriptions")


@bp.function_name("subscriptions_renew")
@bp.timer_trigger(arg_name="timer", schedule="%SUBSCRIPTIONS_SCHEDULE%", run_on_startup=False)
async def subscriptions_renew(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("subscriptions_renew is running late")
    svc = bootstrap.services()
    await svc.ensure_storage()
    result = await svc.subscriptions.ensure()
    for resource, sub in result.items():
        log.info("%s subscription %s valid until %s", resource, sub["id"], sub["expirationDateTime"])
