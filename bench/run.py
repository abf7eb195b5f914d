"""Run the benchmarks and write BENCHMARKS.md.

    python -m bench            full run (about 30 minutes on the 2-core sandbox machine, 17 of them
                               the 10,000-user SCIM backfill; propagation about 11)
    python -m bench --quick    smaller inputs (about 8 minutes)
    python -m bench --only propagation,efficiency

Everything runs on loopback: Azurite and the Graph and Auth0 emulators are started here, every
load loop is bounded in count and time. Figures are printed and written, never asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import chaos, clients, efficiency, inbox, load, ratelimit, salesforce, scale, scim
from bench.common import REPO, Report, git_commit, machine

BENCHMARKS: dict[str, Callable[[bool], Report]] = {
    "propagation": load.run,
    "scale": scale.run,
    "efficiency": efficiency.run,
    "ratelimit": ratelimit.run,
    "scim": scim.run,
    "clients": clients.run,
    "chaos": chaos.run,
    "inbox": inbox.run,
    "salesforce": salesforce.run,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smaller inputs, about 8 minutes")
    p.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    p.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="where to write the results")
    args = p.parse_args(argv)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "httpx", "entra_sync", "sandbox"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}")
    started = time.perf_counter()
    commit = git_commit()
    reports: list[Report] = []
    for name in chosen:
        print(f"== {name} ({'quick' if args.quick else 'full'})", flush=True)
        report = BENCHMARKS[name](args.quick)
        print(report.markdown(), flush=True)
        reports.append(report)
    total = time.perf_counter() - started
    output = Path(args.output)
    if args.only and output.exists():
        # Some benchmarks only: their sections replace the same sections of the file, each stamped
        # with its own commit and time, and the others stay as they were measured.
        stamp = (
            f"{'quick' if args.quick else 'full'} run at commit `{commit[:12]}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        text = merge(output.read_text(encoding="utf-8"), reports, stamp)
    else:
        text = render(reports, args.quick, commit, total)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} in {total:.0f} s")
    return 0


def merge(existing: str, reports: list[Report], stamp: str) -> str:
    """``existing`` with the sections of ``reports`` put in (by title), in benchmark order."""
    head, *sections = re.split(r"(?m)^(?=## )", existing)
    by_title = {section.splitlines()[0]: section for section in sections}
    for report in reports:
        by_title[f"## {report.title}"] = report.markdown().rstrip("\n") + f" _Section re-measured alone: {stamp}._\n"
    ordered = sorted(by_title.items(), key=lambda kv: int(m.group(1)) if (m := re.match(r"## (\d+)", kv[0])) else 99)
    return head + "\n".join(section.rstrip("\n") + "\n" for _, section in ordered)


def render(reports: list[Report], quick: bool, commit: str, total: float) -> str:
    m = machine()
    mode = "quick (`make bench-quick`)" if quick else "full (`make bench`)"
    out = [
        "# entra-sync benchmarks",
        "",
        "Measured on the sandbox: Graph and Auth0 emulators and Azurite on loopback, the functions run by the "
        "Functions host stand-in (sandbox/host.py). The figures show what entra-sync itself adds; the vendors' "
        "network latency is not in them, their rate limits are (benchmark 4).",
        "",
        "| | |",
        "|---|---|",
        f"| commit | `{commit}` |",
        f"| run | {mode}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {total / 60:.1f} minutes |",
        f"| machine | {m['cores']} cores, {m['cpu']}, {m['ram']} RAM, {m['os']} |",
        f"| Python | {m['python']} |",
        "",
        "Reproduce: `make bench` (full) or `make bench-quick`; `python -m bench --only scale` runs one. "
        "Every benchmark starts its own sandbox; nothing leaves 127.0.0.1.",
        "",
    ]
    for report in reports:
        out.append(report.markdown())
    return "\n".join(out)
