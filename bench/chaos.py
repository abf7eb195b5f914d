"""Benchmark 7: the propagation load under faults, then the faults off and one delta pass.

While the load runs (joiners, movers, group changes, leavers, as in benchmark 1):

* the Auth0 emulator fails a fifth of the Management API calls (503, 500, 429, connections dropped
  after half a second) and the Graph emulator a tenth of its calls, both with seeded fault rules
  (``PUT /_control/faults``);
* the Graph emulator loses a tenth of the change notifications and delivers every other one one to
  three times, each copy held back up to two seconds so they arrive out of order
  (``PUT /_control/notifications``, sandbox/graph/notify.py);
* host processes that run the queue functions are killed with SIGKILL while they work and started
  again (bench/cluster.py, where it is available).

Then every fault is switched off, the ``delta_sync`` timer runs once on a host and the queues drain.
What is measured, from the emulators' own state and logs and from the product's tables:

* drift: a reconciliation dry run (the product's own comparison) and a direct check of every change
  made in Entra against the Auth0 emulator's users and roles;
* duplicate accounts: Entra identities or e-mail addresses with more than one Auth0 account;
* changes lost: changes whose result the Auth0 emulator does not show at the end;
* applied audit rows per effective change: see :func:`audit_match`;
* poison messages, each with its reason (the work item's ``poisoned`` audit row);
* the time from the faults stopping until every change shows in Auth0 and the queues are empty.

Every emulator is driven through its HTTP control endpoints only, so it may run in this process or
in another. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import TextBase64DecodePolicy

from bench.cluster import Cluster, ClusterConfig, Remote
from bench.common import UNGUARDED, Report, Table, prime, verdict
from shared import bootstrap, names
from shared.bootstrap import App
from shared.core.work import WorkItem
from shared.settings import Settings
from shared.stores.leases import LEASE_TTL_S

SEED = 13
MIX = (("joiner", 0.15), ("mover", 0.40), ("group change", 0.25), ("leaver", 0.20))
# (kind, status, share of all calls): each rule's rate is its share of the calls the rules before it
# let through, so the shares add up to the whole failure rate.
AUTH0_FAULTS = (("error", 503, 0.06), ("error", 500, 0.02), ("error", 429, 0.06), ("drop", 0, 0.06))
GRAPH_FAULTS = (("error", 503, 0.04), ("error", 500, 0.02), ("error", 429, 0.02), ("drop", 0, 0.02))
DROP_AFTER_S = 0.5  # a dropped connection closes after this long without an answer
NOTIFICATIONS = {"drop_rate": 0.10, "max_copies": 3, "hold_max_s": 2.0}
FAITHFUL = {"drop_rate": 0.0, "max_copies": 1, "hold_max_s": 0.0}
# A rate limit close to the load's pace, so some 429s also carry Auth0's x-ratelimit-reset (an
# injected 429 carries no rate-limit headers: the client waits its default second).
AUTH0_LIMIT = {"mgmt.*": {"burst": 30, "per_second": 40.0}}
MAX_KILLS = 100
MID_ITEM_TRIES = 25  # looks, 0.2 s apart, for a moment when the host to kill is running an item
START_BOUND_S = 120.0  # the longest a host restart may take before the killer gives up waiting
POLL_S = 1.0
APPLIED = frozenset({"ok", "warning", "recovered"})
# The Auth0 write routes and the audit actions that stand for a write through each.
WRITE_ROUTES: dict[str, frozenset[str]] = {
    "mgmt.users.write.create": frozenset({"create"}),
    "mgmt.users.write.update": frozenset({"update", "block", "unblock"}),
    "mgmt.users.write.delete": frozenset({"delete"}),
    "mgmt.users.roles.assign": frozenset({"assign_roles"}),
    "mgmt.users.roles.remove": frozenset({"remove_roles"}),
    "mgmt.users.sessions.delete": frozenset({"revoke_sessions"}),
    "mgmt.users.refresh_tokens.delete": frozenset({"revoke_refresh_tokens"}),
}
ROUTE_OF_ACTION = {action: route for route, actions in WRITE_ROUTES.items() for action in actions}
POISON_QUEUES = (names.WORK_POISON_QUEUE, getattr(names, "LANE_POISON_QUEUE", "sync-lane-poison"))
WORK_QUEUES = (names.WORK_QUEUE, getattr(names, "LANE_QUEUE", "sync-lane"))


@dataclass(frozen=True)
class Size:
    users: int
    changes: int
    rate: float  # changes per second
    hosts: int  # host processes, one of them serving HTTP
    kill_every_s: float
    converge_s: float  # the longest the run waits for convergence after the faults stop


QUICK = Size(users=400, changes=90, rate=6.0, hosts=2, kill_every_s=8.0, converge_s=75.0)
FULL = Size(users=2_000, changes=600, rate=6.0, hosts=3, kill_every_s=10.0, converge_s=200.0)


# -- the emulators, through their control endpoints ------------------------------------------------


def fault_rules(route: str, shares: tuple[tuple[str, int, float], ...]) -> list[dict[str, Any]]:
    """Rules that fail ``route``'s calls in the given shares (the injector tries the rules in order)."""
    rules, left = [], 1.0
    for kind, status, share in shares:
        rule: dict[str, Any] = {"route": route, "kind": kind, "rate": share / left}
        if kind == "error":
            rule["status"] = status
        else:
            rule["delay_s"] = DROP_AFTER_S
        rules.append(rule)
        left -= share
    return rules


@dataclass
class Faults:
    graph: Remote
    auth0: Remote
    seed: int

    def on(self) -> None:
        self.auth0.control("PUT", "/_control/faults", {"seed": self.seed, "rules": fault_rules("mgmt.*", AUTH0_FAULTS)})
        self.auth0.control("PUT", "/_control/limits", AUTH0_LIMIT)
        self.graph.control("PUT", "/_control/faults", {"seed": self.seed + 1, "rules": fault_rules("*", GRAPH_FAULTS)})
        self.graph.control("PUT", "/_control/notifications", {**NOTIFICATIONS, "seed": self.seed + 2})

    def off(self) -> None:
        """Every fault off; copies already held still go out (the queue is not cleared)."""
        self.auth0.control("PUT", "/_control/faults", {"rules": []})
        self.auth0.control("PUT", "/_control/limits", {})
        self.graph.control("PUT", "/_control/faults", {"rules": []})
        self.graph.control("PUT", "/_control/notifications", FAITHFUL)


# -- the load --------------------------------------------------------------------------------------


@dataclass
class Change:
    kind: str
    user: str
    value: str = ""
    at: float = 0.0


def plan(graph: Remote, auth0: Remote, groups: list[str], count: int, rng: random.Random) -> list[Change]:
    """``count`` changes of benchmark 1's mix, each on its own user; joiners are created disabled
    and leavers given a session and a refresh token now, so applying a change is one Entra write
    (two for a joiner: enabled, then added to the first group)."""
    dump = graph.control("GET", "/_control/snapshot/full")["dump"]
    in_sales = set(dump["members"].get(groups[1], []))
    members = [u["id"] for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"]
    rng.shuffle(members)
    free = iter(members)
    changes: list[Change] = []
    for _ in range(count * 3):  # a group change on someone already in the group is skipped
        if len(changes) >= count:
            break
        kind = rng.choices([k for k, _ in MIX], [s for _, s in MIX])[0]
        n = len(changes)
        if kind == "joiner":
            user = graph.control(
                "POST", "/_control/users",
                {"displayName": f"Chaos Joiner {n}", "givenName": "Chaos", "surname": f"Joiner{n}",
                 "mail": f"chaos.joiner.{n}@sandbox.example", "accountEnabled": False, "userType": "Member",
                 "userPrincipalName": f"chaos.joiner.{n}@sandbox.onmicrosoft.com"},
            )  # fmt: skip
            changes.append(Change(kind, user["id"]))
            continue
        entra_id = next(free)
        if kind == "group change" and entra_id in in_sales:
            continue
        if kind == "leaver":
            auth0.control(
                "POST", "/_control/sessions", {"user_id": f"auth0|{entra_id}", "sessions": 1, "refresh_tokens": 1}
            )
        changes.append(Change(kind, entra_id, f"Chaos {n}" if kind == "mover" else ""))
    return changes


def apply(graph: Remote, groups: list[str], change: Change) -> None:
    """Make ``change`` in Entra."""
    if change.kind == "joiner":
        graph.control("PATCH", "/_control/users", {"id": change.user, "accountEnabled": True})
        graph.control("POST", "/_control/members", {"group_id": groups[0], "member_id": change.user})
    elif change.kind == "mover":
        graph.control("PATCH", "/_control/users", {"id": change.user, "department": change.value})
    elif change.kind == "group change":
        graph.control("POST", "/_control/members", {"group_id": groups[1], "member_id": change.user})
    else:
        graph.control("PATCH", "/_control/users", {"id": change.user, "accountEnabled": False})


@dataclass
class Auth0State:
    users: dict[str, dict[str, Any]]
    roles: dict[str, set[str]]  # user id -> role names
    sessions: int
    refresh_tokens: int

    @classmethod
    def read(cls, auth0: Remote) -> Auth0State:
        snap = auth0.control("GET", "/_control/snapshot", dump="true")
        dump = snap["dump"]
        role_names = {r["id"]: r["name"] for r in dump["roles"]}
        roles = {u: {role_names.get(r, r) for r in ids} for u, ids in dump["user_roles"].items()}
        users = {u["user_id"]: u for u in dump["users"]}
        return cls(users, roles, int(snap["sessions"]), int(snap["refresh_tokens"]))

    def shows(self, change: Change) -> bool:
        uid = f"auth0|{change.user}"
        user = self.users.get(uid)
        if user is None:
            return False
        if change.kind == "joiner":
            return "Employee" in self.roles.get(uid, set()) and not user.get("blocked")
        if change.kind == "mover":
            return bool((user.get("user_metadata") or {}).get("department") == change.value)
        if change.kind == "group change":
            return "Sales Writer" in self.roles.get(uid, set())
        return user.get("blocked") is True

    def duplicates(self) -> list[str]:
        """Entra object ids and e-mail addresses that more than one account carries."""
        by_key: dict[str, list[str]] = defaultdict(list)
        for uid, user in self.users.items():
            oid = (user.get("app_metadata") or {}).get("entra_object_id") or uid.removeprefix("auth0|")
            by_key[f"object id {oid}"].append(uid)
            if user.get("email"):
                by_key[f"email {str(user['email']).lower()}"].append(uid)
        return sorted(f"{key}: {', '.join(sorted(ids))}" for key, ids in by_key.items() if len(ids) > 1)


# -- the hosts -------------------------------------------------------------------------------------


class Killer:
    """Kills a host that runs only queue functions (never the one serving the webhooks) with SIGKILL
    at seeded moments, and starts it again after a short pause, on a thread of its own."""

    def __init__(self, cluster: Cluster, every_s: float, seed: int) -> None:
        self.cluster = cluster
        self.every_s = every_s
        self.rng = random.Random(seed)
        self.kills = 0
        self.in_flight: list[int] = []  # queue items the host was running when it was killed
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-killer", daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(START_BOUND_S)

    def _run(self) -> None:
        workers = range(1, len(self.cluster.hosts))
        for _ in range(MAX_KILLS):
            if not workers or self._stop.wait(self.every_s * self.rng.uniform(0.5, 1.5)):
                return
            index = self.rng.choice(workers)
            for _ in range(MID_ITEM_TRIES):  # kill it while it runs something, if it comes to that soon
                busy = in_flight(self.cluster.hosts[index])
                if busy or self._stop.wait(0.2):
                    break
            self.cluster.kill_host(index)
            self.kills += 1
            self.in_flight.append(busy)
            self._stop.wait(self.rng.uniform(0.5, 2.0))  # down a moment, as a crashed instance is
            try:
                self.cluster.restart_host(index)
            except Exception as exc:  # reported, and the run goes on with one host fewer
                self.errors.append(f"host {index} did not start again: {exc}")
                return


def in_flight(host: Any) -> int:
    """Queue items a host process is running now (started, neither succeeded nor failed yet)."""
    try:
        stats = host.call("stats", timeout_s=10)["host"]
    except Exception:  # a host that does not answer is counted as idle: it is about to be killed anyway
        return 0
    return sum(
        int(f["invocations"]) - int(f["succeeded"]) - int(f["failed"])
        for name, f in stats.items()
        if name != "_host" and f.get("trigger") == "queueTrigger"
    )


def idle(cluster: Cluster) -> bool:
    """No host finished a queue message since the last look (a host's events are drained as read)."""
    busy = False
    for host in cluster.hosts:
        if host.alive:
            events = host.call("events")["events"]
            busy = busy or any(e[0] == "message" for e in events)
    return not busy


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class AuditMatch:
    """Auth0 writes that took effect against the audit rows that say they were applied."""

    writes: int = 0
    rows: int = 0
    groups: int = 0
    matched: int = 0
    unaudited: int = 0  # writes that took effect without an applied audit row
    extra: int = 0  # applied audit rows beyond the writes that took effect
    examples: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)  # the accounts that do not match

    @property
    def exact(self) -> bool:
        return self.unaudited == 0 and self.extra == 0


def audit_match(entries: list[list[Any]], rows: list[dict[str, Any]], since: float) -> AuditMatch:
    """For every Auth0 account and kind of write (create; PATCH, which is an update, a block or an
    unblock; roles added; roles removed; sessions revoked; refresh tokens revoked; delete): the writes
    the Auth0 emulator answered with 2xx since ``since`` (a write that took effect) against the
    auth0 audit rows of that account and kind with outcome ``ok``, ``warning`` (applied, with
    something to say) or ``recovered`` (applied by an attempt that was killed before recording it,
    recorded by the next). Exactly one row per write is the goal. A create is counted by its
    account id from its audit row (its request path names no account)."""
    writes: Counter[tuple[str, str]] = Counter()
    creates = 0
    for at, _method, path, route, status, write in entries:
        if not write or at < since or not 200 <= int(status) < 300 or route not in WRITE_ROUTES:
            continue
        if route == "mgmt.users.write.create":
            creates += 1
            continue
        m = re.search(r"/users/([^/]+)", str(path))
        writes[(unquote(m.group(1)) if m else "?", route)] += 1
    audited: Counter[tuple[str, str]] = Counter()
    outcomes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        route = ROUTE_OF_ACTION.get(str(row.get("action")))
        if row.get("target") != "auth0" or route is None:
            continue
        key = (str(row.get("target_id") or f"auth0|{row.get('identity')}"), route)
        outcomes[key].append(f"{row.get('action')}:{row.get('outcome')}")
        if row.get("outcome") in APPLIED:
            audited[key] += 1
    created = sum(n for (uid, route), n in audited.items() if route == "mgmt.users.write.create")
    # Creates: the emulator's count against the rows' count (ids come from the rows).
    for key in [k for k in audited if k[1] == "mgmt.users.write.create"]:
        writes[key] = min(audited[key], 1)
    missing_creates = max(0, creates - len([k for k in writes if k[1] == "mgmt.users.write.create"]))
    match = AuditMatch(writes=sum(writes.values()) + missing_creates, rows=sum(audited.values()))
    for key in sorted(set(writes) | set(audited)):
        w, r = writes[key], audited[key]
        match.groups += 1
        if w == r:
            match.matched += 1
            continue
        match.unaudited += max(0, w - r)
        match.extra += max(0, r - w)
        match.accounts.append(key[0])
        if len(match.examples) < 6:
            match.examples.append(f"{key[0]} {key[1]}: {w} write(s) took effect, rows {outcomes[key] or 'none'}")
    match.unaudited += missing_creates
    if created > creates:
        match.examples.append(f"{created} create rows for {creates} creates that took effect")
    return match


async def poison(svc: App) -> list[str]:
    """Every message on the poison queues, with the reason its ``poisoned`` audit row gives."""
    found: list[str] = []
    for queue in POISON_QUEUES:
        client = svc.queues.get_queue_client(queue, message_decode_policy=TextBase64DecodePolicy())
        async with client:
            try:
                messages = [m async for m in client.receive_messages(max_messages=32, visibility_timeout=300)]
            except ResourceNotFoundError:  # a poison queue is created on first use: none, nothing poisoned
                continue
            for _ in range(100):  # bounded: 32 at a time, they stay invisible once read
                more = [m async for m in client.receive_messages(max_messages=32, visibility_timeout=300)]
                if not more:
                    break
                messages += more
        for m in messages:
            try:
                item = WorkItem.from_json(m.content)
            except (ValueError, KeyError, TypeError):
                found.append(f"{queue}: undecodable message {m.content[:80]!r}")
                continue
            rows = [r for r in await svc.audit.for_identity(item.id) if r.get("outcome") == "poisoned"]
            reason = str(rows[-1].get("error") or rows[-1].get("detail")) if rows else "no poisoned audit row"
            found.append(f"{queue}: {item.kind} {item.id}: {reason[:200]}")
    return found


async def queued(svc: App) -> int:
    """Messages visible on the work queues now (a peek sees at most 32 per queue)."""
    total = 0
    for queue in WORK_QUEUES:
        async with svc.queues.get_queue_client(queue) as client:
            try:
                total += len(await client.peek_messages(max_messages=32))
            except ResourceNotFoundError:  # a queue not created yet holds nothing
                continue
    return total


@dataclass
class Result:
    changes: list[Change] = field(default_factory=list)
    notifications: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, Counter[str]] = field(default_factory=dict)
    kills: int = 0
    kill_errors: list[str] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)  # items each killed host was running
    load_s: float = 0.0
    converged_s: float | None = None
    drained_s: float | None = None
    last_shown_s: float = 0.0  # when the last change that came to show in Auth0 did
    lost: list[Change] = field(default_factory=list)
    drift: dict[str, int] = field(default_factory=dict)
    drift_examples: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    audit: AuditMatch = field(default_factory=AuditMatch)
    poisoned: list[str] = field(default_factory=list)
    recovered: Counter[str] = field(default_factory=Counter)
    sessions_left: int = 0
    delta_pass: list[str] = field(default_factory=list)  # the delta timer's catch-up rows after the faults
    catch_ups: Counter[str] = field(default_factory=Counter)  # group changes' catch-ups after the faults
    mismatch_causes: Counter[str] = field(default_factory=Counter)  # accounts by what their trail shows
    quarantined: list[int] = field(default_factory=list)  # after the faults: shares deferred by a tripped breaker (s)
    deferred_other: int = 0  # after the faults: shares deferred for a rate limit or a busy lease
    trails: list[str] = field(default_factory=list)  # the last audit rows of a few lost changes' identities


def statuses(entries: list[list[Any]], since: float, until: float) -> Counter[str]:
    """What the vendor routes answered between ``since`` and ``until``: 2xx, 429, 5xx, dropped."""
    counts: Counter[str] = Counter()
    for at, _method, _path, route, status, _write in entries:
        if since <= at <= until and route != "<unrouted>":
            s = int(status)
            counts["dropped" if s == 0 else "429" if s == 429 else "5xx" if s >= 500 else "ok or 4xx"] += 1
    return counts


def drive(size: Size, seed: int) -> Result:
    result = Result()
    rng = random.Random(seed)
    config = ClusterConfig(users=size.users, seed=seed, hosts=size.hosts, mapping_extra=UNGUARDED)
    with Cluster(config) as cluster:
        env = cluster.env
        graph, auth0 = cluster.graph, cluster.auth0
        faults = Faults(graph, auth0, seed)
        asyncio.run(_prime(env))
        cluster.run_timer("subscriptions_renew")
        result.changes = plan(graph, auth0, cluster.group_ids, size.changes, rng)
        graph.control("POST", "/_control/notifications/wait", {"timeout_s": 30})
        started = time.time()
        faults.on()
        with Killer(cluster, size.kill_every_s, seed + 3) as killer:
            for n, change in enumerate(result.changes):
                time.sleep(max(0.0, started + n / size.rate - time.time()))
                change.at = time.time()
                apply(graph, cluster.group_ids, change)
        result.kills, result.kill_errors, result.in_flight = killer.kills, killer.errors, killer.in_flight
        result.load_s = time.time() - started
        faults.off()
        stopped = time.time()
        graph.control("POST", "/_control/notifications/wait", {"timeout_s": 30})
        result.notifications = graph.control("GET", "/_control/notifications")
        cluster.run_timer("delta_sync")
        asyncio.run(_converge(env, auth0, cluster, result, stopped, size.converge_s))
        result.calls = {
            name: statuses(control.entries(), started, stopped)
            for name, control in (("Auth0", auth0), ("Graph", graph))
        }
        result.audit = asyncio.run(_audit(env, auth0.entries(), started))
        asyncio.run(_verify(env, result, stopped))
    return result


async def _prime(env: dict[str, str]) -> None:
    svc = bootstrap.init(Settings.from_env(env))
    try:
        await prime(svc)
    finally:
        await svc.aclose()


async def _converge(
    env: dict[str, str], auth0: Remote, cluster: Cluster, result: Result, stopped: float, bound_s: float
) -> None:
    """Wait (bounded) until every change shows in Auth0 and the queues are empty and the hosts idle."""
    svc = bootstrap.init(Settings.from_env(env))
    try:
        deadline = time.monotonic() + bound_s
        state = Auth0State.read(auth0)
        shown = -1
        while True:
            state = Auth0State.read(auth0)
            now_shown = sum(1 for c in result.changes if state.shows(c))
            if now_shown != shown:  # the last moment a change came to show
                shown, result.last_shown_s = now_shown, time.time() - stopped
            if result.converged_s is None and now_shown == len(result.changes):
                result.converged_s = time.time() - stopped
            if result.converged_s is not None and await queued(svc) == 0 and idle(cluster):
                result.drained_s = time.time() - stopped
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_S)
        result.lost = [c for c in result.changes if not state.shows(c)]
        result.duplicates = state.duplicates()
        result.sessions_left = state.sessions + state.refresh_tokens
    finally:
        await svc.aclose()


async def _audit(env: dict[str, str], entries: list[list[Any]], since: float) -> AuditMatch:
    svc = bootstrap.init(Settings.from_env(env))
    try:
        return audit_match(entries, await svc.audit.all(), since)
    finally:
        await svc.aclose()


async def _verify(env: dict[str, str], result: Result, stopped: float) -> None:
    svc = bootstrap.init(Settings.from_env(env))
    try:
        _summary, records = await svc.reconcilers["auth0"].run("dry-run")
        result.drift = dict(Counter(r.drift for r in records))
        result.drift_examples = [f"{r.identity}: {r.drift}" for r in records[:5]]
        result.poisoned = await poison(svc)
        after = datetime.fromtimestamp(stopped, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for row in await svc.audit.all():
            if row.get("outcome") in {"recovered", "interrupted"}:
                result.recovered[str(row["outcome"])] += 1
            if row.get("action") == "deferred" and str(row.get("at", "")) >= after:
                m = re.search(r"quarantined .* runs again in (\d+) s", str(row.get("detail", "")))
                if m:
                    result.quarantined.append(int(m.group(1)))
                else:
                    result.deferred_other += 1
            if row.get("action") == "delta_catch_up" and str(row.get("at", "")) >= after:
                if row.get("source") == "delta":  # the timer's pass
                    result.delta_pass.append(f"{row.get('outcome')} ({row.get('detail')})")
                else:
                    result.catch_ups[str(row.get("outcome"))] += 1
        lost = [(f"lost {c.kind}", c.user) for c in result.lost[:5]]
        unmatched = [("audit mismatch", uid.removeprefix("auth0|")) for uid in dict.fromkeys(result.audit.accounts)]
        for _, identity in unmatched:
            result.mismatch_causes[why_unmatched(await svc.audit.for_identity(identity))] += 1
        for what, identity in lost + unmatched[:3]:
            rows = await svc.audit.for_identity(identity)
            trail = ", ".join(
                f"{r.get('source')} {r.get('action')}:{r.get('outcome')} [{str(r.get('correlation_id'))[:6]}]"
                for r in rows[-10:]
            )
            result.trails.append(f"{what} {identity}: {trail or 'no audit rows'}")
    finally:
        await svc.aclose()


def why_unmatched(rows: list[dict[str, Any]]) -> str:
    """What an account's audit trail shows happened to it: an attempt killed part-way (the next
    one recorded what it found), an attempt that failed part-way (and was retried), or neither."""
    if any(r.get("outcome") in {"recovered", "interrupted"} for r in rows):
        return "an attempt killed part-way"
    if any(r.get("action") == "sync" and r.get("outcome") == "retrying" for r in rows):
        return "an attempt failed part-way and was retried"
    return "neither a killed nor a failed attempt"


# -- the report ------------------------------------------------------------------------------------


def run(quick: bool) -> Report:
    started = time.perf_counter()
    size = QUICK if quick else FULL
    result = drive(size, SEED)
    return report(result, size, time.perf_counter() - started)


# Why a goal this run misses is missed, as measured, and the next step (issue 13).
MISSED_WHY = (
    "If changes are late or lost with no audit row at all: their work items were taken by a host that was then "
    "killed, before anything was written, after a groups-delta reader had handed them over (so the delta pass "
    "starts past them). At-least-once brings each back when its message's invisibility ends, beyond this bound. "
    "Next step: a reconciliation of group memberships after a host is lost, or a shorter invisibility for the lane.",
    "If a revocation shows more writes than rows: the call reached Auth0 before its attempt was killed, and the "
    "redelivery sent it again (the intent records what an attempt set out to do, not what reached the target, and "
    "a revocation leaves nothing to observe); the second call revokes nothing. Next step: mark the intent per "
    "action as each write returns (one more round trip per action), or say so in the redelivery's audit row.",
)


def report(result: Result, size: Size, seconds: float) -> Report:
    kinds = Counter(c.kind for c in result.changes)
    n = result.notifications
    table = Table(["measure", "value"])
    for name, counts in result.calls.items():
        total = sum(counts.values())
        failed = total - counts["ok or 4xx"]
        detail = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if k != "ok or 4xx")
        table.rows.append(
            [f"{name} calls failed under faults", f"{failed:,} of {total:,} ({_share(failed, total)}): {detail}"]
        )
    table.rows.append([
        "notifications",
        f"{n.get('queued', 0):,} made, {n.get('dropped', 0):,} lost, {n.get('copies', 0):,} extra copies, "
        f"{n.get('held', 0):,} copies held back, {n.get('delivered', 0):,} delivered",
    ])  # fmt: skip
    mid = sum(1 for n in result.in_flight if n)
    table.rows.append([
        "host processes killed (SIGKILL) and restarted",
        f"{result.kills}, {mid} of them mid-item (items running at each kill: "
        f"{', '.join(str(n) for n in result.in_flight) or '-'})",
    ])  # fmt: skip
    table.rows.append(["actions recorded for killed attempts", _counts(result.recovered) or "none"])
    table.rows.append(["drift after the run (reconciliation dry run)", _counts(result.drift) or "0"])
    table.rows.append(["duplicate accounts", str(len(result.duplicates))])
    table.rows.append(["changes lost", f"{len(result.lost)} of {len(result.changes)}"])
    table.rows.append(["sessions and refresh tokens left (only leavers had any)", str(result.sessions_left)])
    a = result.audit
    table.rows.append([
        "applied audit rows per effective change",
        f"{a.rows:,} rows for {a.writes:,} writes that took effect ({a.rows / a.writes:.3f}); "
        f"{a.matched:,} of {a.groups:,} (account, kind of write) pairs exact; {a.unaudited} unaudited, {a.extra} extra"
        if a.writes else "no writes",
    ])  # fmt: skip
    table.rows.append(["poison messages", str(len(result.poisoned))])
    table.rows.append([
        "shares deferred after the faults stopped",
        f"{len(result.quarantined)} by Auth0's circuit breaker (quarantined; each for up to "
        f"{max(result.quarantined, default=0)} s), {result.deferred_other} for a rate limit or a busy lease",
    ])  # fmt: skip
    table.rows.append(["converged after the faults stopped", _secs(result.converged_s)])
    table.rows.append([
        "the last change that showed in Auth0 did so after the faults stopped",
        f"{result.last_shown_s:.1f} s ({len(result.changes) - len(result.lost)} of {len(result.changes)} changes)",
    ])  # fmt: skip
    table.rows.append(["queues drained after the faults stopped", _secs(result.drained_s)])
    notes = [
        "Applied audit rows per effective change: a write took effect when the Auth0 emulator answered it "
        "with 2xx (its request log); for each Auth0 account and kind of write (create; PATCH = update, block or "
        "unblock; roles added; roles removed; sessions revoked; refresh tokens revoked; delete) the writes that "
        "took effect are set against the account's auth0 audit rows of that kind with outcome `ok`, `warning` or "
        "`recovered` (a killed attempt's write, recorded by the next attempt). Exactly one row per write is the "
        "goal; an injected fault answers before the handler runs, so a failed call never takes effect.",
        "Faults: Auth0 "
        + ", ".join(f"{k} {s or ''} {p:.0%}".replace("  ", " ") for k, s, p in AUTH0_FAULTS)
        + "; Graph "
        + ", ".join(f"{k} {s or ''} {p:.0%}".replace("  ", " ") for k, s, p in GRAPH_FAULTS)
        + f"; a drop closes the connection after {DROP_AFTER_S} s. An injected 429 carries no rate-limit headers "
        f"(the client waits its default second); Auth0 also limits `mgmt.*` to a burst of "
        f"{AUTH0_LIMIT['mgmt.*']['burst']} and {AUTH0_LIMIT['mgmt.*']['per_second']:.0f}/s, whose 429s carry "
        "`x-ratelimit-reset`.",
        f"Converged: every change shows in the Auth0 emulator (polled every {POLL_S:.0f} s); drained: and no "
        f"message visible on {', '.join(WORK_QUEUES)} and the hosts idle; both bounded by {size.converge_s:.0f} s. "
        f"An identity lease a killed host held lapses after {LEASE_TTL_S:.0f} s; until then its items wait. "
        "Messages a killed host had received stay invisible for the host's functionTimeout plus a minute "
        "(31 minutes here; in Azure the host makes a received message invisible for 10 minutes) and are not "
        "waited for: the delta pass names their identities again only where no reader had handed them over yet.",
        *MISSED_WHY,
    ]
    notes += [f"Killer: {e}" for e in result.kill_errors]
    notes += [f"Poisoned: {p}" for p in result.poisoned[:8]]
    notes += [f"Duplicate: {d}" for d in result.duplicates[:5]]
    notes += [f"The delta pass after the faults: {d}" for d in result.delta_pass[:4]]
    if result.catch_ups:
        notes.append(f"Group changes' catch-ups after the faults: {_counts(result.catch_ups)}")
    notes += [f"Audit trail (its last rows, [correlation id]), {t}" for t in result.trails]
    notes += [f"Drift: {d}" for d in result.drift_examples]
    notes += [f"Audit mismatch: {e}" for e in a.examples]
    drift = sum(result.drift.values())
    return Report(
        "7. Under faults",
        inputs=[
            f"{len(result.changes):,} Entra changes ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}) "
            f"at {size.rate:.0f} changes/s over {result.load_s:.0f} s, on a tenant of {size.users:,} users with the "
            f"Auth0 side in sync; seed {SEED}",
            f"{size.hosts} host processes (one serving HTTP); one killed about every {size.kill_every_s:.0f} s",
            "Auth0 calls failing 20%, Graph calls 10%, notifications lost 10% and delivered 1-3 times out of "
            f"order (held up to {NOTIFICATIONS['hold_max_s']:.0f} s); then the faults off and one delta pass",
        ],
        tables=[("After the faults", table)],
        goals=[
            verdict(drift == 0, f"drift 0 ({drift})"),
            verdict(not result.duplicates, f"duplicate accounts 0 ({len(result.duplicates)})"),
            verdict(not result.lost, f"changes lost 0 ({len(result.lost)})"),
            verdict(
                a.exact and a.writes > 0,
                f"exactly 1 applied audit row per effective change ({a.unaudited} unaudited, {a.extra} extra"
                + (f"; accounts whose trail shows {_counts(result.mismatch_causes)}" if result.mismatch_causes else "")
                + ")",
            ),
            verdict(not result.poisoned, f"no poison messages, none of the load is bad data ({len(result.poisoned)})"),
            verdict(mid > 0, f"host processes killed mid-item ({mid} of {result.kills} kills)"),
            verdict(
                result.converged_s is not None,
                f"converged within {size.converge_s:.0f} s of the faults stopping ({_secs(result.converged_s)})",
            ),
        ],
        notes=notes,
        seconds=seconds,
    )


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _counts(counts: dict[str, int] | Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)


def _secs(value: float | None) -> str:
    return "not within the bound" if value is None else f"{value:.1f} s"


def main() -> None:
    import sys

    print(run("--quick" in sys.argv).markdown())


if __name__ == "__main__":
    main()
