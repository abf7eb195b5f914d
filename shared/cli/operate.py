"""The operator's levers and view: ``status``, ``pause`` and ``resume``."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime

from shared import bootstrap
from shared.cli.common import UsageError, emit_json, targets
from shared.services.status import Status, attention, read_status
from shared.stores.audit import AuditRow
from shared.stores.keys import utcnow


async def cmd_status(svc: bootstrap.App, args: argparse.Namespace) -> int:
    status = await read_status(svc)
    if args.json:
        emit_json(status.to_dict())
    else:
        print_status(status, svc.clock.now())
    return attention(status)


def print_status(status: Status, now: float) -> None:
    print(f"entra-sync status at {status.at}")
    print(f"queues {'':<18} {'depth':>7}  oldest visible")
    for q in status.queues:
        depth = "missing" if q.depth is None else str(q.depth)
        print(f"  {q.name:<22} {depth:>7}  {'-' if q.oldest_s is None else duration(q.oldest_s)}")
    print("timers")
    if not status.timers:
        print("  none has run yet")
    for name, run in status.timers.items():
        print(f"  {name:<22} {run['outcome']:<8} {run['finished'] or run['started']} ({ago(run['finished'], now)})  "
              f"{run['detail']}")  # fmt: skip
    print("reconciliation")
    if not status.reconcile:
        print("  no run yet")
    for target, run in status.reconcile.items():
        print(f"  {target:<22} {run['status']:<9} {run['run_id']} ({run['mode']}, {ago(run['started_at'], now)})  "
              f"{run['outcome']}")  # fmt: skip
    print("held")
    if not status.held_runs and not status.held_episodes:
        print("  nothing")
    for run in status.held_runs:
        print(f"  run {run['run_id']} of {run['target']}: {run['held']} deprovisions held ({run['reason']}); "
              f"release: entra-sync approve {run['run_id']}")  # fmt: skip
    for episode in status.held_episodes:
        release = f"entra-sync approve {episode['episode']}"
        print(f"  mass change {episode['episode']} in {episode['target']}: {episode['held']} identities held "
              f"since {episode['since']} ({episode['reason']}); release: {release}")  # fmt: skip
    print("subscriptions")
    if not status.subscriptions:
        print("  none (no Entra ID source, or subscriptions_renew has not run)")
    for sub in status.subscriptions:
        print(f"  {sub['resource']:<22} expires {sub['expires']} ({sub['action']})")
    print("targets")
    for t in status.targets:
        if t.state == "paused":
            print(
                f"  {t.name:<22} paused by {t.paused_by} at {t.paused_at}; resume: entra-sync resume --target {t.name}"
            )
        elif t.until:
            print(f"  {t.name:<22} {t.state} until {t.until}{f' ({t.reason})' if t.reason else ''}")
        else:
            print(f"  {t.name:<22} {t.state}{f' (last failure: {t.reason})' if t.reason else ''}")


async def cmd_pause(svc: bootstrap.App, args: argparse.Namespace) -> int:
    return await _switch(svc, args, paused=True)


async def cmd_resume(svc: bootstrap.App, args: argparse.Namespace) -> int:
    return await _switch(svc, args, paused=False)


async def _switch(svc: bootstrap.App, args: argparse.Namespace, *, paused: bool) -> int:
    """Pause or resume targets for every instance, each audited with the operator's name."""
    verb = "pause" if paused else "resume"
    correlation = uuid.uuid4().hex
    for name in targets(svc, args.target):
        written = await svc.jobs[name].health.set_paused(paused, args.by, utcnow())
        if written is None:
            raise UsageError(f"{name}: its health record kept changing; try again")
        detail = (
            f"paused by {args.by}: its work waits on the queue, nothing is lost; "
            f"resume: entra-sync resume --target {name}"
            if paused
            else f"resumed by {args.by}: its waiting work runs again within minutes"
        )
        row = AuditRow(correlation, "operator", args.by, "operator", name, "", verb, "ok", detail=detail)
        await svc.audit.write(row)
        print(f"{name}: {detail}")
    return 0


def duration(seconds: float) -> str:
    """``42s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def ago(iso: str, now: float) -> str:
    """How long before ``now`` an ISO 8601 time was: ``3m12s ago`` (``?`` when it cannot be read)."""
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return "?"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return f"{duration(max(0.0, now - then.timestamp()))} ago"
