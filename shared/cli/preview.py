"""``preview --mapping new.yaml``: what a mapping change would do, per target, before it is deployed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from shared import bootstrap
from shared.cli.common import Progress, UsageError, emit_json
from shared.mapping.load import load_mapping
from shared.services.preview import Deprovision, TargetPreview, preview_target
from shared.targets.registry import check_settings


async def cmd_preview(svc: bootstrap.App, args: argparse.Namespace) -> int:
    new = load_mapping(args.mapping)  # a MappingError is exit 2, with the checker's messages
    check_settings(svc.settings, new.targets.values())
    if args.target is not None and args.target not in new.targets:
        raise UsageError(f"--target {args.target}: {args.mapping} names no such target ({', '.join(new.targets)})")
    after = bootstrap.build(svc.settings, new)
    try:
        results: list[dict[str, Any]] = []
        for name, reconciler in after.reconcilers.items():
            if args.target is not None and name != args.target:
                continue
            shown: list[Deprovision] = []
            one = _lister(name, shown, None if args.json else args.names)
            if not args.json:
                print(f"{name}: planning every identity against the accounts it holds now ...")
            progress = Progress()
            seen = await preview_target(reconciler, one, progress)
            progress.done()
            results.append({**seen.to_dict(), "deprovisions": [vars(d) for d in shown]})
            if not args.json:
                print_preview(seen, len(shown))
        dropped = sorted(set(svc.jobs) - set(after.jobs))
    finally:
        await after.aclose()
    if args.json:
        emit_json({"mapping": str(new.source), "targets": results, "no_longer_mapped": dropped})
    else:
        for name in dropped:
            print(f"{name}: no longer in {args.mapping}: its accounts are left as they are (nothing deprovisions them)")
    return 3 if any(r["breaker"] or r["guard"] for r in results) else 0


def _lister(target: str, shown: list[Deprovision], names: int | None) -> Callable[[Deprovision], None]:
    """Keeps every deprovision (``names`` None: for JSON), or prints and keeps the first ``names``."""

    def one(d: Deprovision) -> None:
        if names is None:
            shown.append(d)
        elif len(shown) < names:
            print(f"  {target}: would {d.action} {d.name or d.identity} ({d.identity}): {d.why}")
            shown.append(d)

    return one


def print_preview(seen: TargetPreview, listed: int) -> None:
    print(
        f"{seen.target}: {seen.identities} identities, {seen.in_scope} in scope, {seen.managed} with an account\n"
        f"  would create {seen.created}, change {seen.changed}, deprovision {seen.deprovisioned}, "
        f"restore {seen.restored}; {seen.unmatched} matches need a person (ambiguous or conflicting)"
    )
    if seen.deprovisioned > listed:
        print(f"  ({seen.deprovisioned - listed} more deprovisions not listed: --names or --json for all)")
    if seen.fields:
        print("  fields: " + ", ".join(f"{path} on {n}" for path, n in seen.fields.most_common()))
    if seen.granted:
        print("  added: " + ", ".join(f"{name} to {n}" for name, n in seen.granted.most_common()))
    if seen.removed:
        print("  removed: " + ", ".join(f"{name} from {n}" for name, n in seen.removed.most_common()))
    print(
        f"  circuit breaker: {'would hold a reconcile --apply: ' + seen.breaker if seen.breaker else 'would not trip'}"
    )
    if seen.guard:
        for why in seen.guard:
            print(f"  mass-change guard: would hold the live changes: {why}")
    else:
        print("  mass-change guard: would hold nothing")
