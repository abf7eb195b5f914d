"""Benchmark 3: API calls per lifecycle event, counted from the emulators' request logs."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from bench.common import Report, Sandbox, Table, lifecycle, prime, run_items, verdict
from sandbox.mirror import mirror
from shared.core.work import WorkItem, user_item
from shared.mapping.load import load_mapping


@dataclass(frozen=True)
class Minimum:
    graph: int
    auth0_reads: int
    auth0_writes: int
    why: str


# The least a level-triggered worker can do for each event (see the notes in the report). A change
# to a linked identity is planned against what its link remembers was applied: no Auth0 read.
MINIMUM = {
    "joiner": Minimum(
        2, 3, 2, "read user + relevant groups; deterministic-id get, app_metadata search, email match; create + roles"
    ),
    "mover (one attribute)": Minimum(2, 0, 1, "read user + groups; one PATCH"),
    "group change": Minimum(3, 0, 1, "groups delta; read user + groups; one role assign"),
    # A block is someone else's state as much as ours (an admin may have blocked the account by
    # hand): the decision reads the account, never the link's memory (issue 18, item 1).
    "leaver": Minimum(1, 1, 3, "read user (disabled); read the account; block + revoke sessions + refresh tokens"),
    "no-op replay": Minimum(2, 0, 0, "read user + groups; nothing to call"),
}


def run(quick: bool) -> Report:
    started = time.perf_counter()
    with Sandbox(users=60, seed=21) as box:
        mapping = load_mapping(box.env["SYNC_MAPPING_FILE"])
        mirror(box.graph, box.auth0, mapping)
        rows = asyncio.run(_measure(box))
    table = Table(
        [
            "event",
            "Graph calls",
            "Auth0 reads",
            "Auth0 writes",
            "minimum (G/R/W)",
            "write ratio",
            "Auth0 calls by route",
        ]
    )
    ok = True
    for event, (graph, auth0_routes, writes) in rows.items():
        low = MINIMUM[event]
        reads = sum(auth0_routes.values()) - writes
        ratio = f"{writes / low.auth0_writes:.2f}" if low.auth0_writes else ("0 writes" if writes == 0 else "REDUNDANT")
        ok &= writes == low.auth0_writes and reads <= low.auth0_reads
        routes = ", ".join(f"{k.removeprefix('mgmt.')} {v}" for k, v in sorted(auth0_routes.items()))
        table.rows.append(
            [
                event,
                str(graph),
                str(reads),
                str(writes),
                f"{low.graph}/{low.auth0_reads}/{low.auth0_writes}",
                ratio,
                routes,
            ]
        )
    report = Report(
        "3. API-call efficiency",
        inputs=[
            "60-user tenant, Auth0 side in sync (sandbox.mirror); one work item per event, run by the worker's service"
        ],
        tables=[("Calls per event", table)],
        goals=[verdict(ok, "no redundant writes (ratio 1.00), no Auth0 read beyond the minimum, no call for a no-op")],
        notes=[f"{event}: minimum = {m.why}" for event, m in MINIMUM.items()]
        + [
            "Minimum reads: the worker re-reads Entra for every item (the design's rule); a linked identity's "
            "change is planned against what its link remembers was applied to the account (no Auth0 read: a "
            "change made directly in Auth0 is reconciliation's to find); a joiner has no link and follows the "
            "mapping's matching precedence (deterministic id, then Auth0's default matchers app_metadata and email).",
            "Each of the three people was converged once before (a first contact that writes the link's memory).",
        ],
    )
    report.seconds = time.perf_counter() - started
    return report


async def _measure(box: Sandbox) -> dict[str, tuple[int, dict[str, int], int]]:
    svc = box.services()
    try:
        await prime(svc)
        members = box.members()
        sales = box.group_ids[1]
        in_sales = set(box.graph.snapshot(full=True)["dump"]["members"].get(sales, []))
        mover, changer, leaver = [u for u in members if u["id"] not in in_sales][:3]
        box.auth0.add_sessions(f"auth0|{leaver['id']}", 1, refresh_tokens=1)
        results: dict[str, tuple[int, dict[str, int], int]] = {}
        await svc.jobs["auth0"].target.role_ids(["Employee"])  # a warm worker has the role ids cached
        await svc.delta.watched_groups()  # and the groups nested in the mapped ones worked out
        for person in (mover, changer, leaver):  # first contact: the links remember the accounts
            await svc.dispatcher.run(user_item(person["id"], "notification"))

        async def count(event: str, items: list[WorkItem], follow: bool) -> None:
            box.graph.log.clear()
            box.auth0.log.clear()
            await run_items(svc, items, follow)
            auth0: Counter[str] = Counter(e.route for e in box.auth0.log.entries())
            writes = sum(1 for e in box.auth0.log.entries() if e.write)
            results[event] = (box.graph.log.total, dict(auth0), writes)

        await lifecycle(box, svc, (mover, changer, leaver), count)
        return results
    finally:
        await svc.aclose()
