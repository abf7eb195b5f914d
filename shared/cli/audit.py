"""``audit``: search the audit rows (by identity, UPN or email, target, action, outcome,
correlation id and time), newest first, as text, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from shared import bootstrap
from shared.cli.common import UsageError, write_output
from shared.core.ports import FindsIdentities
from shared.stores.audit import AuditQuery, Newest
from shared.stores.keys import utc_text

DEFAULT_DAYS: Final = 7  # the window of a search that names no identity and no --since
COLUMNS: Final = (
    "at", "identity", "identity_source", "source", "source_ref", "correlation_id", "target", "target_id",
    "action", "outcome", "diff", "detail", "error",
)  # fmt: skip


async def cmd_audit(svc: bootstrap.App, args: argparse.Namespace) -> int:
    since = args.since
    if since is None and not args.identity and not args.correlation_id:
        since = datetime.fromtimestamp(svc.clock.now(), UTC) - timedelta(days=DEFAULT_DAYS)
        print(f"(the last {DEFAULT_DAYS} days; --since to look further back)", file=sys.stderr)
    identities = await _identities(svc, args.identity) if args.identity else [None]
    kept = Newest(args.limit)
    for identity in identities:
        query = AuditQuery(
            identity=identity, since=_at(since), until=_at(args.until), target=args.target, action=args.action,
            outcome=args.outcome, correlation_id=args.correlation_id, limit=args.limit,
        )  # fmt: skip
        for row in await svc.audit.search(query):
            kept.add(row)
    rows = [{c: row.get(c, "") for c in COLUMNS} for row in kept.rows()]
    fmt = "json" if args.json else args.format
    if fmt == "json":
        text = json.dumps(rows, indent=2, sort_keys=True, default=str) + "\n"
    elif fmt == "csv":
        text = _csv_text(rows)
    else:
        text = "".join(_line(row) for row in rows) or "no audit rows match\n"
    if args.output:
        write_output(Path(args.output), text.encode("utf-8"))
        print(f"wrote {len(rows)} rows to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


async def _identities(svc: bootstrap.App, key: str) -> list[str]:
    """The ids ``key`` names: itself, unless it looks like a sign-in name or email (``@``), which
    the sources that can are asked for."""
    if "@" not in key:
        return [key]
    finders = [s for s in svc.sources.values() if isinstance(s, FindsIdentities)]
    ids = sorted({i for source in finders for i in await source.find_ids(key)})
    if not ids:
        named = ", ".join(svc.sources) or "none"
        raise UsageError(f"--identity {key}: no one in the sources ({named}) has that sign-in name or email")
    return ids


def _at(when: datetime | None) -> str | None:
    if when is None:
        return None
    return utc_text(when)


def _line(row: dict[str, Any]) -> str:
    said = row["detail"] or row["error"]
    line = (
        f"{row['at']}  {row['identity']:<36}  {row['target'] or '-':<14} {row['source']:<12} {row['action']:<20} "
        f"{row['outcome']:<8} {said}\n"
    )
    return line + (f"    diff {row['diff']}\n" if row["diff"] else "")


def _csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
