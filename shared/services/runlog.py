"""The last run of each timer function (delta catch-up, risk polling, subscription renewal), kept
in the state store so ``entra-sync status`` shows when each last ran and how it ended, whichever
instance ran it.

    async with logged_run(app.state, "delta_sync") as run:
        outcome = await ...
        run.detail = f"queued {outcome.enqueued} users"

Trusted for: a run that raised is recorded as failed with its error (redacted, cut to a few
hundred characters) and the error still propagates; a run whose record cannot be written still
ran (the write's failure is logged, never raised over the run's own outcome).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Final

from shared.core.ports import StateStore
from shared.redact import redact
from shared.stores.keys import utcnow

log = logging.getLogger("entra_sync.runlog")

KIND: Final = "timer-run"
MAX_DETAIL: Final = 500


@dataclass
class TimerRun:
    name: str
    started: str
    finished: str = ""
    outcome: str = "running"  # "running", "ok", "skipped", "failed"
    detail: str = ""


@asynccontextmanager
async def logged_run(state: StateStore, name: str) -> AsyncIterator[TimerRun]:
    """Record the run of the timer function ``name`` when it ends (see the module's docstring)."""
    run = TimerRun(name, started=utcnow())
    try:
        yield run
    except BaseException as exc:
        run.outcome, run.detail = "failed", redact(f"{type(exc).__name__}: {exc}")[:MAX_DETAIL]
        raise
    else:
        if run.outcome == "running":
            run.outcome = "ok"
    finally:
        run.finished = utcnow()
        run.detail = run.detail[:MAX_DETAIL]
        try:
            await state.put(KIND, name, asdict(run))
        except Exception:
            log.warning("could not record the end of the %s run (%s)", name, run.outcome, exc_info=True)


async def last_runs(state: StateStore) -> dict[str, TimerRun]:
    """Each timer function's last recorded run, by name."""
    known = set(TimerRun.__dataclass_fields__)
    return {
        name: TimerRun(**{k: v for k, v in value.items() if k in known})
        for name, value in (await state.list(KIND)).items()
    }
