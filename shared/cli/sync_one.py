"""``sync-one``: one person, now, with what each target would do shown field by field first."""

from __future__ import annotations

import argparse
import json
from typing import Any, Final

from shared import bootstrap
from shared.cli.common import UsageError, emit_json
from shared.core.ports import FindsIdentities
from shared.services.sync_one import OnePlan, plan_one, source_of, sync_one

NEEDS_A_PERSON: Final = frozenset({"ambiguous", "conflict", "failed", "poisoned", "retrying", "quarantined"})


async def cmd_sync_one(svc: bootstrap.App, args: argparse.Namespace) -> int:
    source_name = source_of(svc, args.source)
    source = svc.sources.get(source_name)
    if source is None:
        raise UsageError(
            f"--source {source_name}: the mapping names no such source (it names {', '.join(svc.sources)})"
        )
    fed = [n for n, job in svc.jobs.items() if job.section.source == source_name]
    if args.target is not None and args.target not in fed:
        raise UsageError(f"--target {args.target}: no target fed by {source_name} has that name ({', '.join(fed)})")
    ids = await source.find_ids(args.who) if isinstance(source, FindsIdentities) else [args.who]
    if not ids:
        raise UsageError(f"{args.who}: no one in {source_name} has that id, sign-in name or email")
    if len(ids) > 1:
        raise UsageError(f"{args.who} names {len(ids)} identities in {source_name} ({', '.join(ids)}): give the id")
    plan = await plan_one(svc, source_name, ids[0], args.target)
    report: dict[str, Any] = {"plan": plan.to_dict()}
    if not args.json:
        print_plan(args.who, plan)
    if args.dry_run:
        if args.json:
            emit_json(report)
        return 0
    outcome, rows = await sync_one(svc, source_name, ids[0], args.target, args.by)
    parts = outcome.parts or [outcome]
    report["result"] = [{"target": p.target, "status": p.status, "warnings": p.warnings} for p in parts]
    report["audit"] = rows
    if args.json:
        emit_json(report)
    else:
        print("result")
        for part in parts:
            said = f": {'; '.join(part.warnings)}" if part.warnings else ""
            print(f"  {part.target or '-':<16} {part.status}{said}")
        print("audit")
        for row in rows:
            print(f"  {row.get('at', '')}  {row.get('target', '') or '-':<16} {row.get('action', ''):<18} "
                  f"{row.get('outcome', ''):<8} {row.get('detail') or row.get('error') or ''}")  # fmt: skip
    statuses = {p.status for p in parts}
    return 3 if "held" in statuses else 1 if statuses & NEEDS_A_PERSON else 0


def print_plan(who: str, plan: OnePlan) -> None:
    groups = ", ".join(plan.groups) or "none the mapping names"
    print(f"{who} is {plan.id} in {plan.source}: {plan.state}; groups: {groups}")
    for target in plan.targets:
        account = f"{target.account} (found by {target.matched_by})" if target.account else "no account"
        print(f"{target.target}: {target.state}, {account}")
        if target.problem:
            print(f"  not planned: {target.problem}")
        elif not target.steps:
            print("  in step: nothing to do")
        for step in target.steps:
            print(f"  {step.action}  ({step.reason})" if step.reason else f"  {step.action}")
            for path, (before, after) in (step.changes or {}).items():
                print(f"      {path}: {_shown(before)} -> {_shown(after)}")
            for path, value in (step.values or {}).items():
                print(f"      {path}: {_shown(value)}")


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
