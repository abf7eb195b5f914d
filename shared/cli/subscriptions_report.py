"""The Graph subscriptions in ``entra-sync status --json`` (read on stdin), one line each: what the
post-deploy hook (infra/scripts/postdeploy.sh) reports after it runs ``subscriptions_renew``.

Exit 0 when there is at least one subscription, 1 when there is none yet (or the input is not a
status), so the hook can try again a bounded number of times."""

from __future__ import annotations

import json
import sys
from typing import TextIO


def report(stream: TextIO) -> tuple[list[str], int]:
    try:
        status = json.load(stream)
        subscriptions = status["subscriptions"]
    except (ValueError, KeyError, TypeError):
        return [], 1
    lines = [
        f"entra-sync: subscription on {sub.get('resource', '?')} expires {sub.get('expires', '?')} "
        f"({sub.get('action', '')})"
        for sub in subscriptions
        if isinstance(sub, dict)
    ]
    return lines, 0 if lines else 1


def main() -> int:
    lines, code = report(sys.stdin)
    for line in lines:
        print(line)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
