"""The initial load from the command line."""

from __future__ import annotations

import argparse

from shared import bootstrap
from shared.cli.common import Progress, UsageError
from shared.services.backfill import summary


async def cmd_backfill(svc: bootstrap.App, args: argparse.Namespace) -> int:
    if args.import_jobs:
        try:
            bulk = svc.import_backfill(args.target or "auth0")
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from exc
        progress = Progress()
        result = await bulk.run(progress=progress)
        progress.done()
        print(f"backfill through import jobs: {result.entra_users} Entra users, {result.in_scope} in scope")
        print(f"  already linked {result.already_linked}, without email {result.without_email}")
        print(f"  import jobs {result.files}: inserted {result.inserted}, existing {result.existing}")
        print(f"  failed {result.failed}")
        for failure in result.failures[:20]:
            print(f"    failed {failure}")
        print(f"  roles assigned {result.role_assignments} in {result.role_calls} calls, links written {result.links}")
        print(f"  handed to the worker {result.enqueued} (existing accounts to match, refused rows to retry)")
        return 1 if result.failed else 0
    if args.target:
        if args.target not in svc.jobs:
            raise UsageError(
                f"--target {args.target}: the mapping names no such target (it names {', '.join(svc.jobs)})"
            )
        progress = Progress()
        done = await svc.backfill(args.target, concurrency=args.concurrency).run(progress=progress)
        progress.done()
        for line in summary(done):
            print(line)
        return 1 if done.failed else 0
    queued = await svc.entra()[1].backfill()
    print(f"backfill: {queued} users queued for the worker (every target the mapping names)")
    return 0
