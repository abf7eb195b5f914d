"""Benchmark 1: propagation latency, Entra change -> notification -> graph_webhook -> queue ->
sync_worker -> Auth0, with the Graph emulator sending real notifications to the functions served
by the Functions host stand-in. Convergence is read from the Auth0 emulator's state."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import UNGUARDED, Report, Sandbox, Table, pcts, percentile, prime, verdict
from sandbox.mirror import mirror
from sandbox.stack import functions_host
from shared.core.work import WorkItem
from shared.mapping.load import load_mapping
from shared.services.worker import Outcome

MIX = (("joiner", 0.15), ("mover", 0.40), ("group change", 0.25), ("leaver", 0.20))
SETTLE_S = 60.0


@dataclass
class Change:
    kind: str
    user: str
    check: Callable[[], bool]
    value: str = ""
    at: float = 0.0
    converged: float = 0.0


@dataclass
class Stages:
    queue_wait: list[float] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)

    def observe(self, item: WorkItem, outcome: Any) -> None:
        if not isinstance(outcome, Outcome) or outcome.item.kind != "user" or outcome.item.source != "notification":
            return
        self.queue_wait.append(outcome.started_at - outcome.item.enqueued_at)
        for stage in ("source", "target_read", "target_write", "storage"):
            self.timings.setdefault(stage, []).append(outcome.timings.get(stage, 0.0))
        self.timings.setdefault("worker total", []).append(outcome.finished_at - outcome.started_at)


def run(quick: bool) -> Report:
    started = time.perf_counter()
    notifications = 300 if quick else 3_000
    rate = 50.0
    # A synthetic mix at a steady rate is not a mass event: the guard's thresholds are set out of its way.
    with Sandbox(users=notifications + 500, seed=31, mapping_extra=UNGUARDED) as box:
        mapping = load_mapping(box.env["SYNC_MAPPING_FILE"])
        mirror(box.graph, box.auth0, mapping)
        changes, stages, hook, delivered = _drive(box, notifications, rate)
    done = [c for c in changes if c.converged]
    e2e = [c.converged - c.at for c in done]
    table = Table(["measure", "samples", "p50", "p95", "p99", "max"])
    table.rows.append(["end to end (all)", *pcts(e2e)])
    for kind, _share in MIX:
        table.rows.append([f"end to end: {kind}", *pcts([c.converged - c.at for c in done if c.kind == kind])])
    table.rows.append(["webhook answer", *pcts(hook)])
    table.rows.append(["queue wait (enqueued_at -> worker start)", *pcts(stages.queue_wait)])
    for stage, samples in stages.timings.items():
        table.rows.append([f"worker: {stage}", *pcts(samples)])
    leaver = [c.converged - c.at for c in done if c.kind == "leaver"]
    p50, p99 = percentile(e2e, 50), percentile(e2e, 99)
    report = Report(
        "1. Propagation latency",
        inputs=[
            f"{len(changes):,} Entra changes producing {delivered:,} notifications at {rate:.0f} notifications/s",
            "mix: " + ", ".join(f"{k} {s:.0%}" for k, s in MIX) + " (a joiner is created and added to a role group: "
            "two notifications; a leaver is disabled and has a session and a refresh token to revoke)",
            f"tenant of {notifications + 500:,} users, Auth0 side in sync; no Auth0 rate limit (benchmark 4 has them)",
        ],
        tables=[("Latency (end to end = Graph change until the Auth0 emulator's state shows it)", table)],
        goals=[
            verdict(
                percentile(hook, 99) < 3.0, f"webhook answer p99 well under 3 s ({percentile(hook, 99) * 1000:.0f} ms)"
            ),
            verdict(p50 <= 0.1, f"end to end p50 <= 100 ms ({p50 * 1000:.0f} ms)"),
            verdict(p99 <= 1.0, f"end to end p99 <= 1 s ({p99 * 1000:.0f} ms)"),
            verdict(
                percentile(leaver, 99) <= 2.0,
                f"leaver incl. both revocations p99 <= 2 s ({percentile(leaver, 99) * 1000:.0f} ms)",
            ),
            verdict(len(done) == len(changes), f"{len(done)}/{len(changes)} changes converged within {SETTLE_S:.0f} s"),
        ],
        notes=[
            "Group changes take two queue hops (group item -> groups delta -> user item).",
            "Everything (emulators, host, functions, the driver) shares one Python process and its GIL on 2 cores.",
        ],
    )
    report.seconds = time.perf_counter() - started
    return report


def _drive(box: Sandbox, notifications: int, rate: float) -> tuple[list[Change], Stages, list[float], int]:
    stages = Stages()
    with functions_host(box.env) as (host, svc):
        changes = _plan(box, notifications)
        host.run_coroutine(prime(svc))
        svc.dispatcher.observers.append(stages.observe)
        host.run_timer("subscriptions_renew")
        pending: list[Change] = []
        lock = threading.Lock()
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                with lock:
                    waiting = list(pending)
                for change in waiting:
                    if change.check():
                        change.converged = time.time()
                        with lock:
                            pending.remove(change)
                time.sleep(0.002)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        box.graph.log.clear()
        start = time.time()
        sent = 0
        for change in changes:
            due = start + sent / rate
            time.sleep(max(0.0, due - time.time()))
            change.at = time.time()
            with lock:
                pending.append(change)
            sent += _apply(box, change)
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            with lock:
                if not pending:
                    break
            time.sleep(0.05)
        stop.set()
        poller.join(5)
        host.wait_idle(15)
        hook = list(host.stats(raw=True)["graph_webhook"]["samples"]["answer_time_s"])
        delivered = int(box.graph.snapshot()["notifications"].get("delivered", 0))
    return changes, stages, hook, delivered


def _plan(box: Sandbox, notifications: int) -> list[Change]:
    """The changes to make, in order, each on its own user, until they add up to ``notifications``."""
    rng = random.Random(3)
    dump = box.graph.snapshot(full=True)["dump"]
    sales = box.group_ids[1]
    in_sales = set(dump["members"].get(sales, []))
    members = [u["id"] for u in box.members()]
    rng.shuffle(members)
    free = iter(members)
    changes: list[Change] = []
    count = 0
    auth0 = box.auth0
    while count < notifications:
        kind = rng.choices([k for k, _ in MIX], [s for _, s in MIX])[0]
        if kind == "joiner":
            n = len(changes)
            user = box.graph.create_user(
                displayName=f"Bench Joiner {n}", givenName="Bench", surname=f"Joiner{n}",
                mail=f"bench.joiner.{n}@sandbox.example", userPrincipalName=f"bench.joiner.{n}@sandbox.onmicrosoft.com",
                accountEnabled=False, userType="Member",
            )  # fmt: skip
            uid = f"auth0|{user['id']}"
            changes.append(Change(kind, user["id"], lambda u=uid: "Employee" in auth0.user_role_names(u)))
            count += 2
            continue
        entra_id = next(free)
        uid = f"auth0|{entra_id}"
        if kind == "mover":
            value = f"Moved {len(changes)}"
            changes.append(Change(kind, entra_id, lambda u=uid, v=value: _account(auth0, u).get("user_metadata", {})
                                  .get("department") == v, value))  # fmt: skip
        elif kind == "group change":
            if entra_id in in_sales:
                continue
            changes.append(Change(kind, entra_id, lambda u=uid: "Sales Writer" in auth0.user_role_names(u)))
        else:
            auth0.add_sessions(uid, 1, refresh_tokens=1)
            changes.append(Change(kind, entra_id, lambda u=uid: _account(auth0, u).get("blocked") is True
                                  and auth0.sessions_of(u) == {"sessions": 0, "refresh_tokens": 0}))  # fmt: skip
        count += 1
    return changes


def _apply(box: Sandbox, change: Change) -> int:
    """Make the change in Entra; returns the notifications it causes."""
    if change.kind == "joiner":
        box.graph.update_user(change.user, accountEnabled=True)
        box.graph.add_member(box.group_ids[0], change.user)
        return 2
    if change.kind == "mover":
        box.graph.update_user(change.user, department=change.value)
    elif change.kind == "group change":
        box.graph.add_member(box.group_ids[1], change.user)
    else:
        box.graph.update_user(change.user, accountEnabled=False)
    return 1


def _account(auth0: Any, user_id: str) -> dict[str, Any]:
    return auth0.get_user(user_id) or {}
