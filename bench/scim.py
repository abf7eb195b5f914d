"""Benchmark 5: the SCIM target against scim2-server: calls per lifecycle event in each server
profile (writes against the minimum, none on a replay), and the throughput of a backfill that adopts
the users the application already has and creates the rest."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import UNGUARDED, Report, Sandbox, Table, lifecycle, prime, run_items, verdict
from sandbox.mapping import scim_section
from sandbox.scim import ENTRA, FULL, PUT_ONLY, ScimApp
from shared.bootstrap import App
from shared.core.work import WorkItem, user_item

TARGET = "scim:crm"
SECTION_GROUPS = ("Staff", "Sales")  # the SCIM groups the backfill's section pushes (Entra groups 0 and 1)
EVENT_GROUPS = (*SECTION_GROUPS, "Support")  # the calls-per-event section's: one more, for a joiner in three
JOINER_IN_THREE = "joiner in 3 mapped groups, new process"
JOINER_IN_THREE_NEW = "joiner in 3 mapped groups the app lacks, new process"
FIRST_CONTACT = "first item after the backfill (3 people in sync)"


@dataclass(frozen=True)
class Minimum:
    """The least any SCIM client can read and write for one event once discovery is done (reads
    of a PUT-only server add one GET of each group written: a PUT replaces the member list whole)."""

    reads: int
    writes: int
    why_reads: str
    why_writes: str


MINIMUM = {
    FIRST_CONTACT: Minimum(
        6,
        0,
        "each user and its groups (2 x 3): a backfill's listing leaves the link no memory of the account",
        "nothing differs",
    ),
    "joiner": Minimum(
        2,
        2,
        "the matching precedence's externalId and userName lookups, no GET /Groups (known to the process)",
        "create the user; add it to its group",
    ),
    "mover (one attribute)": Minimum(
        0, 1, "none: planned against what the link remembers", "one PATCH (or PUT) of the user"
    ),
    "group change": Minimum(
        0,
        1,
        "none: planned against what the link remembers",
        "one PATCH (or PUT) of each SCIM group whose members change (counted from the app: nesting can make one "
        "Entra change two)",
    ),
    "leaver": Minimum(1, 1, "the account (a deprovision reads the target: it may be an admin's block)", "active=false"),
    "no-op replay": Minimum(0, 0, "none: the link remembers the account", "nothing differs"),
    JOINER_IN_THREE: Minimum(
        7,
        4,
        "discovery (/ServiceProviderConfig, /Schemas) 2, the externalId and userName lookups 2, each group "
        "by externalId once 3 (they exist; a group not found is also looked up by displayName before a create)",
        "create the user; add it to each group",
    ),
    JOINER_IN_THREE_NEW: Minimum(
        10,
        7,
        "discovery 2, the externalId and userName lookups 2, each group by externalId and by displayName "
        "(a same-named group is adopted) 6",
        "create the user; create each group; add the user to each",
    ),
}
CONCURRENCY = 64  # the backfill's identities in flight (its --concurrency)
BACKFILL_LIMIT_S = 1200.0  # a backfill that takes longer is stopped and reported as such


def _sandbox(app: ScimApp, users: int, seed: int, extra: str = "", groups: Sequence[str] = SECTION_GROUPS) -> Sandbox:
    def others(ids: list[str]) -> str:
        return scim_section(app.base_url, list(zip(ids, groups, strict=False)), extra=extra)

    return Sandbox(users=users, seed=seed, others=others, extra_env={"SCIM_CRM_TOKEN": app.token})


def _scim_calls(app: ScimApp) -> tuple[int, int, dict[str, int]]:
    entries = app.log.entries()
    writes = sum(1 for e in entries if e.write)
    return len(entries) - writes, writes, dict(Counter(e.route.removeprefix("scim.") for e in entries))


def _memberships(app: ScimApp) -> dict[str, frozenset[str]]:
    return {str(g["displayName"]): frozenset(app.members_of(str(g["id"]))) for g in app.groups()}


def calls_per_event() -> tuple[Table, bool]:
    """Each event once per server profile: the SCIM reads and writes against the minimum, and
    whether every event in every profile kept to it."""
    calls = Table(
        ["profile", "event", "SCIM reads", "minimum reads", "SCIM writes", "minimum writes", "SCIM calls by route"]
    )
    ok = True
    with ScimApp() as app, _sandbox(app, users=60, seed=21, groups=EVENT_GROUPS) as box:
        for n, profile in enumerate((FULL, ENTRA, PUT_ONLY)):
            app.reset()
            app.set_profile(profile)
            rows = asyncio.run(_events(box, app, n))
            for event, (reads, writes, routes, *measured) in rows.items():
                low = MINIMUM[event]
                low_writes = measured[0] if measured else low.writes
                # Without PATCH a group's members are replaced whole: each group written is read first.
                low_reads = low.reads + (routes.get("groups.replace", 0) if profile == PUT_ONLY else 0)
                ok &= writes == low_writes and reads <= low_reads
                by_route = ", ".join(f"{k} {v}" for k, v in sorted(routes.items()))
                calls.rows.append([profile, event, str(reads), str(low_reads), str(writes), str(low_writes), by_route])
            print(f"  calls per event, {profile}: done", flush=True)
    return calls, ok


def run(quick: bool) -> Report:
    started = time.perf_counter()
    calls, ok = calls_per_event()
    size = 2_000 if quick else 10_000
    throughput = Table(["in-scope users", "already in the app", "run", "wall", "users/s", "created", "adopted",
                        "in sync", "failed", "SCIM calls by route"])  # fmt: skip
    with ScimApp() as app:
        figures = _backfill(app, size, throughput)
    report = Report(
        "5. SCIM target",
        inputs=[
            "scim2-server on loopback in three profiles: full (PATCH, PUT, ETags, bulk), entra (the Entra SCIM "
            "API's: PATCH only, eq filters only, no ETags, no bulk), put-only (no PATCH)",
            "calls per event: 60-user tenant, the SCIM application brought in sync by `backfill --target scim:crm` "
            "first; one work item per event through the worker's dispatcher (Auth0 is converged too, not counted)",
            f"backfill: a tenant with {size:,} in-scope users, a third of them already in the application by "
            "userName without an externalId; then the same backfill again, in sync",
        ],
        tables=[("SCIM calls per event", calls), ("Backfill throughput (full profile)", throughput)],
        goals=[
            verdict(
                ok,
                "SCIM writes = the minimum and SCIM reads at most the minimum for every event in every profile, "
                "and no call for a no-op replay",
            ),
            verdict(figures["duplicates"] == 0, f"no duplicate users after the backfill ({figures['duplicates']})"),
        ],
        notes=[
            f"{event}: minimum {m.reads} reads = {m.why_reads}; {m.writes} writes = {m.why_writes}"
            for event, m in MINIMUM.items()
        ]
        + [
            "Minimum reads: a joiner has no link, and the section's matching precedence (link, externalId, "
            "userName) looks it up by each key until one finds it; the entra profile has eq filters only, so the "
            "two keys cannot go in one `or` filter there. A linked identity's change on its first try is planned "
            "against what the link remembers was applied (no read: a change made directly in the application is "
            "reconciliation's to find), so the lifecycle's three people get one item each first (the first row): "
            "a backfill plans from its listing and leaves the link without that memory (the worker keeps no memory "
            "from an index, as an index's accounts may lack what a live read has: Auth0's export carries no "
            "roles; a SCIM listing does carry the section's groups, so this row could be 0). A deprovision always "
            "reads the account (a block is never decided from memory). Section groups are resolved once per "
            "process and kept 10 minutes (GROUPS_TTL_S): "
            "a group found by externalId needs no displayName lookup; a server without PATCH has each group read "
            "before it is replaced (in the minimum: one GET per group written). Discovery (/ServiceProviderConfig, "
            "/Schemas) is read once per process: in the backfill before the events, and again in each new process "
            "of the last two rows. The last row's groups were deleted in the application first: a group is "
            "created with no members and the member write adds the user (a create with the member would save one "
            "write per group, once in its life; member changes go through one batched writer instead).",
            "Member changes of one group go together: those asked for while a write of the group is on its way "
            "join the next write (up to 100), and a backfill holds each group write up to 3 s for the identities "
            "in flight; scim2-server's group PATCH costs about 0.1 ms per member of the group, so one PATCH per "
            "member would make a backfill quadratic.",
            "The first backfill's time is mostly scim2-server's and the product's CPU in one process (the emulator "
            "and the SCIM server are threads here); the in-sync run makes no SCIM write and shows the product's "
            "own cost per identity (lease, intent, audit, link).",
        ],
    )
    report.seconds = time.perf_counter() - started
    return report


async def _events(box: Sandbox, app: ScimApp, n: int) -> dict[str, tuple[Any, ...]]:
    """Each lifecycle event once, then a joiner in every mapped group handled by a new process;
    SCIM calls counted from the application's request log."""
    svc = box.services()
    results: dict[str, tuple[Any, ...]] = {}

    async def count(event: str, items: list[WorkItem], follow: bool, by: App | None = None) -> None:
        before = _memberships(app)
        app.log.clear()
        await run_items(by or svc, items, follow)
        results[event] = _scim_calls(app)
        if event == "group change":  # the minimum is what changed: nesting can make it two groups
            after = _memberships(app)
            changed = sum(1 for name in set(before) | set(after) if before.get(name) != after.get(name))
            results[event] = (*results[event], changed)

    try:
        await prime(svc)
        done = await svc.backfill(TARGET).run()
        assert done.failed == 0, done.failures
        members = box.members()
        scim_id = {str(u.get("externalId")): str(u["id"]) for u in app.users()}
        in_sales = _memberships(app).get("Sales", frozenset())  # transitive members, as pushed
        spare = [u for u in members if scim_id.get(u["id"]) not in in_sales]  # each profile takes three others
        people = spare[3 * n : 3 * n + 3]
        await count(FIRST_CONTACT, [user_item(u["id"], "notification") for u in people], False)
        await lifecycle(box, svc, people, count, tag=str(n))
    finally:
        await svc.aclose()
    # The review's case: a worker that has not met these groups yet, first while the application has
    # them, then after they were deleted there (as when the section has just started pushing them).
    for event, tag in ((JOINER_IN_THREE, f"{n}a"), (JOINER_IN_THREE_NEW, f"{n}b")):
        if event == JOINER_IN_THREE_NEW:
            bearer = {"Authorization": f"Bearer {app.token}"}
            for held in app.groups():
                gone = httpx.delete(f"{app.base_url}/Groups/{held['id']}", headers=bearer)
                gone.raise_for_status()
        hire = box.graph.create_user(
            displayName=f"Bench Threefold{tag}", givenName="Bench", surname="Threefold",
            mail=f"bench.threefold{tag}@sandbox.example",
            userPrincipalName=f"bench.threefold{tag}@sandbox.onmicrosoft.com", department="Research",
            accountEnabled=True,
        )  # fmt: skip
        for group in box.group_ids[: len(EVENT_GROUPS)]:
            box.graph.add_member(group, hire["id"])
        fresh = box.services()
        try:
            await count(event, [user_item(hire["id"], "notification")], False, by=fresh)
        finally:
            await fresh.aclose()
    return results


def _backfill(app: ScimApp, size: int, table: Table) -> dict[str, int]:
    share = 0.9  # the seeded tenants' share of enabled Members in scope, about
    # Adopting thousands rewrites thousands: the mass-change guard would hold it for an approval.
    with _sandbox(app, users=round(size / share), seed=5, extra=UNGUARDED) as box:
        people = box.members()
        existing = people[: len(people) // 3]
        app.add_users(
            (
                {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": u["userPrincipalName"],
                 "active": True, "displayName": f"Before {u['displayName']}"}
                for u in existing
            ),
            validated_shape=True,
        )  # fmt: skip
        for run_name in ("first", "again (in sync)"):
            app.log.clear()
            result = _run(box, lambda svc: svc.backfill(TARGET, concurrency=CONCURRENCY).run())
            _, _, routes = _scim_calls(app)
            table.rows.append(
                [f"{result.in_scope:,}", f"{len(existing):,}", run_name, f"{result.seconds:.1f} s",
                 f"{result.in_scope / result.seconds:.0f}", f"{result.created:,}", f"{result.adopted:,}",
                 f"{result.in_sync:,}", str(result.failed), ", ".join(f"{k} {v}" for k, v in sorted(routes.items()))]
            )  # fmt: skip
            print(f"  backfill {size}: {run_name}: {table.rows[-1][:9]}", flush=True)
        names = Counter(str(u.get("externalId")) for u in app.users() if u.get("externalId"))
        return {"duplicates": sum(c - 1 for c in names.values() if c > 1)}


def _run(box: Sandbox, work: Callable[[App], Coroutine[Any, Any, Any]]) -> Any:
    async def go() -> Any:
        svc = box.services()
        try:
            await svc.ensure_storage()
            return await asyncio.wait_for(work(svc), BACKFILL_LIMIT_S)
        finally:
            await svc.aclose()

    return asyncio.run(go())
