"""``subscriptions_renew`` (timer, ``%SUBSCRIPTIONS_SCHEDULE%``): keep the users and groups
subscriptions alive, renewing each to just under Graph's 41,760-minute limit on every run.

Every run (the first is right after a deployment) also checks that each group the mapping file
names exists in Entra ID: a missing one is logged as an error and audited, naming its entry."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap
from shared.errors import TransientError
from shared.services.runlog import logged_run
from shared.sources.graph.groups import report_mapping_group_problems

bp = func.Blueprint()
log = logging.getLogger("entra_sync.subscriptions")


@bp.function_name("subscriptions_renew")
@bp.timer_trigger(arg_name="timer", schedule="%SUBSCRIPTIONS_SCHEDULE%", run_on_startup=False)
async def subscriptions_renew(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("subscriptions_renew is running late")
    app = bootstrap.app()
    if app.source is None:
        return  # no entra source: no Graph subscriptions to keep
    source, _, subscriptions, _, _ = app.entra()
    await app.ensure_storage()
    async with logged_run(app.state, "subscriptions_renew") as run:
        result = await subscriptions.ensure()
        run.detail = ", ".join(f"{r} valid until {sub['expirationDateTime']}" for r, sub in result.items())
    for resource, sub in result.items():
        log.info("%s subscription %s valid until %s", resource, sub["id"], sub["expirationDateTime"])
    try:
        await report_mapping_group_problems(source, app.mapping.for_source(source.name), app.audit)
    except TransientError as exc:  # the subscriptions are renewed; the check waits for the next run
        log.warning("could not check the mapping's groups in Entra ID now: %s", exc)
