"""Benchmark 4: rate-limit use while backfilling, per-user worker calls vs import jobs.

The Auth0 emulator is shaped like an Enterprise tenant (burst 50, 16 requests/s) and like a free one
(2 requests/s, every Management API route) with ``rate_limit_preset``. Per-user backfill runs the
worker's service on the backfill's work items with the host's concurrency (batchSize 4 +
newBatchThreshold 2 = 6 at once) for a fixed window: at 2 requests/s, 10,000 users one by one would
take hours. The import-job backfill (shared/bulk.py) runs on 10,000 in-scope users to the end.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.common import REPO, Report, Sandbox, Table, prime, take_queued, verdict
from sandbox.auth0 import RATE_LIMIT_PRESETS, rate_limit_preset
from sandbox.host import HostOptions

_QUEUES = HostOptions.load(REPO / "host.json").queues
CONCURRENCY = _QUEUES.batch_size + _QUEUES.new_batch_threshold  # what one instance runs at once
IMPORT_USERS = 10_000
IMPORT_TIMEOUT_S = 600.0


@dataclass
class Load:
    plan: str
    mode: str
    users_done: int
    seconds: float
    ok_requests: int
    throttled: int
    failed_ops: int
    budget: float  # requests the bucket allowed in that time (burst + rate x time)

    @property
    def share(self) -> float:
        return self.ok_requests / self.budget if self.budget else 0.0


def budget(plan: str, seconds: float) -> float:
    spec = RATE_LIMIT_PRESETS[plan]["mgmt.*"]
    return float(spec["burst"]) + float(spec["per_second"]) * seconds


def per_user(plan: str, window_s: float) -> Load:
    with Sandbox(users=1_500, seed=13) as box:
        svc = box.services()

        async def go() -> Load:
            try:
                await prime(svc)
                await svc.delta.backfill()
                items = await take_queued(svc, limit=100_000)
                await svc.jobs["auth0"].target.role_ids(["Employee"])  # a warm worker; before the window opens
                box.auth0.limits.configure(rate_limit_preset(plan))
                box.auth0.log.clear()
                done = failed = 0
                started = time.perf_counter()
                deadline = started + window_s
                todo = iter(items)

                async def worker() -> None:
                    nonlocal done, failed
                    for item in todo:
                        if time.perf_counter() >= deadline:
                            return
                        try:
                            await svc.dispatcher.run(item)
                            done += 1
                        except Exception:
                            failed += 1  # the host would retry the message later

                await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
                elapsed = time.perf_counter() - started
                entries = [e for e in box.auth0.log.entries() if e.route.startswith("mgmt.")]
                ok = sum(1 for e in entries if e.status != 429)
                throttled = sum(1 for e in entries if e.status == 429)
                return Load(plan, "per-user worker", done, elapsed, ok, throttled, failed, budget(plan, elapsed))
            finally:
                await svc.aclose()

        return asyncio.run(go())


def imports(plan: str, users: int) -> tuple[Load, int]:
    share = 0.93  # in-scope share of the seeded tenants (benchmark 2 measures it)
    with Sandbox(users=round(users / share), seed=17) as box:
        svc = box.services()

        async def go() -> tuple[Load, int]:
            try:
                await prime(svc)
                box.auth0.limits.configure(rate_limit_preset(plan))
                box.auth0.log.clear()
                started = time.perf_counter()
                result = await asyncio.wait_for(svc.import_backfill("auth0").run(), IMPORT_TIMEOUT_S)
                elapsed = time.perf_counter() - started
                entries = [e for e in box.auth0.log.entries() if e.route.startswith("mgmt.")]
                ok = sum(1 for e in entries if e.status != 429)
                throttled = sum(1 for e in entries if e.status == 429)
                load = Load(plan, "import jobs", result.inserted, elapsed, ok, throttled, result.failed,
                            budget(plan, elapsed))  # fmt: skip
                return load, result.files
            finally:
                await svc.aclose()

        return asyncio.run(go())


def run(quick: bool) -> Report:
    started = time.perf_counter()
    windows = {"enterprise": 20.0 if quick else 90.0, "free": 10.0 if quick else 45.0}
    import_users = 2_000 if quick else IMPORT_USERS
    table = Table(
        ["tenant", "path", "users done", "time", "requests ok", "budget share", "429s", "failed ops",
         "users/s", f"time for {IMPORT_USERS:,} users"]
    )  # fmt: skip
    goals: list[str] = []
    per_user_rate: dict[str, float] = {}
    for plan in ("enterprise", "free"):
        load = per_user(plan, windows[plan])
        rate = load.users_done / load.seconds
        per_user_rate[plan] = rate
        table.rows.append(_row(load, f"{IMPORT_USERS / rate / 60:.0f} min (extrapolated)" if rate else "-"))
        text = f"{plan}, per-user: {load.share:.0%} of the budget, {load.failed_ops} failed"
        goals.append(verdict(load.share >= 0.9 and load.failed_ops == 0, text))
        print(f"  {table.rows[-1]}", flush=True)
    for plan in ("enterprise", "free"):
        load, files = imports(plan, import_users)
        rate = load.users_done / load.seconds
        measured = import_users == IMPORT_USERS
        table.rows.append(_row(load, f"{load.seconds:.0f} s" + ("" if measured else " (extrapolated linearly)")
                               if measured else f"{IMPORT_USERS / rate:.0f} s (extrapolated)"))  # fmt: skip
        speedup = rate / per_user_rate[plan] if per_user_rate[plan] else float("inf")
        goals.append(verdict(load.failed_ops == 0 and speedup >= 10,
                             f"{plan}, import jobs: {load.users_done:,} users in {files} files, "
                             f"{speedup:.0f}x the per-user rate, {load.failed_ops} failed"))  # fmt: skip
        print(f"  {table.rows[-1]}", flush=True)
    report = Report(
        "4. Rate-limit use",
        inputs=[
            "Enterprise: burst 50, 16 requests/s; free: 2 requests/s; both on every Management API route",
            f"per-user: the worker's service on backfill work items, {CONCURRENCY} at once, for a fixed window "
            f"({windows['enterprise']:.0f} s Enterprise, {windows['free']:.0f} s free)",
            f"import jobs: the service of `entra-sync backfill --import-jobs` on {import_users:,} in-scope joiners",
        ],
        tables=[("Backfill under Auth0 rate limits", table)],
        goals=goals,
        notes=[
            "budget share = requests Auth0 accepted / (burst + sustained rate x elapsed time); 429s are not counted "
            "as used budget.",
            "failed ops = work items that ended in an error (the host would retry them) or rows an import refused.",
            f"time for {IMPORT_USERS:,} users (per-user) = {IMPORT_USERS:,} / users per second in the window.",
        ],
    )
    report.seconds = time.perf_counter() - started
    return report


def _row(load: Load, extrapolated: str) -> list[str]:
    return [load.plan, load.mode, f"{load.users_done:,}", f"{load.seconds:.1f} s", str(load.ok_requests),
            f"{load.share:.0%}", str(load.throttled), str(load.failed_ops),
            f"{load.users_done / load.seconds:.1f}", extrapolated]  # fmt: skip
