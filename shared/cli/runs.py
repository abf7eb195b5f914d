"""Reconciliation from the command line: run, approve, list, report."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import webbrowser
from pathlib import Path

from shared import bootstrap
from shared.cli.common import Progress, UsageError, emit_json, targets, write_output
from shared.core.drift import RunSummary
from shared.services.reconcile import check_run_id
from shared.services.report import provenance, render_csv, render_json, render_runs
from shared.targets.registry import target_title


async def cmd_reconcile(svc: bootstrap.App, args: argparse.Namespace) -> int:
    """Every target the mapping names (or the one asked for), each its own run and report."""
    held = False
    for name in targets(svc, args.target):
        progress = Progress()
        if svc.reports is not None:
            await svc.reports.ensure()
        origin = provenance(svc.mapping, name, settings=svc.settings, trigger="cli", operator=args.by)
        summary, _ = await svc.reconcilers[name].run(
            "apply" if args.apply else "dry-run", progress=progress, provenance=origin
        )
        progress.done()
        _print_run(summary)
        held = held or summary.status == "held"
    return 3 if held else 0


def _print_run(summary: RunSummary) -> None:
    title = target_title(summary.target)
    print(f"run {summary.run_id} of {summary.target} ({summary.mode}): {summary.status}")
    print(f"  Entra users {summary.entra_users} (in scope {summary.entra_in_scope})")
    read = f" ({summary.read_by})" if summary.read_by else ""
    print(f"  {title} accounts {summary.accounts}{read}, managed {summary.managed_accounts}")
    print(f"  in sync {summary.in_sync} of {summary.entra_in_scope} in-scope identities")
    print(f"  drift records {sum(summary.counts.values())}, about {summary.drifted} identities:")
    for drift, count in sorted(summary.counts.items()):
        print(f"  {drift:<20} {count}")
    print(f"  identities enqueued {summary.enqueued} (one work item each), held {summary.held}")
    if summary.previous_run:
        print(f"  new since run {summary.previous_run}: {summary.new_records} drift records")
    if summary.breaker.tripped:
        print(f"  CIRCUIT BREAKER: {summary.breaker.reason}")
        print(f"  review the report, then: entra-sync approve {summary.run_id}")
    print(f"  report: entra-sync report {summary.run_id} --open")


async def cmd_approve(svc: bootstrap.App, args: argparse.Namespace) -> int:
    """A held reconciliation run, or a mass change held on the way in (their ids look alike)."""
    ident = check_run_id(args.run)
    for job in svc.jobs.values():
        if job.guard is not None and await job.guard.episode(ident) is not None:
            queued = await job.guard.approve(ident, approver=args.by)
            print(
                f"mass change {ident} in {job.name} approved by {args.by}: {queued} held identities queued "
                "for the worker"
            )
            return 0
    run = await next(iter(svc.reconcilers.values())).summary(ident) if svc.reconcilers else None
    if run is None or run.target not in svc.reconcilers:
        raise UsageError(f"{ident}: no held run or mass change of a target the mapping names")
    queued = await svc.reconcilers[run.target].approve(ident, approver=args.by)
    print(f"run {ident} approved by {args.by}: {queued} held deprovisions queued for the worker")
    return 0


async def cmd_runs(svc: bootstrap.App, args: argparse.Namespace) -> int:
    runs = await next(iter(svc.reconcilers.values())).history(every_target=True) if svc.reconcilers else []
    latest = runs[-args.limit :]
    if args.json:
        return emit_json([run.to_dict() for run in latest])
    for run in latest:
        print(f"{run.run_id}  {run.target:<14} {run.mode:<8} {run.status:<9} {run.outcome()}")
    return 0


async def cmd_report(svc: bootstrap.App, args: argparse.Namespace) -> int:
    if svc.reports is None:
        raise UsageError("reports are not kept by this configuration")
    if args.latest == (args.run is not None):
        raise UsageError("name a run id, or --latest for the latest run of every target on one page")
    if args.latest:
        body = await _latest(svc, args.format)
    else:
        body = await svc.reports.load(check_run_id(args.run), args.format)
    if args.output or args.open:
        stem = "latest" if args.latest else args.run
        target = Path(args.output) if args.output else Path(tempfile.gettempdir()) / f"entra-sync-{stem}.{args.format}"
        write_output(target, body)
        print(f"wrote {target}")
        if args.open:
            webbrowser.open(target.resolve().as_uri())
    else:
        sys.stdout.write(body.decode("utf-8"))
    return 0


async def _latest(svc: bootstrap.App, fmt: str) -> bytes:
    """The latest stored run of every target the mapping names, as one report: HTML with a section
    per target, JSON ``{"runs": [...]}``, or CSV (one header; every row names its run and target)."""
    assert svc.reports is not None
    runs = await next(iter(svc.reconcilers.values())).history(every_target=True) if svc.reconcilers else []
    parts = []
    for name in targets(svc, None):
        mine = [r for r in runs if r.target == name]
        if not mine:
            print(f"{name}: no reconciliation run yet", file=sys.stderr)
            continue
        summary, records = await svc.reports.load_run(mine[-1].run_id)
        parts.append((summary, records, mine[:-1]))
    if not parts:
        raise UsageError("no target has a reconciliation run yet: run `entra-sync reconcile` first")
    if fmt == "html":
        return render_runs(parts)
    if fmt == "json":
        runs_json = [json.loads(render_json(summary, records)) for summary, records, _ in parts]
        return (json.dumps({"runs": runs_json}, indent=2, ensure_ascii=False) + "\n").encode()
    texts = [render_csv(summary, records).decode("utf-8-sig") for summary, records, _ in parts]
    return ("".join([texts[0], *(t.split("\r\n", 1)[1] for t in texts[1:])])).encode("utf-8-sig")
