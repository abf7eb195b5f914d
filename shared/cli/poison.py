"""``poison list | show | replay | drop``: what was given up on, and putting it back or away."""

from __future__ import annotations

import argparse

from shared import bootstrap
from shared.cli.common import UsageError, emit_json
from shared.services.poison import Poisoned, PoisonQueues


async def cmd_poison(svc: bootstrap.App, args: argparse.Namespace) -> int:
    queues = PoisonQueues(svc.queues, svc.queue, svc.audit)
    if args.action == "list":
        found = await queues.peek()
        if args.json:
            return emit_json([p.to_dict() for p in found])
        for p in found:
            print(describe(p))
        if not found:
            print("the poison queues are empty")
        return 0
    if args.action == "show":
        shown = next((p for p in await queues.peek() if p.id == args.id), None)
        if shown is None:
            raise UsageError(f"{args.id}: no such message on a poison queue (entra-sync poison list shows them)")
        trail = await svc.audit.for_identity(shown.item.id) if shown.item is not None else []
        if args.json:
            return emit_json({**shown.to_dict(), "audit": trail})
        print(describe(shown))
        for row in trail[-20:]:
            print(f"  {row.get('at', '')}  {row.get('target', ''):<12} {row.get('action', ''):<16} "
                  f"{row.get('outcome', ''):<8} {row.get('error') or row.get('detail') or ''}")  # fmt: skip
        return 0
    if not args.all and not args.ids:
        raise UsageError(f"poison {args.action}: name the message ids, or --all")
    ids = None if args.all else args.ids
    done = await (queues.replay if args.action == "replay" else queues.drop)(ids, args.by)
    verb = "replayed" if args.action == "replay" else "dropped"
    for p in done:
        print(f"{verb} {describe(p)}")
    missing = sorted(set(ids or ()) - {p.id for p in done})
    for mid in missing:
        print(f"not {verb}: {mid} (not on a poison queue{', or not a work item' if verb == 'replayed' else ''})")
    print(f"{len(done)} {verb} by {args.by}")
    return 1 if missing else 0


def describe(p: Poisoned) -> str:
    if p.item is None:
        return f"{p.id}  {p.queue:<17} {p.inserted}  not a work item: {p.raw!r}"
    item = p.item
    where = f" -> {item.target}" if item.target else ""
    return (
        f"{p.id}  {p.queue:<17} {p.inserted}  {item.kind} {item.id}{where} ({item.source}, "
        f"attempt {item.attempt}, delivered {p.dequeue_count}x)"
    )
