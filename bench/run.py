"""Run the benchmarks and write BENCHMARKS.md.

    python -m bench            full run (under 20 minutes on the 2-core sandbox machine)
    python -m bench --quick    smaller inputs (under 3 minutes)
    python -m bench --only propagation,efficiency

Everything runs on loopback: Azurite and the Graph and Auth0 emulators are started here, every
load loop is bounded in count and time. Figures are printed and written, never asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import efficiency, propagation, ratelimit, scale
from bench.common import REPO, Report, git_commit, machine

BENCHMARKS: dict[str, Callable[[bool], Report]] = {
    "propagation": propagation.run,
    "scale": scale.run,
    "efficiency": efficiency.run,
    "ratelimit": ratelimit.run,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smaller inputs, under 3 minutes")
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
    Path(args.output).write_text(render(reports, args.quick, commit, total), encoding="utf-8")
    print(f"wrote {args.output} in {total:.0f} s")
    return 0


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
