"""Reconciliation: prove both sides agree, repair what is safe, report everything.

One run reads the links, the holders of every managed role, the members of every relevant group
and every Auth0 account (list, or an export job past 1,000 users) into compact form, then streams
the Entra users page by page and classifies each identity. Only drifted identities are kept, so
memory grows with the Auth0 side's size (a few hundred bytes an account) and the drift, not with
the Entra side.

Remediation never acts here: drifted identities of the mapping's safe classes are queued for the
worker, which re-reads and converges them like any other work item. A run that would block or
delete more managed users than the circuit breaker allows, or whose Entra read looks partial,
queues none of those, reports, alerts and waits for ``approve``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from shared.core import plan as planner
from shared.core.drift import (
    Ambiguous,
    AttributeMismatch,
    Breaker,
    Conflict,
    DriftRecord,
    Missing,
    Orphaned,
    RoleMismatch,
    RunSummary,
    Skipped,
    Stale,
)
from shared.core.model import ActionKind, DeprovisionState, Link, SourceState, SourceUser
from shared.core.work import WorkItem
from shared.errors import NotFound, PermanentError
from shared.mapping.model import SyncMapping, read_path
from shared.sources.graph.groups import mapping_group_problems
from shared.sources.graph.source import GraphSource
from shared.stores.audit import AuditRow, AuditStore
from shared.stores.keys import utcnow
from shared.stores.links import LinkStore
from shared.stores.queue import WorkQueue
from shared.stores.state import StateStore
from shared.targets.auth0.target import Auth0Target

log = logging.getLogger("entra_sync.reconcile")

LIST_LIMIT: Final = 1000  # Auth0 list/search stops here; past it, an export job
RUN_KIND: Final = "reconcile-run"
HISTORY: Final = 12
PARTIAL_READ_SHARE: Final = 0.5  # fewer Entra users than half the last run's: the read looks partial
_RUN_ID: Final = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
BASE_FIELDS: Final = ("user_id", "email", "name", "blocked", "app_metadata", "last_login", "created_at")

Progress = Callable[[str, int, int | None], None]


class RunNotFound(PermanentError):
    pass


@dataclass(slots=True)
class _Account:
    user_id: str
    email: str
    owner: str | None  # the Entra object id in app_metadata, if any
    blocked: bool
    last_seen: str | None  # last_login, else created_at
    logged_in: bool  # whether last_seen is a login
    name: str
    values: tuple[Any, ...]  # the mapping's target paths, in ``Reconciler.paths`` order


@dataclass
class _Auth0Side:
    accounts: dict[str, _Account] = field(default_factory=dict)
    # Most keys have one account: a plain id then, a tuple only on a collision (saves a list per account).
    by_owner: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    by_email: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    by_enterprise: dict[str, str | tuple[str, ...]] = field(default_factory=dict)  # enterprise identity -> ids
    read: str = "list"


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise RunNotFound(f"{run_id!r} is not a reconciliation run id (like 20261122T020000Z-1a2b3c)")
    return run_id


class Reconciler:
    def __init__(
        self,
        *,
        source: GraphSource,
        target: Auth0Target,
        links: LinkStore,
        state: StateStore,
        queue: WorkQueue,
        audit: AuditStore,
        mapping: SyncMapping,
        reports: Any = None,  # shared.services.report.ReportStore, or None to skip writing reports
        alert: Callable[[str, str], Awaitable[Any]] | None = None,  # (incident key, message): a held or failed run
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.source = source
        self.target = target
        self.links = links
        self.state = state
        self.queue = queue
        self.audit = audit
        self.mapping = mapping
        self.reports = reports
        self.alert = alert
        self.now = now
        self.paths = tuple(dict.fromkeys([a.target for a in mapping.attributes] + [self._owner_path]))

    @property
    def _owner_path(self) -> str:
        return f"app_metadata.{self.mapping.matching.app_metadata_key}"

    # ==============================================================================================

    async def run(
        self, mode: str = "dry-run", run_id: str | None = None, progress: Progress | None = None
    ) -> tuple[RunSummary, list[DriftRecord]]:
        if mode not in {"dry-run", "apply"}:
            raise ValueError("mode is dry-run or apply")
        report = progress or (lambda phase, done, total: None)
        summary = RunSummary(run_id=run_id or new_run_id(self.now()), mode=mode, started_at=utcnow())
        try:
            records = await self._run(summary, report)
        except Exception as exc:
            await self._failed(summary, exc)
            raise
        return summary, records

    async def _run(self, summary: RunSummary, report: Progress) -> list[DriftRecord]:
        clock = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal clock
            summary.timings[phase] = round(time.perf_counter() - clock, 3)
            clock = time.perf_counter()

        problems = await mapping_group_problems(self.source, self.mapping)
        if problems:  # a missing scope group would make everyone a leaver: refuse the run instead
            raise PermanentError(
                f"the mapping file {self.mapping.source} names groups Entra ID cannot give, so scope and roles "
                f"cannot be worked out: {'; '.join(problems)}"
            )
        lap("mapping")
        links = {link.entra_id: link async for link in self.links.all()}
        entra_of = {link.user_id: link.entra_id for link in links.values() if not link.target_deleted}
        lap("links")
        roles_of = await self._role_holders()
        lap("roles")
        groups_of = await self.source.relevant_memberships()
        lap("groups")
        auth0 = await self._read_auth0(report)
        summary.auth0_users, summary.auth0_read = len(auth0.accounts), auth0.read
        lap("auth0")

        records: list[DriftRecord] = []
        seen_accounts: set[str] = set()
        seen_entra: set[str] = set()
        async for page in self.source.list_users():
            for user in page:
                summary.entra_users += 1
                seen_entra.add(str(user["id"]))
                record = self._classify(user, links, auth0, roles_of, groups_of, seen_accounts, summary)
                records.extend(record)
            report("entra users", summary.entra_users, None)
        lap("entra")

        for user_id, account in auth0.accounts.items():
            entra_id = entra_of.get(user_id) or account.owner
            if user_id in seen_accounts or entra_id is None:
                continue
            summary.managed_accounts += 1
            if entra_id not in seen_entra and not account.blocked:
                records.append(Orphaned("source deleted").record(entra_id, user_id, account.email or account.name))
        lap("orphans")

        counts: dict[str, int] = {}
        for r in records:
            counts[r.drift] = counts.get(r.drift, 0) + 1
        summary.counts = counts
        summary.drifted = len({r.identity for r in records})
        summary.breaker = await self._breaker(summary, records)
        await self._decide(summary, records)
        lap("decide")
        summary.status = "held" if summary.breaker.tripped and summary.held else "completed"
        summary.finished_at = utcnow()
        await self._save(summary, records)
        lap("report")
        return records

    async def _failed(self, summary: RunSummary, error: Exception) -> None:
        """A run that could not finish still leaves its run record, a report saying why, an audit row
        and an alert: a silent nightly failure is how drift goes unseen."""
        summary.status = "failed"
        summary.error = f"{type(error).__name__}: {error}"
        summary.finished_at = utcnow()
        try:
            await self._save(summary, [])
        except Exception as exc:  # storage is what failed: the alert and the log must still go out
            log.error("could not record the failed reconciliation %s: %s", summary.run_id, type(exc).__name__)
            if self.alert is not None:
                await self.alert(f"reconcile-failed:{summary.run_id}", _failure_message(summary))

    # -- reading -----------------------------------------------------------------------------------

    async def _role_holders(self) -> dict[str, frozenset[str]]:
        holders: dict[str, set[str]] = {}
        if not self.mapping.managed_roles:
            return {}
        for name, role_id in (await self.target.role_ids(sorted(self.mapping.managed_roles))).items():
            for user_id in await self.target.role_members(role_id):
                holders.setdefault(user_id, set()).add(name)
        # Many users hold the same set of roles: share one frozenset per distinct set.
        shared: dict[frozenset[str], frozenset[str]] = {}
        return {user_id: shared.setdefault(frozenset(names), frozenset(names)) for user_id, names in holders.items()}

    async def _read_auth0(self, report: Progress) -> _Auth0Side:
        side = _Auth0Side()
        total = await self.target.count_users()
        enterprise = self.mapping.matching.enterprise_connection
        extra = ("identities",) if enterprise else ()
        fields = sorted({*BASE_FIELDS, *extra, *(p.split(".", 1)[0] for p in self.paths)})
        if total > LIST_LIMIT:
            side.read = "export job"
            users = self.target.export_users(fields)
        else:
            users = self.target.list_users(fields)
        key = self.mapping.matching.app_metadata_key
        async for user in users:
            account = _Account(
                user_id=str(user["user_id"]),
                email=str(user.get("email") or "").lower(),
                owner=_text(read_path(user, f"app_metadata.{key}")),
                blocked=bool(user.get("blocked")),
                last_seen=_text(user.get("last_login")) or _text(user.get("created_at")),
                logged_in=_text(user.get("last_login")) is not None,
                name=str(user.get("name") or ""),
                values=tuple(read_path(user, p) for p in self.paths),
            )
            side.accounts[account.user_id] = account
            if account.owner:
                _index(side.by_owner, account.owner, account.user_id)
            if account.email:
                _index(side.by_email, account.email, account.user_id)
            for identity in (user.get("identities") or ()) if enterprise else ():
                sso = isinstance(identity, dict) and identity.get("connection") == enterprise
                if sso and identity.get("user_id"):
                    _index(side.by_enterprise, str(identity["user_id"]), account.user_id)
            if len(side.accounts) % 5000 == 0:
                report("auth0 accounts", len(side.accounts), total)
        report("auth0 accounts", len(side.accounts), total)
        return side

    # -- classifying ---------------------------------------------------------------------------------

    def _classify(
        self,
        user: dict[str, Any],
        links: dict[str, Link],
        auth0: _Auth0Side,
        roles_of: dict[str, frozenset[str]],
        groups_of: dict[str, set[str]],
        seen_accounts: set[str],
        summary: RunSummary,
    ) -> list[DriftRecord]:
        entra_id = str(user["id"])
        groups = frozenset(groups_of.get(entra_id, ()))
        if user.get("accountEnabled") is False:
            state = SourceState.DISABLED
        elif not self.mapping.scope.includes(user, groups):
            state = SourceState.OUT_OF_SCOPE
        else:
            state = SourceState.ACTIVE
            summary.entra_in_scope += 1
        source = SourceUser(entra_id, state, user, groups)
        records = self._drift(source, user, links, auth0, roles_of, seen_accounts, summary)
        if state is SourceState.ACTIVE and not records:
            summary.in_sync += 1
        return records

    def _drift(
        self,
        source: SourceUser,
        user: dict[str, Any],
        links: dict[str, Link],
        auth0: _Auth0Side,
        roles_of: dict[str, frozenset[str]],
        seen_accounts: set[str],
        summary: RunSummary,
    ) -> list[DriftRecord]:
        entra_id, state, groups = source.id, source.state, source.group_ids
        display = str(user.get("displayName") or user.get("userPrincipalName") or entra_id)

        found, problem = self._match(source, links.get(entra_id), auth0)
        if problem is not None:
            return [problem.record(entra_id, None, display)]
        if found is None:
            if state is not SourceState.ACTIVE:
                return []
            # Classified as the worker would plan it: a joiner it skips is not missing, and never queued.
            first = planner.plan(source, None, links.get(entra_id), self.mapping).actions[0]
            if first.kind is ActionKind.SKIP:
                return [Skipped(first.reason).record(entra_id, None, display)]
            return [Missing("active").record(entra_id, None, display)]
        seen_accounts.add(found.user_id)
        summary.managed_accounts += 1
        if state is not SourceState.ACTIVE:
            if found.blocked:
                return []
            reason = "source disabled" if state is SourceState.DISABLED else "out of scope"
            return [Orphaned(reason).record(entra_id, found.user_id, display)]

        out: list[DriftRecord] = []
        current = dict(zip(self.paths, found.values, strict=True))
        fields = planner.diff_values(planner.desired_profile(source, self.mapping), current.get)
        link = links.get(entra_id)
        if (
            found.blocked
            and link is not None
            and link.deprovision is not DeprovisionState.NONE
            and link.blocked_by_sync
        ) and not link.risk_locked:
            fields["blocked"] = (True, False)
        refused = {p: [fields.pop(p)[0], v] for p, v in (link.conflicts if link else {}).items()
                   if p in fields and fields[p][1] == v}  # fmt: skip
        if refused:  # the worker will not send these again: a person decides, so reported apart
            out.append(Conflict(dict(sorted(refused.items()))).record(entra_id, found.user_id, display))
        if fields:
            changed = {path: [before, after] for path, (before, after) in sorted(fields.items())}
            out.append(AttributeMismatch(changed).record(entra_id, found.user_id, display))
        managed = self.mapping.managed_roles
        if managed:
            want = self.mapping.roles_for(groups)
            have = frozenset(roles_of.get(found.user_id, ())) & managed
            if want != have:
                roles = RoleMismatch(add=sorted(want - have), remove=sorted(have - want))
                out.append(roles.record(entra_id, found.user_id, display))
        stale = self._stale(found)
        if stale is not None:
            out.append(stale.record(entra_id, found.user_id, display))
        return out

    def _match(
        self, source: SourceUser, link: Link | None, auth0: _Auth0Side
    ) -> tuple[_Account | None, Ambiguous | None]:
        """The same order as the worker: link, deterministic id, then the mapping's precedence."""
        accounts = auth0.accounts
        if link is not None and not link.target_deleted and link.user_id in accounts:
            return accounts[link.user_id], None
        if self.mapping.target.deterministic_user_id and f"auth0|{source.id}" in accounts:
            return accounts[f"auth0|{source.id}"], None
        for matcher in self.mapping.matching.precedence:
            if matcher == "app_metadata":
                ids = _ids(auth0.by_owner.get(source.id))
            elif matcher == "email":
                email = planner.desired_profile(source, self.mapping).get("email")
                ids = _ids(auth0.by_email.get(str(email).strip().lower())) if email else ()
            elif matcher == "enterprise_identity":
                ids = _ids(auth0.by_enterprise.get(source.id))
            else:
                continue  # link is handled above
            decision = planner.judge_candidates(
                [
                    {"user_id": i, "app_metadata": {self.mapping.matching.app_metadata_key: accounts[i].owner}}
                    for i in ids
                ],
                source.id,
                self.mapping.matching.app_metadata_key,
            )
            if decision.outcome == "found":
                assert decision.user_id is not None
                return accounts[decision.user_id], None
            if decision.outcome in {"ambiguous", "conflict"}:
                return None, Ambiguous(list(decision.candidates), matcher, decision.outcome)
        return None, None

    def _stale(self, account: _Account) -> Stale | None:
        if account.blocked or not account.last_seen:
            return None
        try:
            seen = datetime.fromisoformat(account.last_seen.replace("Z", "+00:00"))
        except ValueError:
            return None
        days = (self.now() - seen).days
        if days < self.mapping.reconcile.stale_after_days:
            return None
        if account.logged_in:
            return Stale(days, last_login=account.last_seen)
        return Stale(days, created_at=account.last_seen)

    # -- deciding --------------------------------------------------------------------------------------

    async def _breaker(self, summary: RunSummary, records: list[DriftRecord]) -> Breaker:
        policy = self.mapping.reconcile
        # Only deprovisions this run would queue count: orphans that are merely reported block no one.
        deprovisions = sum(1 for r in records if r.drift == "orphaned") if "orphaned" in policy.remediate else 0
        share = deprovisions / max(1, summary.managed_accounts)
        breaker = Breaker(
            deprovisions=deprovisions,
            limit=policy.max_deprovisions,
            share=round(share, 4),
            share_limit=policy.max_deprovision_share,
        )
        previous = await self._previous_entra_count()
        if summary.managed_accounts and (
            summary.entra_users == 0 or (previous and summary.entra_users < previous * PARTIAL_READ_SHARE)
        ):
            breaker.tripped = True
            breaker.reason = (
                f"the Entra read looks partial: {summary.entra_users} users, the last run saw {previous or 'some'}"
            )
        elif deprovisions > policy.max_deprovisions:
            breaker.tripped = True
            breaker.reason = (
                f"{deprovisions} accounts would be blocked or deleted; the limit is {policy.max_deprovisions}"
            )
        elif deprovisions and share > policy.max_deprovision_share:
            breaker.tripped = True
            breaker.reason = (
                f"{share:.1%} of managed accounts would be blocked or deleted; the limit is "
                f"{policy.max_deprovision_share:.1%}"
            )
        return breaker

    async def _previous_entra_count(self) -> int:
        runs = await self.history()
        done = [r for r in runs if r.status in {"completed", "approved"} and r.entra_users]
        return done[-1].entra_users if done else 0

    async def _decide(self, summary: RunSummary, records: list[DriftRecord]) -> None:
        remediate = set(self.mapping.reconcile.remediate)
        items: list[WorkItem] = []
        held: list[str] = []
        for record in records:
            if record.drift not in remediate or record.entra_id is None:
                record.action = "reported"
                continue
            if summary.mode == "dry-run":  # a dry run holds nothing: its report says what the breaker would do
                record.action = "none"
                continue
            if record.drift == "orphaned" and summary.breaker.tripped:
                record.action = "held"
                held.append(record.entra_id)
                continue
            record.action = "enqueued"
            # The circuit breaker judged this run's deprovisions: the worker's guard need not again.
            approved = f"reconcile:{summary.run_id}"
            items.append(
                WorkItem("user", record.entra_id, "reconcile", summary.run_id, summary.run_id, approved=approved)
            )
        # One work item per identity, even with several drift classes.
        unique = list({i.id: i for i in items}.values())
        if unique:
            await self.queue.send(unique)
        summary.enqueued = len(unique)
        summary.held = len(set(held))
        if held:
            await self._put_many(f"reconcile-held:{summary.run_id}", sorted(set(held)))

    async def _put_many(self, kind: str, entra_ids: Iterable[str]) -> None:
        gate = asyncio.Semaphore(16)

        async def one(entra_id: str) -> None:
            async with gate:
                await self.state.put(kind, entra_id, {"entra_id": entra_id})

        await asyncio.gather(*(one(e) for e in entra_ids))

    # -- remembering -----------------------------------------------------------------------------------

    async def _save(self, summary: RunSummary, records: list[DriftRecord]) -> None:
        await self.state.put(RUN_KIND, summary.run_id, summary.to_dict())
        await self._save_report(summary, records)
        outcome = {"held": "held", "completed": "ok"}.get(summary.status, summary.status)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())) or "in sync"
        await self.audit.write(
            AuditRow(summary.run_id, "reconcile", summary.run_id, "reconcile", "auth0", "", f"reconcile_{summary.mode}",
                     outcome, detail=f"{counts}; enqueued {summary.enqueued} identities; held {summary.held}",
                     error=summary.error or summary.breaker.reason)
        )  # fmt: skip
        if self.alert is None:
            return
        if summary.status == "held":
            message = (
                f"reconciliation {summary.run_id} is held by the circuit breaker: {summary.breaker.reason}. "
                f"Nothing was blocked or deleted. Review the report, then run: entra-sync approve {summary.run_id}"
            )
            await self.alert(f"reconcile-held:{summary.run_id}", message)
        elif summary.status == "failed":
            await self.alert(f"reconcile-failed:{summary.run_id}", _failure_message(summary))

    async def _save_report(self, summary: RunSummary, records: list[DriftRecord]) -> None:
        if self.reports is None:
            return
        await self.reports.ensure()
        history = [r for r in await self.history() if r.run_id != summary.run_id][-(HISTORY - 1) :]
        await self.reports.save(summary, records, [*history, summary])

    async def _stored_records(self, run_id: str) -> list[DriftRecord] | None:
        """The records of a run's stored report, or None where there is none (reports not kept)."""
        if self.reports is None:
            return None
        try:
            _, records = await self.reports.load_run(run_id)
        except NotFound:
            log.warning("reconciliation run %s has no stored report to update", run_id)
            return None
        return list(records)

    async def history(self) -> list[RunSummary]:
        runs = [RunSummary.from_dict(v) for v in (await self.state.list(RUN_KIND)).values()]
        return sorted(runs, key=lambda r: r.started_at)

    async def summary(self, run_id: str) -> RunSummary:
        data = await self.state.get(RUN_KIND, check_run_id(run_id))
        if data is None:
            raise RunNotFound(f"no reconciliation run {run_id}")
        return RunSummary.from_dict(data)

    async def approve(self, run_id: str, approver: str = "operator") -> int:
        """Release a held run: queue the deprovisions the circuit breaker stopped, record who
        approved it and when, and store its report again so that the report says so.

        The run is marked approved last: if anything before fails, it is still held and approving
        again re-queues the same items, which the worker converges to no change."""
        summary = await self.summary(run_id)
        if summary.mode != "apply":
            raise PermanentError(f"run {run_id} is a {summary.mode}: it queued nothing, so there is nothing to approve")
        if summary.status != "held":
            raise PermanentError(f"run {run_id} is {summary.status}, not held: nothing to approve")
        held = sorted((await self.state.list(f"reconcile-held:{run_id}")).keys())
        records = await self._stored_records(run_id)
        approved = f"reconcile:{run_id}"
        items = [WorkItem("user", entra_id, "reconcile", run_id, run_id, approved=approved) for entra_id in held]
        if items:
            await self.queue.send(items)
        summary.status = "approved"
        summary.approved_by, summary.approved_at = approver, utcnow()
        if records is not None:
            for record in records:
                if record.action == "held":
                    record.action = "approved"
            await self._save_report(summary, records)
        await self.state.put(RUN_KIND, run_id, summary.to_dict())
        await self.audit.write(
            AuditRow(run_id, "reconcile", run_id, "reconcile", "auth0", "", "approve", "ok",
                     detail=f"{len(items)} held deprovisions queued, approved by {approver}")
        )  # fmt: skip
        return len(items)


def _failure_message(summary: RunSummary) -> str:
    return (
        f"reconciliation {summary.run_id} ({summary.mode}) failed and proved nothing: {summary.error}. "
        "Nothing was repaired; fix the cause and run: entra-sync reconcile --dry-run"
    )


def _index(index: dict[str, str | tuple[str, ...]], key: str, user_id: str) -> None:
    held = index.get(key)
    if held is None:
        index[key] = user_id
    elif isinstance(held, str):
        index[key] = (held, user_id)
    else:
        index[key] = (*held, user_id)


def _ids(held: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if held is None:
        return ()
    return (held,) if isinstance(held, str) else held


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
