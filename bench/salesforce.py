"""Benchmark 9: the Salesforce target against the Salesforce emulator: API calls per lifecycle event
(counted from the emulator's request log by route, against the minimum), and a backfill of an
in-scope tenant into an empty org under a 100,000-call daily allocation (``backfill --target
salesforce`` with its creates and permission set assignments gathered into collections)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import UNGUARDED, Report, Sandbox, Table, lifecycle, prime, run_items, verdict
from bench.efficiency import MINIMUM as GRAPH_MINIMUM
from sandbox.mapping import SALESFORCE_ATTRIBUTES
from sandbox.salesforce import SalesforceEmulator
from shared.bootstrap import App
from shared.core.work import WorkItem, user_item
from shared.targets.salesforce.target import SalesforceTarget

TARGET = "salesforce"
ALLOCATION = 100_000  # the org's daily API allocation (the emulator's control)
# The backfill's identities in flight (its --concurrency): the README's 200, and twice that (an identity
# waits in one gathering or the other, its create's or its assignments', so 200 fill neither).
CONCURRENCIES = (200, 400)
BACKFILL_LIMIT_S = 2400.0  # a backfill that takes longer is stopped and reported as such
PER_CALL = 200  # records in one sObject Collections call
ABOUT = 1.5  # "about one call per 200": at most 1.5 times the full collections the records need (a batch goes
# part-full when nobody joined it for 50 ms: gather.QUIET_S)
FALLBACK = "ops@sandbox.example.com"
STAFF_SETS = frozenset({"Staff_Access"})  # Entra group 0
SALES_SETS = frozenset({"Sales_Reader", "group:Sales_Bundle"})  # Entra group 1, with its profile and role
SALES_PROFILE, SALES_ROLE, DEFAULT_PROFILE = "Sales User", "West", "Standard User"
LEAVER_RECORDS = {"Opportunity": 3, "Lead": 2, "Case": 2}  # open records of the leaver (one of each closed too)
_FIELDS: dict[str, dict[str, Any]] = {
    "Opportunity": {"Name": "Bench deal", "StageName": "Prospecting", "CloseDate": "2027-03-31"},
    "Lead": {"Company": "Bench Co", "LastName": "Bench lead"},
    "Case": {"Subject": "Bench case"},
}
WARM = (("Profile", SALES_PROFILE), ("UserRole", SALES_ROLE), ("PermissionSet", "Staff_Access"),
        ("PermissionSetGroup", "Sales_Bundle"), ("Queue", "Leavers"))  # fmt: skip
_CLOSED: dict[str, dict[str, Any]] = {
    "Opportunity": {"StageName": "Closed Won"},
    "Lead": {"IsConverted": True},
    "Case": {"Status": "Closed"},
}


def section(group_ids: Sequence[str], extra: str = "") -> str:
    """The ``salesforce`` target section (under ``targets``): group 0 gives a permission set, group 1
    the Sales profile and role and a set and a set group; everyone else the default profile;
    ``extra``: more keys of the section (one line of YAML)."""
    staff, sales = group_ids[0], group_ids[1]
    return (
        "  salesforce:\n" + SALESFORCE_ATTRIBUTES + f"    default_profile: {DEFAULT_PROFILE}\n"
        f"    profiles: [{{group: {sales}, profile: {SALES_PROFILE}}}]\n"
        f"    roles: [{{group: {sales}, role: {SALES_ROLE}}}]\n"
        "    permission_sets:\n"
        f"      - {{group: {staff}, permission_sets: [Staff_Access]}}\n"
        f"      - {{group: {sales}, permission_sets: [Sales_Reader, 'group:Sales_Bundle']}}\n"
        f"    reassign: {{to: [manager, fallback_user, queue], fallback_user: {FALLBACK}, queue: Leavers}}\n"
        + (f"    {extra}\n" if extra else "")
    )


def org_seed(licences: int) -> dict[str, Any]:
    """The org before the sync: the section's profile, role, sets and queue, the fallback owner, and
    ``licences`` Salesforce licences."""
    return {
        "licenses": [{"name": "Salesforce", "total": licences}],
        "profiles": [{"name": SALES_PROFILE, "license": "Salesforce"}],
        "roles": [{"name": SALES_ROLE}],
        "permission_sets": [{"name": n, "label": n} for n in ("Staff_Access", "Sales_Reader")],
        "permission_set_groups": [{"name": "Sales_Bundle", "label": "Sales Bundle"}],
        "queues": [{"name": "Leavers", "sobjects": ["Lead", "Case"]}],
        "users": [{"Username": FALLBACK, "LastName": "Ops", "Email": FALLBACK}],
    }


def sandbox(org: SalesforceEmulator, users: int, seed: int, extra: str = "") -> Sandbox:
    env = {
        "SALESFORCE_INSTANCE_URL": org.origin,
        "SALESFORCE_CLIENT_ID": org.client_id,
        "SALESFORCE_CLIENT_SECRET": org.client_secret,
    }
    return Sandbox(users=users, seed=seed, others=lambda ids: section(ids, extra), extra_env=env)


def sf_target(svc: App) -> SalesforceTarget:
    target = svc.job(TARGET).target
    assert isinstance(target, SalesforceTarget)
    return target


# -- calls per event -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Minimum:
    """The least a client of the Salesforce REST API can read and write for one event, with the
    worker's own rules: a linked identity's change is planned against what its link remembers was
    applied; a deactivation reads the user (it may be someone else's state); names (profile, role,
    permission set ids) and the token are known to a warm process."""

    reads: int
    writes: int
    why_reads: str
    why_writes: str


MINIMUM = {
    "joiner": Minimum(
        1,
        2,
        "one SOQL query for the matching precedence (FederationIdentifier, EmployeeNumber, Email and Username "
        "in one WHERE with OR: SOQL has it, and the precedence is applied to the rows it returns)",
        "the create; one collections call for its permission sets (the issue's figure)",
    ),
    "mover (one attribute)": Minimum(0, 1, "none: planned against what the link remembers", "one PATCH of the user"),
    "group change": Minimum(
        0,
        2,
        "none: planned against what the link remembers",
        "one PATCH (ProfileId and UserRoleId together); one collections call assigning both new sets",
    ),
    "leaver": Minimum(
        6,
        5,
        "the user (a deactivation is never decided from memory); the open records of each of the 3 objects; "
        "the new owner (the fallback user: active?); the user's assignments of the managed sets (their ids)",
        "one collections PATCH of OwnerId per object (3); one collections DELETE of the managed assignments; "
        "IsActive = false",
    ),
    "no-op replay": Minimum(0, 0, "none: the link remembers the account", "nothing differs"),
}


@dataclass
class Calls:
    graph: int
    reads: int
    writes: int
    routes: dict[str, int]


def counted(entries: Sequence[Any]) -> tuple[int, int, dict[str, int]]:
    """(reads, writes, calls by route) of Salesforce request-log entries; the OAuth token is listed
    by route and counted in neither (it is not an API call of the allocation)."""
    routes = Counter(str(e.route).removeprefix("salesforce.") for e in entries)
    api = [e for e in entries if e.route != "salesforce.oauth.token"]
    writes = sum(1 for e in api if e.write)
    return len(api) - writes, writes, dict(routes)


def judge(event: str, calls: Calls) -> str:
    """``met`` when the writes are the minimum and the reads at most it; else what differs."""
    low = MINIMUM[event]
    off = [f"writes {calls.writes - low.writes:+d}"] if calls.writes != low.writes else []
    off += [f"reads {calls.reads - low.reads:+d}"] if calls.reads > low.reads else []
    return "MISSED: " + ", ".join(off) if off else "met"


def own_records(org: SalesforceEmulator, owner: str) -> dict[str, int]:
    """Open records ``owner`` holds, by object."""
    closed = {"Opportunity": "IsClosed", "Lead": "IsConverted", "Case": "IsClosed"}
    return {
        sobject: sum(1 for r in org.org.records[sobject].values() if r["OwnerId"] == owner and not r.get(flag))
        for sobject, flag in closed.items()
    }


def give_records(org: SalesforceEmulator, owner: str) -> None:
    """The leaver's open Opportunities, Leads and Cases (and one closed of each, which stay)."""
    for sobject, count in LEAVER_RECORDS.items():
        for n in range(count + 1):
            values = {"OwnerId": owner, **_FIELDS[sobject], **(_CLOSED[sobject] if n == count else {})}
            org.org.create(sobject, values, trusted=True)


def calls_per_event(org: SalesforceEmulator) -> tuple[dict[str, Calls], dict[str, int]]:
    """Each lifecycle event once through the worker's dispatcher; the calls each made, and the open
    records the leaver still owns afterwards."""
    org.reset()
    org.seed(org_seed(100))
    with sandbox(org, users=60, seed=21) as box:
        return asyncio.run(_events(box, org))


def sf_id(org: SalesforceEmulator, entra_id: str) -> str:
    found = [u for u in org.org.records["User"].values() if str(u.get("FederationIdentifier") or "") == entra_id]
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} Salesforce users for {entra_id}")
    return str(found[0]["Id"])


async def _events(box: Sandbox, org: SalesforceEmulator) -> tuple[dict[str, Calls], dict[str, int]]:
    svc = box.services()
    results: dict[str, Calls] = {}
    try:
        await prime(svc)
        dump = box.graph.snapshot(full=True)["dump"]
        staff, sales = (transitive(dump["members"], g) for g in box.group_ids[:2])
        spare = [u for u in box.members() if u["id"] not in sales]
        # The leaver holds a managed set (it is in group 0), so a removal is part of its minimum.
        leaver = next(u for u in spare if u["id"] in staff)
        mover, changer = [u for u in spare if u["id"] != leaver["id"]][:2]
        for person in (mover, changer, leaver):  # first contact: the links remember the users
            await svc.dispatcher.run(user_item(person["id"], "notification"))
        names = sf_target(svc).names  # a warm process has the org's names (read whole, kept 10 minutes)
        for kind, name in WARM:
            await names.id_of(kind, name)
        owner = sf_id(org, leaver["id"])
        give_records(org, owner)

        async def count(event: str, items: list[WorkItem], follow: bool) -> None:
            box.graph.log.clear()
            org.log.clear()
            await run_items(svc, items, follow)
            reads, writes, routes = counted(org.log.entries())
            results[event] = Calls(box.graph.log.total, reads, writes, routes)

        await lifecycle(box, svc, (mover, changer, leaver), count)
        return results, own_records(org, owner)
    finally:
        await svc.aclose()


def events_table(results: Mapping[str, Calls]) -> tuple[Table, list[str]]:
    """The calls of each event against its minimum, and the two goals: writes exactly the minimum
    (the issue's: a joiner needs the create and one call for its permission sets), reads at most it."""
    table = Table(
        ["event", "Graph calls", "Graph minimum", "Salesforce reads", "minimum reads", "Salesforce writes",
         "minimum writes", "verdict", "Salesforce calls by route"]
    )  # fmt: skip
    for event, calls in results.items():
        low = MINIMUM[event]
        by_route = ", ".join(f"{k} {v}" for k, v in sorted(calls.routes.items()))
        table.rows.append(
            [event, str(calls.graph), str(GRAPH_MINIMUM[event].graph), str(calls.reads), str(low.reads),
             str(calls.writes), str(low.writes), judge(event, calls), by_route]
        )  # fmt: skip
    writes = [e for e, c in results.items() if c.writes != MINIMUM[e].writes]
    reads = [f"{e} {c.reads} of {MINIMUM[e].reads}" for e, c in results.items() if c.reads > MINIMUM[e].reads]
    goals = [
        verdict(not writes, "Salesforce writes = the minimum for every event (the joiner: the create and one call for "
                "its permission sets; no call for a no-op)" + (f"; off: {', '.join(writes)}" if writes else "")),
        verdict(not reads, "Salesforce reads at most the minimum for every event"
                + (f"; over: {', '.join(reads)}" if reads else "")),
    ]  # fmt: skip
    return table, goals


# -- backfill --------------------------------------------------------------------------------------


def transitive(members: Mapping[str, Sequence[str]], group: str) -> set[str]:
    """Everything in ``group``, through nested groups (bounded by the number of groups)."""
    seen: set[str] = set()
    todo = [group]
    for _ in range(len(members) + 1):
        if not todo:
            break
        nxt: list[str] = []
        for g in todo:
            for m in members.get(g, ()):
                if m not in seen:
                    seen.add(m)
                    if m in members:
                        nxt.append(m)
        todo = nxt
    return seen


def expected_access(box: Sandbox) -> dict[str, tuple[str, str | None, frozenset[str]]]:
    """Each in-scope Entra user's profile, role and managed sets, worked out from the tenant's
    memberships (not by the product's rules)."""
    dump = box.graph.snapshot(full=True)["dump"]
    staff, sales = (transitive(dump["members"], g) for g in box.group_ids[:2])
    out: dict[str, tuple[str, str | None, frozenset[str]]] = {}
    for user in box.members():
        uid = user["id"]
        sets = (STAFF_SETS if uid in staff else frozenset()) | (SALES_SETS if uid in sales else frozenset())
        out[uid] = (SALES_PROFILE, SALES_ROLE, sets) if uid in sales else (DEFAULT_PROFILE, None, sets)
    return out


def org_access(org: SalesforceEmulator) -> dict[str, list[tuple[str, str | None, frozenset[str], bool]]]:
    """Each stamped Salesforce user's (profile, role, permission sets and groups, active), by the
    Entra object id in its FederationIdentifier."""
    records = org.org.records
    held: dict[str, set[str]] = {}
    for a in records["PermissionSetAssignment"].values():
        if a.get("PermissionSetGroupId"):
            name = "group:" + str(records["PermissionSetGroup"][a["PermissionSetGroupId"]]["DeveloperName"])
        else:
            ps = records["PermissionSet"][a["PermissionSetId"]]
            if ps.get("IsOwnedByProfile"):
                continue
            name = str(ps["Name"])
        held.setdefault(str(a["AssigneeId"]), set()).add(name)
    out: dict[str, list[tuple[str, str | None, frozenset[str], bool]]] = {}
    for u in records["User"].values():
        owner = str(u.get("FederationIdentifier") or "")
        if not owner:
            continue
        profile = str(records["Profile"][u["ProfileId"]]["Name"])
        role = str(records["UserRole"][u["UserRoleId"]]["Name"]) if u.get("UserRoleId") else None
        out.setdefault(owner, []).append((profile, role, frozenset(held.get(str(u["Id"]), ())), bool(u["IsActive"])))
    return out


def access_problems(
    expected: Mapping[str, tuple[str, str | None, frozenset[str]]],
    found: Mapping[str, Sequence[tuple[str, str | None, frozenset[str], bool]]],
) -> list[str]:
    """What differs between the users the tenant should have in Salesforce and those it has: one
    line per user missing, doubled, or with another profile, role or sets (or inactive)."""
    problems: list[str] = []
    for uid, (profile, role, sets) in expected.items():
        users = found.get(uid, [])
        if len(users) != 1:
            problems.append(f"{uid}: {len(users)} Salesforce users")
        elif users[0] != (profile, role, sets, True):
            problems.append(f"{uid}: has {users[0]}, wants {(profile, role, sorted(sets), True)}")
    problems += [f"{uid}: not in scope, yet a Salesforce user" for uid in found if uid not in expected]
    return problems


@dataclass
class Backfilled:
    in_scope: int
    created: int
    failed: int
    seconds: float
    api_used: int  # from the emulator's Sforce-Limit-Info usage
    routes: dict[str, int]
    problems: list[str]
    # (collections calls, records) the gathered creates of users, and of their assignments, took
    batches: dict[str, tuple[int, int]]
    concurrency: int


def backfill(size: int, concurrency: int, seed: int = 5) -> Backfilled:
    """A tenant with about ``size`` in-scope users into an empty org (licences for all), through the
    product's backfill with its collections gathering on."""
    share = 0.92  # the seeded tenants' share of enabled Members, about
    with SalesforceEmulator().start() as org:
        org.seed(org_seed(size + 100))
        org.set_api_usage(used=0, limit=ALLOCATION)
        with sandbox(org, users=round(size / share), seed=seed, extra=UNGUARDED) as box:
            expected = expected_access(box)
            org.log.clear()
            result, batches = asyncio.run(_backfill(box, concurrency))
            used = org.api_used()
            routes = {k.removeprefix("salesforce."): v for k, v in org.log.counts().items()}  # counts: unbounded
            problems = access_problems(expected, org_access(org))
    return Backfilled(
        result.in_scope, result.created, result.failed, result.seconds, used, routes, problems, batches, concurrency
    )


async def _backfill(box: Sandbox, concurrency: int) -> tuple[Any, dict[str, tuple[int, int]]]:
    svc = box.services()
    target = sf_target(svc)
    batches: dict[str, list[int]] = {}

    def counting(kind: str, gatherer: Any) -> None:
        """Each call the gatherer sends, and its records, counted under ``kind`` (the calls
        themselves are the emulator's: the two counts are compared in the goals)."""
        send = gatherer.send
        tally = batches.setdefault(kind, [0, 0])

        async def sent(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            tally[0] += 1
            tally[1] += len(records)
            return list(await send(records))

        gatherer.send = sent

    counting("users", target.new_users)
    counting("permission set assignments", target.new_assignments)
    try:
        await prime(svc)
        result = await asyncio.wait_for(svc.backfill(TARGET, concurrency=concurrency).run(), BACKFILL_LIMIT_S)
        return result, {kind: (calls, records) for kind, (calls, records) in batches.items()}
    finally:
        await svc.aclose()


def per_200(calls: int, records: int) -> float:
    return calls / records * PER_CALL if records else float("nan")


def backfill_goals(b: Backfilled) -> list[str]:
    """The backfill's verdicts: every user right, the allocation barely touched, about one
    collections call per 200 users for the creates and per 200 assignments for those."""
    creates = b.routes.get("collections.create", 0)
    singles = b.routes.get("users.create", 0) + b.routes.get("permission_set_assignments.create", 0)
    gathered = sum(calls for calls, _ in b.batches.values())
    rates = {kind: per_200(calls, records) for kind, (calls, records) in b.batches.items()}
    full = {kind: -(-records // PER_CALL) for kind, (_, records) in b.batches.items()}
    about = all(calls <= ABOUT * full[kind] for kind, (calls, _) in b.batches.items())
    at = f"--concurrency {b.concurrency}: "
    return [
        verdict(
            not b.problems and b.created == b.in_scope and b.failed == 0,
            f"{at}every in-scope user created once, active, with its profile, role and permission sets, checked in the "
            f"org ({b.created:,} of {b.in_scope:,}; {len(b.problems)} wrong"
            + (f", the first: {b.problems[0]}" if b.problems else "")
            + ")",
        ),
        verdict(
            b.api_used <= ALLOCATION // 10,
            f"{at}API calls well under the daily allocation, at most a tenth of {ALLOCATION:,}: {b.api_used:,}",
        ),
        verdict(
            singles == 0 and gathered == creates and len(rates) == 2 and about,
            f"{at}about one collections call per 200 users for the creates and per 200 assignments for those (at most "
            f"{ABOUT} times the full calls they need), calls per 200: "
            + ", ".join(f"{kind} {rate:.2f} ({b.batches[kind][0]} for {full[kind]})" for kind, rate in rates.items())
            + f"; {singles} single-record creates; {creates:,} collections creates in the emulator's log",
        ),
    ]


# -- the report ------------------------------------------------------------------------------------


def run(quick: bool) -> Report:
    started = time.perf_counter()
    with SalesforceEmulator().start() as org:
        results, left = calls_per_event(org)
    events, event_goals = events_table(results)
    size = 1_000 if quick else 10_000
    throughput = Table(
        ["--concurrency", "in-scope users", "wall", "users/s", "created", "failed", "API calls (Sforce-Limit-Info)",
         "API calls per 200 users", "of the allocation", "user creates: calls / records",
         "assignments: calls / records", "Salesforce calls by route"]
    )  # fmt: skip
    backfill_verdicts: list[str] = []
    for concurrency in CONCURRENCIES:
        b = backfill(size, concurrency)
        print(
            f"  backfill {size} at {concurrency}: {b.created} created in {b.seconds:.0f} s, {b.api_used} calls",
            flush=True,
        )
        gathered = [f"{calls:,} / {records:,}" for calls, records in b.batches.values()]
        throughput.rows.append(
            [str(concurrency), f"{b.in_scope:,}", f"{b.seconds:.1f} s",
             f"{b.in_scope / b.seconds:.0f}" if b.seconds else "-", f"{b.created:,}", str(b.failed),
             f"{b.api_used:,}", f"{per_200(b.api_used, b.in_scope):.2f}",
             f"{b.api_used / ALLOCATION:.2%}", *gathered, ", ".join(f"{k} {v}" for k, v in sorted(b.routes.items()))]
        )  # fmt: skip
        backfill_verdicts += backfill_goals(b)
    report = Report(
        "9. Salesforce target",
        inputs=[
            "the Salesforce emulator (sandbox/salesforce) on loopback, driven by the product's own client "
            "(simple-salesforce on a thread pool); the section maps six User fields, a default profile, group 1's "
            "profile, role and two sets (one a permission set group), group 0's set, and reassignment to the "
            "manager, a fallback user or a queue",
            "calls per event: 60-user tenant; the three people converged once first (linked, the process warm); "
            "one work item per event through the worker's dispatcher; the leaver owns "
            f"{', '.join(f'{n} open {o}' for o, n in LEAVER_RECORDS.items())} records (and one closed of each) and "
            "holds a managed set (Auth0 is converged too, not counted)",
            f"backfill: a tenant with {size:,} in-scope users (about) into an org with none of them, licences for "
            f"all, a daily allocation of {ALLOCATION:,}, a fresh org and tenant for each run; `backfill --target "
            f"salesforce --concurrency N` (the service call the CLI makes; N {' and '.join(map(str, CONCURRENCIES))}), "
            "gathering on",
        ],
        tables=[("Salesforce calls per event", events), ("Backfill", throughput)],
        goals=[
            *event_goals,
            verdict(
                not any(left.values()),
                f"the leaver's open records all reassigned (left with the leaver: {sum(left.values())})",
            ),
            *backfill_verdicts,
        ],
        notes=[
            f"{event}: minimum {m.reads} reads = {m.why_reads}; {m.writes} writes = {m.why_writes}"
            for event, m in MINIMUM.items()
        ]
        + [
            "Reads and writes are the emulator's request log by route (a query page, a collection, a bulk step: "
            "one each, as Salesforce counts them); `oauth.token` is listed but is no API call of the allocation.",
            "Where the reads go over (as measured when this was written): the joiner sends one query per matcher "
            "it has a value for (the Target port's find() takes one matcher: shared/core/match.py), three here "
            "(the hire has no employee number); the leaver reads the user twice (the worker's read, then the "
            "deprovision's own), its UserLogin (the read's frozen flag, which a deactivation does not need: a "
            "refusal reads it to freeze), and each object's open records again after a batch that held fewer than "
            "200 (the first query's LIMIT is bulk_over + 1, so a short batch is all of them).",
            "The org's names (profiles, roles, permission sets and groups, queues) are each read whole once per "
            "process and kept 10 minutes (names.TTL_S); the events run in a process that has them, as a busy "
            "worker does. Graph calls are the worker's, whichever targets it converges (benchmark 3's minimum "
            "shown beside them, not judged here).",
            "The backfill's API calls are the emulator's Sforce-Limit-Info usage after the run (its allocation "
            "starts at 0); API calls per 200 users = that / in-scope users x 200. Calls and records per gathering "
            "are counted where the target sends them and must add up to the emulator's collections creates. A "
            "gathering sends when 200 records wait or nobody joined for 50 ms (gather.QUIET_S); an identity in "
            "flight waits in one of two (its create, then its assignments), so at --concurrency 200 neither "
            "is sure to fill (quick runs while this was written: 8 to 17 create calls for 1,012 users, batches of "
            "3 to 176); at 400 both do. The CLI's default --concurrency is 8.",
        ],
    )
    report.seconds = time.perf_counter() - started
    return report
