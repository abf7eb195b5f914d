"""What an operator looks at first: the queues, the last runs, what is held, the subscriptions and
each target's health, read from storage (so it is what every instance sees, not one process's
memory). ``entra-sync status`` prints it; :func:`attention` says whether anything needs a person.

Trusted for: every figure is read at the time of the call; a queue's depth is the service's
approximate count, and its oldest age is that of the oldest message visible now (a deferred message
becomes visible only at its time, so a queue of deferred work can show a depth and no age).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

from shared import names
from shared.core.ports import HealthRecord
from shared.services.runlog import last_runs

if TYPE_CHECKING:
    from shared.bootstrap import App


@dataclass
class QueueState:
    name: str
    depth: int | None  # None: the queue is not there
    oldest_s: float | None  # age of the oldest visible message, None when none is visible


@dataclass
class TargetState:
    name: str
    state: str  # "ok", "paused", "quarantined", "probing", "half-open", "rate-limited"
    until: str = ""  # ISO 8601 (UTC) for quarantined, probing and rate-limited
    reason: str = ""
    paused_by: str = ""
    paused_at: str = ""


@dataclass
class Status:
    at: str
    queues: list[QueueState] = field(default_factory=list)
    timers: dict[str, dict[str, Any]] = field(default_factory=dict)
    reconcile: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> its last run
    held_runs: list[dict[str, Any]] = field(default_factory=list)
    held_episodes: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    targets: list[TargetState] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def read_status(svc: App) -> Status:
    now = svc.clock.now()
    status = Status(at=_iso(now))
    for name in names.QUEUES:
        status.queues.append(await _queue_state(svc, name, now))
    status.timers = {name: asdict(run) for name, run in sorted((await last_runs(svc.state)).items())}
    runs = await next(iter(svc.reconcilers.values())).history(every_target=True) if svc.reconcilers else []
    for run in runs:  # oldest first: the last one of each target stays
        status.reconcile[run.target] = {
            "run_id": run.run_id, "mode": run.mode, "status": run.status, "started_at": run.started_at,
            "finished_at": run.finished_at, "outcome": run.outcome(), "counts": dict(run.counts),
        }  # fmt: skip
    status.held_runs = [
        {"run_id": r.run_id, "target": r.target, "held": r.held, "reason": r.breaker.reason}
        for r in runs
        if r.status == "held"
    ]
    for job in svc.jobs.values():
        if job.guard is not None:
            status.held_episodes += [{**e, "target": job.name} for e in await job.guard.held_episodes()]
        status.targets.append(_target_state(job.name, await job.health.view(), now))
    subscriptions = await svc.state.list("subscription")
    status.subscriptions = [
        {"resource": resource, "id": sub.get("id", ""), "expires": sub.get("expirationDateTime", ""),
         "action": sub.get("action", "")}
        for resource, sub in sorted(subscriptions.items())
    ]  # fmt: skip
    return status


def attention(status: Status) -> int:
    """The CLI's exit code for it: 3 when something is held for approval, 1 when something else
    needs a person (poisoned work, a quarantined target, a last run that failed), else 0."""
    if status.held_runs or status.held_episodes:
        return 3
    poisoned = any(q.depth for q in status.queues if q.name.endswith("-poison"))
    quarantined = any(t.state == "quarantined" for t in status.targets)
    failed = any(r.get("outcome") == "failed" for r in status.timers.values()) or any(
        r.get("status") == "failed" for r in status.reconcile.values()
    )
    return 1 if poisoned or quarantined or failed else 0


async def _queue_state(svc: App, name: str, now: float) -> QueueState:
    client = svc.queues.get_queue_client(name)
    try:
        properties = await client.get_queue_properties()
        peeked = await client.peek_messages(max_messages=1)
    except ResourceNotFoundError:
        return QueueState(name, None, None)
    inserted = peeked[0].inserted_on if peeked else None
    oldest = max(0.0, now - inserted.timestamp()) if inserted is not None else None
    return QueueState(name, int(properties.approximate_message_count or 0), oldest)


def _target_state(name: str, record: HealthRecord, now: float) -> TargetState:
    if record.paused:
        return TargetState(name, "paused", paused_by=record.paused_by, paused_at=record.paused_at)
    if record.open_until and now < record.open_until:
        return TargetState(name, "quarantined", _iso(record.open_until), record.reason)
    if record.open_until and record.probe_until > now:
        return TargetState(name, "probing", _iso(record.probe_until), record.reason)
    if record.open_until:
        return TargetState(name, "half-open", reason=record.reason)  # the next call is the probe
    if record.gate_until > now:
        return TargetState(name, "rate-limited", _iso(record.gate_until))
    return TargetState(name, "ok")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
