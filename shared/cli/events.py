"""``events``: the event feed replayed from the audit trail, oldest first: each effective change as
the CloudEvent the feed publishes, with the same id (consumers dedupe on it). Printed as JSON lines,
or with ``--post`` delivered again to the configured endpoint as the feed delivers (signed, or to the
Event Grid topic with its key)."""

from __future__ import annotations

import argparse
import json
import sys

from shared import bootstrap
from shared.alerting.feed import post_again, replay
from shared.cli.audit import _at  # the audit search's own reading of a time
from shared.cli.common import UsageError


async def cmd_events(svc: bootstrap.App, args: argparse.Namespace) -> int:
    since = _at(args.since)
    assert since is not None  # required by the parser
    if args.post and svc.events is None:
        raise UsageError("--post needs the mapping's alerts.events (the feed's endpoint); without it, print them")
    if args.post:
        assert svc.events is not None
        count = await post_again(svc.audit, svc.events.sink, since, _at(args.until))
    else:
        count = 0
        async for event in replay(svc.audit, since, _at(args.until)):
            sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
            count += 1
    print(f"{count} events {'posted again' if args.post else 'replayed'} since {since}", file=sys.stderr)
    return 0
