"""Benchmark 2: reconciliation at 1,000 / 10,000 / 100,000 in-scope users, in sync and with 1% drift.

The emulators and Azurite run in this process (and Azurite's); every measured run is a child
process (bench/scale_child.py), so its wall time, CPU time and peak RSS are its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Report, Sandbox, Table, take_queued, verdict
from sandbox.mirror import mirror
from shared.mapping.load import load_mapping

IN_SCOPE_SHARE_SAMPLE = 2_000
CHILD_TIMEOUT_S = 300


def child(box: Sandbox, mode: str, **extra: str) -> dict[str, Any]:
    env = {**os.environ, **box.env, "PYTHONPATH": str(REPO), **extra}
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale_child", mode],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"scale_child {mode} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def in_scope_share() -> float:
    with Sandbox(users=IN_SCOPE_SHARE_SAMPLE, seed=5) as box:
        mapping = load_mapping(box.env["SYNC_MAPPING_FILE"])
        return mirror(box.graph, box.auth0, mapping) / IN_SCOPE_SHARE_SAMPLE


def run(quick: bool) -> Report:
    started = time.perf_counter()
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    share = in_scope_share()
    table = Table(
        ["in-scope users", "state", "dry run wall", "CPU", "peak RSS", "read floor", "ratio", "Auth0 writes",
         "enqueued (apply)", "drifted", "Auth0 read"]
    )  # fmt: skip
    previews = Table(["in-scope users", "preview wall", "CPU", "peak RSS", "accounts changed", "held by the guard"])
    preview_s: dict[int, float] = {}
    ratios: list[float] = []
    rss: dict[int, float] = {}
    exact = True
    for size in sizes:
        with Sandbox(users=round(size / share), seed=5) as box:
            mapping = load_mapping(box.env["SYNC_MAPPING_FILE"])
            accounts = mirror(box.graph, box.auth0, mapping)
            # preview: the mapping with the job title read from another property (every account changes)
            text = Path(box.env["SYNC_MAPPING_FILE"]).read_text()
            proposed = Path(box.env["SYNC_MAPPING_FILE"]).with_name("proposed.yaml")
            proposed.write_text(text.replace("source: jobTitle,", "source: officeLocation,"))
            seen = child(box, "preview", PREVIEW_MAPPING_FILE=str(proposed))
            preview_s[size] = seen["wall_s"]
            previews.rows.append(
                [f"{accounts:,}", f"{seen['wall_s']:.2f} s", f"{seen['cpu_s']:.2f} s", f"{seen['peak_rss_mb']:.0f} MB",
                 f"{seen['changed']:,}", "yes" if seen["guard"] else "no"]
            )  # fmt: skip
            rss[size] = max(rss.get(size, 0.0), seen["peak_rss_mb"])
            print(f"  {size}: preview: {previews.rows[-1]}", flush=True)
            for state in ("in sync", "1% drift"):
                drifted: set[str] = set()
                if state == "1% drift":
                    members = sorted(u["id"] for u in box.members())
                    drifted = set(random.Random(size).sample(members, max(1, accounts // 100)))
                    for n, uid in enumerate(sorted(drifted)):
                        box.graph.update_user(uid, department=f"Drifted {n}")
                box.auth0.log.clear()
                dry = child(box, "dry-run")
                floor = child(box, "floor")
                writes = sum(1 for e in box.auth0.log.entries() if e.write)
                applied = child(box, "apply")
                queued = {i.id for i in asyncio.run(_take(box))}
                exact &= queued == drifted and set(dry["drifted"]) == drifted and writes == 0
                ratio = dry["wall_s"] / floor["wall_s"]
                ratios.append(ratio)
                rss[size] = max(rss.get(size, 0.0), dry["peak_rss_mb"])
                table.rows.append(
                    [f"{dry['in_scope']:,}", state, f"{dry['wall_s']:.2f} s", f"{dry['cpu_s']:.2f} s",
                     f"{dry['peak_rss_mb']:.0f} MB", f"{floor['wall_s']:.2f} s", f"{ratio:.2f}x", str(writes),
                     f"{applied['enqueued']} ({'exact' if queued == drifted else 'MISMATCH'})", str(len(drifted)),
                     dry["auth0_read"]]
                )  # fmt: skip
                print(f"  {size}: {state}: {table.rows[-1]}", flush=True)
    biggest = max(sizes)
    growth = [f"{rss[s]:.0f} MB" for s in sizes]
    report = Report(
        "2. Reconciliation at scale",
        inputs=[
            f"seeded tenants of which {share:.0%} are in scope (Members, enabled), Auth0 side from sandbox.mirror",
            "drift = a department changed in Entra for 1% of in-scope users",
            "each measured run is its own process; emulators and Azurite run elsewhere",
        ],
        tables=[
            ("Dry run vs read floor (read floor: the same paging calls, no planning)", table),
            ("entra-sync preview of a mapping change (the job title read from officeLocation instead)", previews),
        ],
        goals=[
            verdict(max(ratios) <= 1.25, f"dry run <= 1.25x the read floor (worst {max(ratios):.2f}x)"),
            verdict(
                biggest < 100_000 or rss[biggest] <= 400,
                f"peak RSS <= 400 MB at 100,000 (RSS by size: {', '.join(growth)})",
            ),
            verdict(exact, "zero Auth0 writes in sync; exactly the drifted identities enqueued (request log, queue)"),
            verdict(
                preview_s.get(10_000, 0.0) < 60, f"preview under a minute at 10,000 ({preview_s.get(10_000, 0):.1f} s)"
            ),
        ],
        notes=[
            "Peak RSS includes the Python interpreter and the SDKs (about 100 MB before any user is read).",
            "Past 1,000 accounts the Auth0 side is read through one export job (the list API stops at 1,000).",
            "The target's side is held compactly while Entra streams (accounts packed in shared key order, links "
            "without their memory of the last write): 465 MB at 100,000 on e31f786, before the packing.",
        ],
    )
    report.seconds = time.perf_counter() - started
    return report


async def _take(box: Sandbox) -> list[Any]:
    svc = box.services()
    try:
        return await take_queued(svc, limit=200_000)
    finally:
        await svc.aclose()
