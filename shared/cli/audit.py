"""Audit rows from the command line."""

from __future__ import annotations

import argparse
from datetime import datetime

from shared import bootstrap
from shared.cli.common import iso_time
from shared.stores.keys import decode_key


async def cmd_audit(svc: bootstrap.App, args: argparse.Namespace) -> int:
    if args.identity:
        rows = await svc.audit.for_identity(args.identity)
    else:
        rows = await svc.audit.all()
    shown = 0
    for row in rows:
        at = str(row.get("at", ""))
        if (args.since or args.until) and not _within(at, args.since, args.until):
            continue
        identity = row.get("identity") or decode_key(str(row["PartitionKey"]))
        print(
            f"{at}  {identity:<36}  {row.get('source', ''):<12} {row.get('action', ''):<22} "
            f"{row.get('outcome', ''):<8} {row.get('detail') or row.get('diff') or row.get('error') or ''}"
        )
        shown += 1
        if shown >= args.limit:
            break
    return 0


def _within(at: str, since: datetime | None, until: datetime | None) -> bool:
    """Whether an audit row's time is in [since, until]; a row whose time cannot be read is not."""
    try:
        when = iso_time(at)
    except argparse.ArgumentTypeError:
        return False
    return (since is None or when >= since) and (until is None or when <= until)
