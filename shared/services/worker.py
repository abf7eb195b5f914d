"""The worker's service: one work item in, the target converged, every decision audited.

Per identity: take the lease, read Entra (the source of truth), find the Auth0 account (link, the
deterministic id, then the configured matching precedence), plan (pure), apply, audit, release.
Transient errors propagate so the host retries the message; permanent ones are audited and
swallowed so a bad identity cannot poison the queue.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.core import plan as planner
from shared.core.model import Account, Action, ActionKind, DeprovisionState, Link, SourceState, SourceUser
from shared.core.ports import Fence
from shared.core.work import WorkItem
from shared.errors import (
    Conflict,
    LeaseLost,
    NotFound,
    PermanentError,
    RateLimited,
    Refused,
    TransientError,
    TryLater,
)
from shared.mapping.model import SyncMapping
from shared.services.guard import MassChangeGuard
from shared.sources.graph.source import DeltaExpired, GraphSource, GroupDeltaPage
from shared.stores.audit import AuditRow, AuditStore
from shared.stores.keys import utcnow
from shared.stores.leases import Lease, LeaseStore
from shared.stores.links import LinkStore
from shared.stores.queue import WorkQueue
from shared.stores.state import StateStore
from shared.targets.auth0.lucene import lucene_phrase
from shared.targets.auth0.target import Auth0Target
from shared.telemetry import correlated

log = logging.getLogger("entra_sync.worker")

GROUPS_DELTA_LEASE = "job:groups-delta"
USERS_DELTA_LEASE = "job:users-delta"
WATCHED_GROUPS = ("groups", "watched")  # state row: the mapped groups and the groups nested in them
WATCHED_CACHE_S = 60.0
DEFAULT_WAIT_S = 30.0  # a wait with no reset given (a Graph 429 after the SDK's retries)
MAX_WAIT_S = 15 * 60.0
MAX_LEASE_DEFERRALS = 30  # an identity busy this often is stuck: let the host's attempts count again


@dataclass
class Outcome:
    """What one work item did (returned for tests, the demo and benchmarks)."""

    item: WorkItem
    # "applied", "noop", "skipped", "ambiguous", "conflict", "failed", "ignored", "fanned_out", "held"
    status: str
    actions: list[str] = field(default_factory=list)
    user_id: str = ""
    warnings: list[str] = field(default_factory=list)
    enqueued: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0  # epoch seconds when the worker took the item (queue wait = this - enqueued_at)
    finished_at: float = 0.0


@dataclass
class Resolution:
    account: Account | None
    matched_by: str = ""
    problem: str = ""  # "ambiguous" or "conflict"
    candidates: tuple[str, ...] = ()


class _Clock:
    """Adds up time per stage (graph, auth0_read, auth0_write, storage) for the benchmarks."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def add(self, stage: str, started: float) -> None:
        self.spent[stage] = self.spent.get(stage, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class Ports:
    """The adapters the services work through, built once by the composition root."""

    source: GraphSource
    target: Auth0Target
    links: LinkStore
    leases: LeaseStore
    audit: AuditStore
    state: StateStore
    queue: WorkQueue
    mapping: SyncMapping
    guard: MassChangeGuard | None = None  # mass changes held for approval (None: nothing is held)


class UsesPorts:
    """Gives a service its ports as attributes (``self.source``, ``self.target``, ...)."""

    def __init__(self, ports: Ports):
        self.ports = ports
        self.source = ports.source
        self.target = ports.target
        self.links = ports.links
        self.leases = ports.leases
        self.audit_store = ports.audit
        self.state = ports.state
        self.queue = ports.queue
        self.mapping = ports.mapping
        self.guard = ports.guard


class SyncService(UsesPorts):
    def __init__(self, ports: Ports, *, lease_wait_s: float = 3.0):
        super().__init__(ports)
        self.lease_wait_s = lease_wait_s
        self._watched: frozenset[str] | None = None
        self._watched_at = 0.0
        # Told about every finished item (benchmarks, metrics); an observer must be quick and not raise.
        self.observers: list[Callable[[Outcome], None]] = []

    # ==============================================================================================
    # Entry point
    # ==============================================================================================

    async def handle(self, item: WorkItem) -> Outcome:
        started = time.time()
        if item.kind == "user":
            outcome = await self.sync_user(item)
        elif item.kind == "group":
            outcome = await self.sync_group(item)
        elif item.kind == "delta":
            outcome = await self.catch_up(item)
        else:
            raise PermanentError(f"work item kind {item.kind!r} is handled elsewhere")
        outcome.started_at, outcome.finished_at = started, time.time()
        for observe in self.observers:
            observe(outcome)
        return outcome

    # ==============================================================================================
    # Users
    # ==============================================================================================

    async def sync_user(self, item: WorkItem) -> Outcome:
        clock = _Clock()
        t = time.perf_counter()
        async with self.leases.held(f"user:{item.id}", wait_s=self.lease_wait_s) as lease:
            clock.add("storage", t)
            outcome = await self._sync_user_locked(item, clock, lease)
            t = time.perf_counter()
        clock.add("storage", t)
        outcome.timings = clock.spent
        return outcome

    async def _sync_user_locked(self, item: WorkItem, clock: _Clock, lease: Lease) -> Outcome:
        t = time.perf_counter()
        source = await self.source.read_user(item.id)
        clock.add("graph", t)
        t = time.perf_counter()
        link = await self.links.get(item.id)
        intent = await self.audit_store.read_intent(item.id, self.target.name)
        clock.add("storage", t)
        for _attempt in range(2):
            t = time.perf_counter()
            found = await self.resolve(source, link)
            clock.add("auth0_read", t)
            if found.problem:
                await self._audit(item, found.problem, "refused", detail=_match_problem(found))
                return Outcome(item, found.problem, warnings=[_match_problem(found)])
            plan = planner.plan(source, found.account, link, self.mapping)
            hold = await self.guard.check(item, plan) if self.guard is not None else None
            if hold is not None:
                await self._audit(
                    item, "held", "held", found.account.user_id if found.account else "", detail=hold.reason
                )
                correlated(log, item.correlation_id).warning("%s %s: %s", item.kind, item.id, hold.reason)
                return Outcome(item, "held", warnings=[hold.reason])
            work = _Work(item, source, found.account, link, lease, intent)
            try:
                return await self.apply(work, plan, clock)
            except CreateRaced:
                # Another worker created the account between our read and our create (or it was
                # created by hand with the deterministic id): read again and converge it instead.
                correlated(log, item.correlation_id).info("create conflicted for %s; re-reading", item.id)
                t = time.perf_counter()
                link = await self.links.get(item.id)
                intent = None  # settled by the attempt that raced
                clock.add("storage", t)
        raise TransientError(f"could not settle the account for {item.id} after a create conflict")

    async def resolve(self, source: SourceUser, link: Link | None) -> Resolution:
        """Find the Auth0 account: link, deterministic id, then the matching precedence."""
        with_roles = source.state is SourceState.ACTIVE
        if link is not None and not link.target_deleted:
            account = await self._account(link.user_id, with_roles)
            if account is not None:
                return Resolution(account, "link")
        if self.mapping.target.deterministic_user_id:
            account = await self._account(f"auth0|{source.id}", with_roles)
            if account is not None:
                return Resolution(account, "deterministic_id")
        key = self.mapping.matching.app_metadata_key
        for matcher in self.mapping.matching.precedence:
            candidates = await self._candidates(matcher, source)
            if candidates is None:
                continue
            decision = planner.judge_candidates(candidates, source.id, key)
            if decision.outcome == "none":
                continue
            if decision.outcome in {"ambiguous", "conflict"}:
                return Resolution(None, matcher, decision.outcome, decision.candidates)
            assert decision.user_id is not None
            account = await self._account(decision.user_id, with_roles)
            return Resolution(account, matcher)
        return Resolution(None)

    async def _candidates(self, matcher: str, source: SourceUser) -> list[dict[str, Any]] | None:
        if matcher == "link":
            return None  # handled first
        if matcher == "app_metadata":
            return await self.target.by_app_metadata(self.mapping.matching.app_metadata_key, source.id)
        if matcher == "enterprise_identity":
            connection = self.mapping.matching.enterprise_connection
            assert connection is not None  # validated with the mapping
            q = f"identities.connection:{lucene_phrase(connection)} AND identities.user_id:{lucene_phrase(source.id)}"
            return await self.target.search(q)
        if matcher == "email":
            if source.state is SourceState.HARD_DELETED:
                return None  # nothing left to read an email from
            email = planner.desired_profile(source, self.mapping).get("email")
            if not isinstance(email, str) or not email.strip():
                return None
            return await self.target.by_email(email.strip())
        raise AssertionError(f"unknown matcher {matcher}")

    async def _account(self, user_id: str, with_roles: bool = True) -> Account | None:
        data = await self.target.get(user_id)
        if data is None:
            return None
        # Roles are planned only for active users: a leaver's are left as they are (blocked, not stripped).
        roles = await self.target.roles_of(user_id) if with_roles and self.mapping.managed_roles else frozenset()
        return Account(user_id, data, roles)

    # ==============================================================================================
    # Apply
    # ==============================================================================================

    async def apply(self, work: _Work, plan: planner.Plan, clock: _Clock) -> Outcome:
        """Apply ``plan`` under ``work.lease``: the intent first, then each action fenced, then the
        audit rows and the intent's removal in one transaction (also when an action failed)."""
        item = work.item
        user_id = work.account.user_id if work.account else (work.link.user_id if work.link else "")
        outcome = Outcome(item, "noop" if not plan.actions else "applied", user_id=user_id)
        rows = self._recovered(work, plan, user_id)
        intent_etag: str | None = None
        if plan.actions and any(a.kind is not ActionKind.SKIP for a in plan.actions):
            t = time.perf_counter()
            intent_etag = await self.audit_store.write_intent(item.id, self.target.name, _intent(item, plan, rows))
            clock.add("storage", t)
        elif not plan.actions:
            rows.append(AuditRow.for_item(item, self.target.name, "none", "ok", user_id, detail="in sync"))
        try:
            await self._apply_actions(work, plan, outcome, user_id, rows, clock)
        except LeaseLost as exc:
            rows.append(AuditRow.for_item(item, self.target.name, "lease_lost", "refused", user_id, detail=str(exc)))
            raise
        finally:
            t = time.perf_counter()
            await self.audit_store.settle(
                rows, item.id, self.target.name, drop_intent=work.intent is not None or intent_etag is not None,
                intent_etag=intent_etag,
            )  # fmt: skip
            clock.add("storage", t)
        return outcome

    def _recovered(self, work: _Work, plan: planner.Plan, user_id: str) -> list[AuditRow]:
        """Audit rows for what an earlier attempt set out to do and never recorded (it was killed
        between a write and its audit row): each action of its intent that this plan no longer
        needs, with whether the target shows it now."""
        if work.intent is None:
            return []
        rows = [AuditRow(**row) for row in work.intent.get("carried", [])]
        planned = {a.kind for a in plan.actions}
        earlier = str(work.intent.get("correlation_id", ""))
        for entry in work.intent.get("actions", []):
            action = _action_from(entry)
            if action is None or action.kind in planned or action.kind is ActionKind.SKIP:
                continue
            seen = planner.observed(action, work.account, work.link)
            outcome = "recovered" if seen is not False else "interrupted"
            detail = (
                f"attempt {earlier} began this at {work.intent.get('at', '?')} and stopped before recording it; "
                + {True: "the target shows it done", None: "it is no longer needed", False: "it did not take effect"}[
                    seen
                ]
            )
            rows.append(
                AuditRow.for_item(
                    work.item, self.target.name, action.kind.value, outcome, user_id,
                    diff=_safe_diff(action), detail=detail,
                )
            )  # fmt: skip
        return rows

    async def _apply_actions(
        self, work: _Work, plan: planner.Plan, outcome: Outcome, user_id: str, rows: list[AuditRow], clock: _Clock
    ) -> None:
        item, lease = work.item, work.lease

        def fence() -> None:
            self.leases.fence(lease)

        current_link = work.link
        for action in plan.actions:
            write = action.writes_target
            shown_diff: dict[str, Any] | None = None
            t = time.perf_counter()
            warning = ""
            if action.kind is not ActionKind.SKIP:
                fence()  # a worker that lost its lease writes nothing more
            if action.kind is ActionKind.CREATE:
                try:
                    created = await self.target.create(action.payload, fence)
                except Conflict as exc:
                    raise CreateRaced(str(exc)) from exc
                user_id = str(created["user_id"])
                outcome.user_id = user_id
            elif action.kind is ActionKind.UPDATE:
                refused = await self._update(user_id, action, fence)
                shown_diff = {p: v for p, v in (_safe_diff(action) or {}).items() if p not in refused}
                if refused:
                    current_link = await self._record_conflicts(action, item.id, user_id, current_link, refused)
                    warning = _conflict_text(refused)
                    rows.append(
                        AuditRow.for_item(
                            item, self.target.name, "conflict", "conflict", user_id,
                            diff={p: [action.diff[p][0], v] for p, v in refused.items()}, detail=warning,
                        )
                    )  # fmt: skip
            elif action.kind is ActionKind.BLOCK:
                await self.target.update(user_id, {"blocked": True}, fence)
            elif action.kind is ActionKind.UNBLOCK:
                await self.target.update(user_id, {"blocked": False}, fence)
            elif action.kind in {ActionKind.REVOKE_SESSIONS, ActionKind.REVOKE_REFRESH_TOKENS}:
                warning = await self._revoke(action.kind, user_id, fence)
            elif action.kind is ActionKind.DELETE:
                await self.target.delete(user_id, fence)
            elif action.kind is ActionKind.ASSIGN_ROLES:
                await self.target.assign_roles(user_id, action.payload["roles"], fence)
            elif action.kind is ActionKind.REMOVE_ROLES:
                await self.target.remove_roles(user_id, action.payload["roles"], fence)
            elif action.kind is ActionKind.SKIP:
                outcome.status = "skipped"
            else:
                current_link = await self._bookkeep(action, item.id, user_id, current_link)
            clock.add("auth0_write" if write else "storage", t)
            outcome.actions.append(action.kind.value)
            if warning:
                outcome.warnings.append(warning)
                correlated(log, item.correlation_id).warning("%s", warning)
            outcome_text = "warning" if warning else ("skipped" if action.kind is ActionKind.SKIP else "ok")
            shown = shown_diff if action.kind is ActionKind.UPDATE else _safe_diff(action)
            rows.append(
                AuditRow.for_item(
                    item, self.target.name, action.kind.value, outcome_text, user_id,
                    diff=shown, detail=warning or action.reason,
                )
            )  # fmt: skip
            if action.kind is not ActionKind.SKIP:
                self.leases.fence_after_write(lease)  # a write that may have landed late: converge again

    async def _update(self, user_id: str, action: Action, fence: Fence) -> dict[str, Any]:
        """Send the update. When Auth0 refuses it because another account holds a unique value
        (email, username: 409), send the other changes alone and return the refused values."""
        try:
            await self.target.update(user_id, action.payload, fence)
            return {}
        except Conflict as exc:
            refused = {p: action.diff[p][1] for p in planner.UNIQUE_PATHS if p in action.diff}
            if not refused:
                raise PermanentError(f"Auth0 refused the update of {user_id} with a conflict: {exc}") from exc
        rest = {p: pair[1] for p, pair in action.diff.items() if p not in refused}
        patch = planner.nest(rest)
        if patch:
            await self.target.update(user_id, patch, fence)
        return refused

    async def _record_conflicts(
        self, action: Action, entra_id: str, user_id: str, link: Link | None, refused: dict[str, Any]
    ) -> Link:
        base = link if link is not None and link.user_id == user_id else Link(entra_id, user_id)
        new = dataclasses.replace(base, conflicts={**base.conflicts, **refused})
        await self.links.put(new)
        return new

    async def _revoke(self, kind: ActionKind, user_id: str, fence: Fence) -> str:
        what = "sessions" if kind is ActionKind.REVOKE_SESSIONS else "refresh tokens"
        try:
            if kind is ActionKind.REVOKE_SESSIONS:
                await self.target.revoke_sessions(user_id, fence)
            else:
                await self.target.revoke_refresh_tokens(user_id, fence)
        except (Refused, NotFound) as exc:
            return (
                f"Auth0 refused to revoke {what} for {user_id} ({exc}); the account is blocked, but existing "
                f"{what} stay valid until they expire (revocation needs the Enterprise plan)"
            )
        return ""

    async def _bookkeep(self, action: Action, entra_id: str, user_id: str, link: Link | None) -> Link:
        base = link if link is not None and link.user_id == user_id else Link(entra_id, user_id)
        if action.kind is ActionKind.LINK:
            new = dataclasses.replace(base, target_deleted=False)
        elif action.kind is ActionKind.START_DEPROVISION:
            new = dataclasses.replace(
                base, deprovision=DeprovisionState.PENDING, blocked_by_sync=bool(action.payload["blocked_by_sync"])
            )
        elif action.kind is ActionKind.FINISH_DEPROVISION:
            new = dataclasses.replace(base, deprovision=DeprovisionState.DONE)
        elif action.kind is ActionKind.CLEAR_DEPROVISION:
            new = dataclasses.replace(base, deprovision=DeprovisionState.NONE, blocked_by_sync=False)
        elif action.kind is ActionKind.MARK_TARGET_DELETED:
            new = dataclasses.replace(link or base, target_deleted=True)
        elif action.kind is ActionKind.SET_CONFLICTS:
            new = dataclasses.replace(base, conflicts=dict(action.payload["conflicts"]))
        else:
            raise AssertionError(f"not a bookkeeping action: {action.kind}")
        await self.links.put(new)
        return new

    async def _audit(
        self,
        item: WorkItem,
        action: str,
        outcome: str,
        target_id: str = "",
        diff: dict[str, Any] | None = None,
        detail: str = "",
        error: str = "",
    ) -> None:
        await self.audit_store.write(
            AuditRow.for_item(item, self.target.name, action, outcome, target_id, diff, detail, error)
        )

    async def defer(self, item: WorkItem, wait: TryLater) -> float | None:
        """Re-schedule ``item`` to wait out ``wait`` without spending an attempt, and audit it; the
        delay, or None when it must not wait again (the caller lets the host retry it instead). A
        rate limit is always waited out; a busy or lost lease at most ``MAX_LEASE_DEFERRALS`` times."""
        if not isinstance(wait, RateLimited) and item.deferrals >= MAX_LEASE_DEFERRALS:
            return None
        delay = wait.retry_after_s
        if delay is None:
            delay = min(DEFAULT_WAIT_S * 2 ** min(item.deferrals, 5), MAX_WAIT_S)
        delay = await self.queue.defer(item, delay)
        detail = f"{wait}; runs again in {delay:.0f} s without spending an attempt (deferral {item.deferrals + 1})"
        await self._audit(item, "deferred", "deferred", detail=detail)
        return delay

    async def audit_failure(self, item: WorkItem, error: Exception) -> None:
        """A permanent failure: recorded, not retried."""
        await self._audit(item, "sync", "failed", error=f"{type(error).__name__}: {error}")

    # ==============================================================================================
    # Groups: membership changes come from groups delta
    # ==============================================================================================

    async def sync_group(self, item: WorkItem) -> Outcome:
        watched = await self.watched_groups()
        if item.id not in watched:
            watched = await self.watched_groups(fresh=True)  # nested moments ago, by another instance?
        if item.id not in watched:
            detail = "group is not in the mapping's scope or roles, nor nested in a group that is"
            await self._audit(item, "group_change", "skipped", detail=detail)
            return Outcome(item, "ignored")
        return await self.catch_up(item, resources=("groups",))

    async def watched_groups(self, *, fresh: bool = False) -> frozenset[str]:
        """The groups whose membership matters: the mapping's scope and role groups, and every group
        nested inside them (a member of a nested group is a member of the mapped one). Stored in the
        state table, kept here for ``WATCHED_CACHE_S``; ``fresh`` reads the stored set again."""
        mapped = self.mapping.relevant_groups
        if not mapped:
            return frozenset()
        if not fresh and self._watched is not None and time.monotonic() - self._watched_at < WATCHED_CACHE_S:
            return self._watched
        stored = await self.state.get(*WATCHED_GROUPS)
        if stored is None or set(stored.get("mapped", ())) != mapped:
            return await self.rewatch()
        return self._keep_watched(frozenset(str(g) for g in stored.get("groups", ())))

    async def rewatch(self) -> frozenset[str]:
        """Work the watched groups out again from Graph (after a nesting change) and store them."""
        mapped = self.mapping.relevant_groups
        groups = set(mapped)
        for group_id in sorted(mapped):
            groups |= await self.source.nested_groups(group_id)
        await self.state.put(*WATCHED_GROUPS, {"mapped": sorted(mapped), "groups": sorted(groups)})
        return self._keep_watched(frozenset(groups))

    def _keep_watched(self, groups: frozenset[str]) -> frozenset[str]:
        self._watched, self._watched_at = groups, time.monotonic()
        return groups

    async def catch_up(self, item: WorkItem, resources: Iterable[str] = ("users", "groups")) -> Outcome:
        """Read the stored delta links forward and enqueue every user whose data or relevant
        membership changed. Links are stored only after their items are enqueued."""
        enqueued = 0
        for resource in resources:
            lease_key = GROUPS_DELTA_LEASE if resource == "groups" else USERS_DELTA_LEASE
            async with self.leases.held(lease_key, wait_s=self.lease_wait_s * 3):
                enqueued += await self._catch_up(item, resource)
        await self._audit(item, "delta_catch_up", "ok", detail=f"{enqueued} users enqueued")
        return Outcome(item, "fanned_out", enqueued=enqueued)

    async def _catch_up(self, item: WorkItem, resource: str) -> int:
        stored = await self.state.get("delta", resource)
        if stored is None:
            return await self._full_pass(item, resource)
        try:
            if resource == "groups":
                page = await self.source.groups_delta(stored["link"])
                users = await self._users_from_group_changes(page)
                link = page.delta_link
            else:
                users, link = await self.source.users_delta(stored["link"])
        except DeltaExpired:
            correlated(log, item.correlation_id).warning("%s delta link expired; full pass", resource)
            return await self._full_pass(item, resource)
        await self._enqueue(item, users)
        await self.state.put("delta", resource, {"link": link})
        return len(users)

    async def _full_pass(self, item: WorkItem, resource: str) -> int:
        """No usable cursor: a full delta round enqueues everyone who could matter and yields a
        fresh link to continue from."""
        if resource == "groups":
            page = await self.source.groups_delta(None)
            users = await self._users_from_group_changes(page)
            link = page.delta_link
        else:
            users, link = await self.source.users_delta(None)
        await self._enqueue(item, users)
        await self.state.put("delta", resource, {"link": link})
        return len(users)

    async def backfill(self, correlation_id: str | None = None) -> int:
        """Initial load: enqueue every user once (a full users-delta round), then keep the round's
        delta link so catch-ups continue from here."""
        item = WorkItem("delta", "users", "backfill", "backfill", correlation_id or uuid.uuid4().hex)
        async with self.leases.held(USERS_DELTA_LEASE, wait_s=self.lease_wait_s * 3):
            users, link = await self.source.users_delta(None)
            items = [WorkItem("user", uid, "backfill", "backfill", item.correlation_id) for uid in sorted(users)]
            await self.queue.send(items)
            await self.state.put("delta", "users", {"link": link})
        await self._audit(item, "backfill", "ok", detail=f"{len(items)} users enqueued")
        return len(items)

    async def _users_from_group_changes(self, page: GroupDeltaPage) -> set[str]:
        """Users whose membership of a watched group changed, directly or through a nested group
        that was added or removed; a nesting change also works the watched groups out again."""
        watched = await self.watched_groups()
        users: set[str] = set()
        nesting_changed = bool(page.deleted_groups & watched)
        for bucket in (page.added, page.removed):
            for group_id, members in bucket.items():
                if group_id not in watched:
                    continue
                for member in members:
                    if member in page.nested_groups:
                        nesting_changed = True
                        users |= await self.source.transitive_user_members(member)
                    else:
                        users.add(member)
        if nesting_changed:
            await self.rewatch()
        return users

    async def _enqueue(self, item: WorkItem, users: Iterable[str]) -> None:
        items = [
            WorkItem("user", uid, "delta", item.source_ref or item.kind, item.correlation_id) for uid in sorted(users)
        ]
        if items:
            await self.queue.send(items)


class CreateRaced(Exception):
    """The create met an account that appeared since the read (409): read again and converge it."""


@dataclass(frozen=True)
class _Work:
    """One identity's work under its lease: what was read, and any intent an earlier attempt left."""

    item: WorkItem
    source: SourceUser
    account: Account | None
    link: Link | None
    lease: Lease
    intent: dict[str, Any] | None


def _intent(item: WorkItem, plan: planner.Plan, carried: list[AuditRow]) -> dict[str, Any]:
    """What is about to be written, recorded before the first write (see AuditStore)."""
    return {
        "correlation_id": item.correlation_id,
        "source": item.source,
        "at": utcnow(),
        "actions": [
            {"kind": a.kind.value, "reason": a.reason, "diff": {p: list(v) for p, v in a.diff.items()},
             "roles": list(a.payload.get("roles", ()))}
            for a in plan.actions
        ],
        "carried": [dataclasses.asdict(row) for row in carried],  # recovered rows not yet written
    }  # fmt: skip


def _action_from(entry: dict[str, Any]) -> Action | None:
    try:
        kind = ActionKind(entry.get("kind"))
    except ValueError:
        return None
    diff = {str(p): (pair[0], pair[1]) for p, pair in (entry.get("diff") or {}).items()}
    payload = {"roles": list(entry["roles"])} if entry.get("roles") else {}
    return Action(kind, payload, diff, str(entry.get("reason", "")))


def _conflict_text(refused: dict[str, Any]) -> str:
    values = ", ".join(f"{path} {value!r}" for path, value in sorted(refused.items()))
    return (
        f"Auth0 refused {values}: another account already has it. The other changes were applied; this "
        "value is not tried again until it changes in Entra, and reconciliation reports it as a conflict"
    )


def _match_problem(found: Resolution) -> str:
    if found.problem == "ambiguous":
        return f"{found.matched_by} matched several Auth0 accounts ({', '.join(found.candidates)}); not guessing"
    return (
        f"{found.matched_by} matched {', '.join(found.candidates)}, which belongs to another Entra user; "
        "not taking it over"
    )


def _safe_diff(action: Action) -> dict[str, Any] | None:
    """What an audit row may show: the mapped fields that changed, never a password or token."""
    if action.diff:
        return {path: [before, after] for path, (before, after) in action.diff.items()}
    if action.kind is ActionKind.CREATE:
        return {k: v for k, v in action.payload.items() if k not in {"password"}}
    if action.kind in {ActionKind.ASSIGN_ROLES, ActionKind.REMOVE_ROLES}:
        return {"roles": list(action.payload["roles"])}
    return None
