"""The worker: one identity in, every target converged to the source, every decision audited.

The unit of work is (identity, target). A user work item names its identity's source (none: the
default source, ``entra``); the worker plans only the targets that source feeds, takes the
identity's lease in each (concurrently; a busy one re-schedules only that target's share), reads
the source once under them, then converges each target on its own: match (the ladder of
:mod:`shared.core.match`), plan (pure), hold a mass change (the target's guard), record the intent,
apply each action through the target's port (fenced by the lease), and write the audit rows with
the intent's removal in one transaction.

One target's trouble never delays another: a quarantined target (its circuit breaker open) is not
called and its share waits for the end of the cool-down; a rate limit or a lost lease re-schedules
that share for when it may go on; a transient failure retries that share alone with back-off, and
after :data:`MAX_TARGET_ATTEMPTS` it goes to the poison queue with an alert. The other targets'
shares complete in the same invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.clock import Clock
from shared.core import plan as planner
from shared.core.classify import for_target
from shared.core.match import Lookup, Resolution, resolve
from shared.core.model import Account, Action, ActionKind, DeprovisionState, Identity, Link, Plan, SourceState
from shared.core.ports import Alerts, Applied, AuditStore, LeaseStore, LinkStore, Source, Target, WorkQueue
from shared.core.work import DEFAULT_SOURCE, WorkItem, where, working_on
from shared.errors import Conflict, LeaseLost, NotFound, PermanentError, RateLimited, TransientError, TryLater
from shared.mapping.model import TargetSection
from shared.services.fanout import converge_here
from shared.services.guard import MassChangeGuard
from shared.services.health import Admission, Health, Ticket
from shared.services.ratelimit import waiting_at_most
from shared.services.waits import Waits
from shared.stores.audit import AuditRow
from shared.stores.keys import utcnow
from shared.telemetry import correlated

log = logging.getLogger("entra_sync.worker")

MAX_TARGET_ATTEMPTS: Final = 5  # as the host's maxDequeueCount: then the poison queue
RETRY_BASE_S: Final = 30.0
RETRY_MAX_S: Final = 900.0  # also the most a server's Retry-After on a 5xx is waited
# What one share may spend waiting at its target's rate gate, over all its calls and their retries:
# longer, it waits on the queue instead (deferred), where it holds no worker slot, so a rate-limited
# target cannot fill the lane with shares that each wait a call's limit for every call they make.
SHARE_RATE_WAIT_S: Final = 10.0
# Sources whose items are planned against what the link remembers was applied (no read of the
# target): a change in the source (an Entra notification or delta, a push to an inbound endpoint),
# on its first try (or again after waiting out a rate limit or a busy identity, which leaves
# nothing of its own in flight). Reconciliation, a backfill, an approval, an operator's item, a
# retry and an item re-scheduled after its lease lapsed read the target, so a change made directly
# in it (or a late write of a worker whose lease lapsed) is found and repaired there.
#
# What the memory may be trusted for (planner.remembered says it for the plan): a mover's writes
# and a group change's grants, decided from entra-sync's own last write. It is never trusted for a
# block or an unblock (a leaver, a restore: an administrator's block is not ours), nor after a
# failure (the memory is dropped when a plan stops part-way, so the next item reads), a create
# race (the winner's link says what the winner wrote, not what the account holds now) or a crash
# (an intent left behind: the target is read, and what the killed attempt did is recorded from it).
TRUSTS_LINK: Final = frozenset({"notification", "delta", "group", "push"})
REVOCATIONS: Final = planner.REVOCATIONS
# Legacy names of actions in intents recorded before the core went vendor-neutral.
_LEGACY_KINDS: Final = {
    "block": ActionKind.DISABLE,
    "unblock": ActionKind.ENABLE,
    "assign_roles": ActionKind.GRANT,
    "remove_roles": ActionKind.UNGRANT,
}


@dataclass
class TargetJob:
    """One target's provisioning job: its mapping section, adapter, links, guard and health."""

    section: TargetSection
    target: Target
    links: LinkStore
    guard: MassChangeGuard | None
    health: Health

    @property
    def name(self) -> str:
        return self.target.name


@dataclass
class Outcome:
    """What a work item did, for one target (``target``) or the whole item (its ``parts``)."""

    item: WorkItem
    # applied, noop, skipped, ambiguous, conflict, held, deferred, quarantined, retrying, poisoned,
    # failed, ignored, fanned_out
    status: str
    target: str = ""
    actions: list[str] = field(default_factory=list)
    target_id: str = ""
    warnings: list[str] = field(default_factory=list)
    enqueued: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    parts: list[Outcome] = field(default_factory=list)
    started_at: float = 0.0  # epoch seconds when the worker took the item (queue wait = this - enqueued_at)
    finished_at: float = 0.0

    @classmethod
    def of(cls, item: WorkItem, parts: list[Outcome], timings: dict[str, float]) -> Outcome:
        """The whole item: one target's outcome as it is, several summed up."""
        spent = dict(timings)  # the item's own (leases, the source read) and every part's, added up
        for part in parts:
            for stage, seconds in part.timings.items():
                spent[stage] = spent.get(stage, 0.0) + seconds
        if len(parts) == 1:
            return dataclasses.replace(parts[0], target="", parts=parts, timings=spent)
        statuses = {p.status for p in parts}
        status = next((s for s in ("applied", "held", "retrying", "deferred", "failed") if s in statuses), "noop")
        actions = [a for p in parts for a in p.actions]
        warnings = [w for p in parts for w in p.warnings]
        return cls(item, status, actions=actions, warnings=warnings, timings=spent, parts=parts)


class _Clock:
    """Adds up time per stage (source, target_read, target_write, storage) for the benchmarks."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def add(self, stage: str, started: float) -> None:
        self.spent[stage] = self.spent.get(stage, 0.0) + time.perf_counter() - started


class CreateRaced(Exception):
    """The create met an account that appeared since the read (409): read again and converge it."""


@dataclass(frozen=True)
class _Work:
    """One identity's work in one target under its lease: what was read, any intent left behind."""

    item: WorkItem
    job: TargetJob
    identity: Identity
    account: Account | None
    link: Link | None
    lease: Any
    intent: dict[str, Any] | None
    desired: Mapping[str, Any]
    remembered: bool  # the account is the link's memory of it (planner.remembered), not a read
    indexed: bool = False  # the account came from an index of the whole target (a backfill's page)


def lease_key(item: WorkItem, target: str) -> str:
    """The lease of one identity in one target: Entra's as it always was, another source's with its
    name, so two sources' ids never share a lease."""
    source = item.identity_source or DEFAULT_SOURCE
    return f"user:{item.id}:{target}" if source == DEFAULT_SOURCE else f"user:{source}:{item.id}:{target}"


class Worker:
    def __init__(
        self,
        *,
        sources: Mapping[str, Source],
        jobs: Mapping[str, TargetJob],
        leases: LeaseStore,
        audit: AuditStore,
        queue: WorkQueue,
        waits: Waits,
        alerts: Alerts,
        clock: Clock,
        lease_wait_s: float = 3.0,
    ):
        self.sources = dict(sources)
        self.jobs = dict(jobs)
        self.leases = leases
        self.audit = audit
        self.queue = queue
        self.waits = waits
        self.alerts = alerts
        self.clock = clock
        self.lease_wait_s = lease_wait_s

    # ==============================================================================================
    # A pushing source's membership change: its users, here
    # ==============================================================================================

    async def sync_members(self, item: WorkItem) -> Outcome:
        """A ``group`` item naming the users a pushing source's membership change touched: each is
        converged here as its own user item (:func:`converge_here`); those that raised or that the
        invocation's time left no room for are queued one by one."""
        users = [dataclasses.replace(item, kind="user", id=uid, users=()) for uid in item.users]  # as enqueued
        done, left = await converge_here(item, users, self.sync_user, self.clock)
        if left:
            await self.queue.send(left)
        return Outcome(item, "fanned_out", enqueued=len(left), parts=done)

    # ==============================================================================================
    # One identity, every target
    # ==============================================================================================

    async def sync_user(self, item: WorkItem) -> Outcome:
        started = self.clock.now()
        source_name = item.identity_source or DEFAULT_SOURCE
        source = self.sources.get(source_name)
        if source is None:
            return await self._unknown_source(item, source_name)
        fed = [name for name, job in self.jobs.items() if job.section.source == source_name]
        names = [item.target] if item.target else fed
        unknown = [n for n in names if n not in fed]
        parts = [await self._unknown(item, n) for n in unknown]
        wanted = [self.jobs[n] for n in names if n in fed]
        timings = _Clock()
        ready: list[TargetJob] = []
        tickets: dict[str, Ticket] = {}
        for job in wanted:
            admission = await job.health.admit()
            if admission.ticket is None:
                parts.append(await self._quarantined(item, job, admission))
            else:
                ready.append(job)
                tickets[job.name] = admission.ticket
        t = time.perf_counter()
        keys = {job.name: lease_key(item, job.name) for job in ready}
        async with self.leases.many(keys, wait_s=self.lease_wait_s) as (leased, refused):
            timings.add("storage", t)
            for name, why in refused.items():
                parts.append(await self._failed(item, self.jobs[name], why, tickets[name]))
            if leased:
                t = time.perf_counter()
                identity = await source.read(item.id)  # under every lease: nobody writes a staler read
                timings.add("source", t)
                done = await asyncio.gather(
                    *(self._converge(item, identity, self.jobs[name], lease) for name, lease in leased.items()),
                    return_exceptions=True,
                )
                for name, result in zip(leased, done, strict=True):
                    if isinstance(result, Exception):
                        parts.append(await self._failed(item, self.jobs[name], result, tickets[name]))
                    elif isinstance(result, BaseException):
                        raise result
                    else:
                        await self.jobs[name].health.succeeded(tickets[name])
                        parts.append(result)
            t = time.perf_counter()
        timings.add("storage", t)
        outcome = Outcome.of(item, parts, timings.spent)
        outcome.started_at, outcome.finished_at = started, self.clock.now()
        return outcome

    async def _unknown_source(self, item: WorkItem, name: str) -> Outcome:
        """An item of a source the mapping does not name (any more) is refused, audited, not retried."""
        detail = f"the mapping names no source {name!r} (any more): the item is refused, nothing is read or written"
        correlated(log, item.correlation_id).warning("%s %s: %s", item.kind, item.id, detail)
        await self._audit(item, item.target, "sync", "refused", detail=detail)
        return Outcome(item, "ignored", warnings=[detail])

    async def _unknown(self, item: WorkItem, name: str) -> Outcome:
        source = item.identity_source or DEFAULT_SOURCE
        detail = f"the mapping names no target {name!r} fed by the source {source!r} (any more): nothing to do"
        await self._audit(item, name, "sync", "skipped", detail=detail)
        return Outcome(item, "ignored", target=name, warnings=[detail])

    async def _quarantined(self, item: WorkItem, job: TargetJob, admission: Admission) -> Outcome:
        """The target may not be called now (its breaker is open, another call probes it, an operator
        paused it): the share waits for it on the queue, without calling it or spending an attempt,
        however long that takes."""
        share = dataclasses.replace(item, target=job.name)
        delay = await self.queue.defer(share, admission.wait_s)
        detail = (
            f"{job.name} {admission.why}; this share runs again in {delay:.0f} s, without calling it or "
            "spending an attempt"
        )
        await self._audit(share, job.name, "deferred", "deferred", detail=detail)
        return Outcome(item, "quarantined", target=job.name, warnings=[detail])

    async def _failed(self, item: WorkItem, job: TargetJob, exc: BaseException, ticket: Ticket | None) -> Outcome:
        """One target's share went wrong: wait, retry or give up on that share alone. Only a failure
        that looks like an outage counts against the target's health; a share that fails while its
        target is quarantined (the call was the probe, or was under way when the breaker opened)
        waits for the target instead of spending an attempt."""
        share = dataclasses.replace(item, target=job.name)
        clog = correlated(log, item.correlation_id)
        if isinstance(exc, TryLater | PermanentError):
            await job.health.release(ticket)  # says nothing about an outage
        if isinstance(exc, TryLater) and await self.waits.defer(share, exc, job.name) is not None:
            return Outcome(item, "deferred", target=job.name, warnings=[str(exc)])
        if isinstance(exc, PermanentError):
            clog.error("%s %s failed for good in %s: %s", item.kind, item.id, job.name, exc)
            await self._audit(share, job.name, "sync", "failed", error=f"{type(exc).__name__}: {exc}")
            return Outcome(item, "failed", target=job.name, warnings=[str(exc)])
        error = f"{type(exc).__name__}: {exc}"
        opened = None if isinstance(exc, TryLater) else await job.health.failed(ticket, error)
        if opened is not None and opened.trips == 1:  # the outage's first opening (not each failed probe)
            await self.alerts.send(
                f"quarantine:{job.name}:{opened.generation}",
                f"{job.name} is quarantined for {opened.open_until - self.clock.now():.0f} s after repeated failures "
                f"({error}); its shares wait on the queue and a probe tries it then. `entra-sync status` shows it.",
                source=item.source,
                correlation_id=item.correlation_id,
            )
        if job.health.quarantine_s() > 0:
            why = f"is quarantined ({error})"
            return await self._quarantined(item, job, Admission(None, job.health.quarantine_s(), why))
        attempt = share.attempt + 1
        if attempt >= MAX_TARGET_ATTEMPTS:
            await self.queue.poison(dataclasses.replace(share, attempt=attempt))
            await self._audit(share, job.name, "sync", "poisoned", error=error)
            await self.alerts.send(
                f"poison:{item.correlation_id}:{item.id}:{job.name}",
                f"gave up on {job.name} for {item.id} after {attempt} attempts: {error}. It is in the "
                f"{item.poison_queue} queue; its audit trail: entra-sync audit --identity {item.id}",
                source=item.source,
                correlation_id=item.correlation_id,
            )
            return Outcome(item, "poisoned", target=job.name, warnings=[error])
        told = exc.retry_after_s if isinstance(exc, TransientError) else None  # the server's Retry-After
        wait = RETRY_BASE_S * 2 ** (attempt - 1) if told is None else told
        delay = await self.queue.defer(dataclasses.replace(share, attempt=attempt), min(wait, RETRY_MAX_S))
        detail = f"attempt {attempt} of {MAX_TARGET_ATTEMPTS} failed; {job.name}'s share runs again in {delay:.0f} s"
        await self._audit(share, job.name, "sync", "retrying", detail=detail, error=error)
        clog.warning("%s %s in %s: %s; %s", item.kind, item.id, job.name, error, detail)
        return Outcome(item, "retrying", target=job.name, warnings=[error])

    # ==============================================================================================
    # One identity, one target
    # ==============================================================================================

    async def converge(self, item: WorkItem, identity: Identity, job: TargetJob, lookup: Lookup) -> Outcome:
        """One identity already read (a backfill's page), in one target, under its lease: matched
        first against ``lookup`` (an index of every account) instead of a read per identity, then
        planned, applied and audited as any work item. Failures are handled as the worker's own
        (re-scheduled, retried or given up on, for that share)."""
        admission = await job.health.admit()
        if admission.ticket is None:
            return await self._quarantined(item, job, admission)
        key = lease_key(item, job.name)
        try:
            async with self.leases.held(key, wait_s=self.lease_wait_s) as lease:
                outcome = await self._converge(item, identity, job, lease, lookup)
        except Exception as exc:
            return await self._failed(item, job, exc, admission.ticket)
        await job.health.succeeded(admission.ticket)
        return outcome

    async def _converge(
        self, item: WorkItem, source: Identity, job: TargetJob, lease: Any, lookup: Lookup | None = None
    ) -> Outcome:
        with waiting_at_most(SHARE_RATE_WAIT_S, self.clock.now()), working_on(item):
            return await self._converge_share(item, source, job, lease, lookup)

    async def _converge_share(
        self, item: WorkItem, source: Identity, job: TargetJob, lease: Any, lookup: Lookup | None
    ) -> Outcome:
        clock = _Clock()
        rules = job.target.rules
        identity = for_target(source, job.section.scope)
        t = time.perf_counter()
        link, intent = await asyncio.gather(job.links.get(item.id), self.audit.read_intent(item.id, job.name))
        clock.add("storage", t)
        desired = rules.desired(identity)
        # An item re-scheduled after its lease lapsed reads: it may follow a write of its own that
        # landed late. One that waited out a rate limit or a busy identity left nothing in flight.
        first_try = item.attempt == 0 and not item.reread
        trusts_link = lookup is None and intent is None and first_try and item.source in TRUSTS_LINK
        for _attempt in range(3):
            known = planner.remembered(identity, link, job.section, desired) if trusts_link else None
            t = time.perf_counter()
            found = Resolution(known, "link") if known is not None else await resolve(
                identity, link, lookup or job.target, rules, job.section.matching, desired,
                entitlements=identity.state is SourceState.ACTIVE,  # a leaver's roles are left as they are
            )  # fmt: skip
            clock.add("target_read", t)
            if found.problem:
                return await self._unmatched(item, job, found, clock)
            plan = planner.plan(
                identity, found.account, link, job.section, rules, job.target.capabilities, desired=desired
            )
            if intent is not None:  # what a killed attempt sent that cannot be observed goes out again
                earlier = [a for a in map(_action_from, intent.get("actions", [])) if a is not None]
                plan = planner.resend(plan, earlier, identity, found.account)
            hold = await job.guard.check(item, plan) if job.guard is not None else None
            if hold is not None:
                target_id = found.account.target_id if found.account else ""
                await self._audit(item, job.name, "held", "held", target_id, detail=hold.reason)
                correlated(log, item.correlation_id).warning(
                    "%s %s in %s: %s", item.kind, item.id, job.name, hold.reason
                )
                return Outcome(item, "held", target=job.name, warnings=[hold.reason], timings=clock.spent)
            try:
                work = _Work(
                    item, job, identity, found.account, link, lease, intent, desired, known is not None,
                    indexed=lookup is not None,
                )  # fmt: skip
                return await self._apply(work, plan, clock)
            except NotFound:
                if known is None:
                    raise
                # The account the link remembers is gone (deleted in the target by hand): read.
                correlated(log, item.correlation_id).info(
                    "the %s account remembered for %s is gone; reading the target", job.name, item.id
                )
                link = dataclasses.replace(link, applied=None) if link is not None else None
                intent = None  # settled by the attempt that failed
                trusts_link = False
                continue
            except CreateRaced:
                # Another worker created the account between our read and our create (or it was
                # created by hand with the deterministic id): read again and converge it instead.
                correlated(log, item.correlation_id).info(
                    "create conflicted for %s in %s; re-reading", item.id, job.name
                )
                t = time.perf_counter()
                link = await job.links.get(item.id)
                intent = None  # settled by the attempt that raced
                lookup = None  # an index is older than the race: read the target itself
                trusts_link = False  # the winner's link says what it wrote, not what the account holds
                clock.add("storage", t)
        raise TransientError(f"could not settle the {job.name} account for {item.id} after a create conflict")

    async def _unmatched(self, item: WorkItem, job: TargetJob, found: Resolution, clock: _Clock) -> Outcome:
        await self._audit(item, job.name, found.problem, "refused", detail=found.explain())
        return Outcome(item, found.problem, target=job.name, warnings=[found.explain()], timings=clock.spent)

    async def _apply(self, work: _Work, plan: Plan, clock: _Clock) -> Outcome:
        """The intent first, then each action fenced, then the audit rows and the intent's removal
        in one transaction (also when an action failed half-way)."""
        item, job = work.item, work.job
        target_id = work.account.target_id if work.account else (work.link.target_id if work.link else "")
        outcome = Outcome(item, "noop" if not plan.actions else "applied", target=job.name, target_id=target_id)
        rows = self._recovered(work, plan, target_id)
        intent_etag: str | None = None
        if any(a.kind is not ActionKind.SKIP for a in plan.actions):
            t = time.perf_counter()
            intent_etag = await self.audit.write_intent(item.id, job.name, _intent(item, plan, rows))
            clock.add("storage", t)
        elif not plan.actions and not work.remembered:
            # A change notification that changed nothing mapped leaves no row: there are many, and
            # nothing was decided; a check that read the target (reconciliation, ...) is recorded.
            rows.append(AuditRow.for_item(item, job.name, "none", "ok", target_id, detail="in sync"))
        recorded = len(rows)
        try:
            link = await self._apply_actions(work, plan, outcome, rows, clock)
            await self._remember(work, plan, outcome, link, clock)
        except RateLimited:
            # Stopped at the target's rate gate (or refused by its 429) before any action took
            # effect: the account is as the link remembers, so the memory stands and the deferred
            # share plans from it again, instead of paying the target a read when it is short.
            if len(rows) > recorded:
                await self._forget(work, clock)
            raise
        except LeaseLost as exc:
            # Not forgotten here: the link may be another worker's to write by now, and whatever
            # follows a lost lease is re-scheduled, so it reads the target.
            rows.append(AuditRow.for_item(item, job.name, "lease_lost", "refused", outcome.target_id, detail=str(exc)))
            raise
        except CreateRaced:
            raise  # nothing reached the target; the worker reads it and plans again
        except Exception:
            await self._forget(work, clock)
            raise
        finally:
            t = time.perf_counter()
            drop_intent = work.intent is not None or intent_etag is not None
            if rows or drop_intent:
                await self.audit.settle(rows, item.id, job.name, drop_intent=drop_intent, intent_etag=intent_etag)
            clock.add("storage", t)
        outcome.timings = clock.spent
        return outcome

    async def _remember(self, work: _Work, plan: Plan, outcome: Outcome, link: Link | None, clock: _Clock) -> None:
        """Keep in the link what the account holds now that every action succeeded, so the next
        change is planned without reading the target (:func:`shared.core.plan.remembered`). A value
        the target refused is not remembered as applied: the snapshot is dropped instead."""
        if link is None or link.target_id != outcome.target_id:
            return
        if work.account is not None and work.account.target_id != link.target_id:
            return
        snapshot = None
        # An index's accounts may lack what a live read has (Auth0's export carries no roles).
        if not link.conflicts and not work.indexed:
            snapshot = planner.applied_after(
                work.identity, work.account, plan, work.job.section, work.job.target.rules, work.desired,
                entitlements_read=work.remembered or work.identity.state is SourceState.ACTIVE,
            )  # fmt: skip
        if snapshot != link.applied:
            t = time.perf_counter()
            await work.job.links.put(dataclasses.replace(link, applied=snapshot))
            clock.add("storage", t)

    async def _forget(self, work: _Work, clock: _Clock) -> None:
        """A plan stopped part-way: some writes may have reached the target, some not, so the link's
        memory of the last convergence no longer says what the account holds. Drop it: the next
        item reads the target instead of writing (and auditing) the same changes again."""
        t = time.perf_counter()
        try:
            link = await work.job.links.get(work.item.id)
            if link is not None and link.applied is not None:
                await work.job.links.put(dataclasses.replace(link, applied=None))
        except Exception as exc:  # the failure being raised matters more; the next retry reads anyway
            correlated(log, work.item.correlation_id).warning(
                "could not drop the %s link's memory for %s: %s", work.job.name, work.item.id, type(exc).__name__
            )
        clock.add("storage", t)

    def _recovered(self, work: _Work, plan: Plan, target_id: str) -> list[AuditRow]:
        """Audit rows for what an earlier attempt set out to do and never recorded (it was killed
        between a write and its audit row): each action of its intent that this plan no longer
        needs, with whether the target shows it now: ``recovered`` when it does (or a bookkeeping
        step is no longer needed), ``interrupted`` when it shows it not done, and ``unconfirmed``
        for a write nothing can show (a revocation this plan does not send again, see
        :func:`shared.core.plan.resend`)."""
        if work.intent is None:
            return []
        rules = work.job.target.rules
        rows = [AuditRow(**row) for row in work.intent.get("carried", [])]
        planned = {a.kind for a in plan.actions}
        earlier = str(work.intent.get("correlation_id", ""))
        for entry in work.intent.get("actions", []):
            action = _action_from(entry)
            if action is None or action.kind in planned or action.kind is ActionKind.SKIP:
                continue
            seen = planner.observed(action, work.account, work.link, rules)
            if seen is None and action.writes_target:
                outcome, how = "unconfirmed", "whether it reached the target cannot be seen, and it is not sent again"
            elif seen is None:
                outcome, how = "recovered", "it is no longer needed"
            elif seen:
                outcome, how = "recovered", "the target shows it done"
            else:
                outcome, how = "interrupted", "it did not take effect"
            began = f"attempt {earlier} began this at {work.intent.get('at', '?')}"
            detail = f"{began} and stopped before recording it; {how}"
            rows.append(
                AuditRow.for_item(
                    work.item, work.job.name, rules.label(action.kind), outcome, target_id,
                    diff=safe_diff(action, work.job.target.capabilities.entitlements or "entitlements"),
                    detail=detail,
                )
            )  # fmt: skip
        return rows

    async def _apply_actions(
        self, work: _Work, plan: Plan, outcome: Outcome, rows: list[AuditRow], clock: _Clock
    ) -> Link | None:
        """Each action in turn (a write fenced by the lease); returns the link as it now stands."""
        current_link = work.link
        early: dict[int, asyncio.Future[Applied]] = {}  # the next revocation, sent with this one
        try:
            for index in range(len(plan.actions)):
                current_link = await self._apply_one(work, plan, index, early, outcome, rows, current_link, clock)
        finally:
            # A revocation sent beside one that failed: let it land, and record it if it took effect
            # (the retry sends it again, harmlessly, and records that one too).
            for index, started in early.items():
                with contextlib.suppress(Exception):
                    applied = await started
                    action = plan.actions[index]
                    shown = safe_diff(action, work.job.target.capabilities.entitlements or "entitlements")
                    self._record(work, action, outcome, rows, applied.warning, shown)
        return current_link

    async def _apply_one(
        self,
        work: _Work,
        plan: Plan,
        index: int,
        early: dict[int, asyncio.Future[Applied]],
        outcome: Outcome,
        rows: list[AuditRow],
        current_link: Link | None,
        clock: _Clock,
    ) -> Link | None:
        """One action: a target write fenced by the lease, or the link's bookkeeping; its audit row.
        Both revocations go out together: they are independent, and the deprovision was recorded
        (``START_DEPROVISION``) before either."""
        item, job, lease = work.item, work.job, work.lease
        action = plan.actions[index]

        def fence() -> None:
            self.leases.fence(lease)

        t = time.perf_counter()
        warning = ""
        shown = safe_diff(action, job.target.capabilities.entitlements or "entitlements")
        if action.kind is ActionKind.SKIP:
            outcome.status = "skipped"
        elif action.writes_target:
            fence()  # a worker that lost its lease writes nothing more
            following = plan.actions[index + 1] if index + 1 < len(plan.actions) else None
            if action.kind in REVOCATIONS and following is not None and following.kind in REVOCATIONS:
                early[index + 1] = asyncio.ensure_future(job.target.apply(outcome.target_id, following, fence))
            try:
                started = early.pop(index, None)
                applied = await (started if started is not None else job.target.apply(outcome.target_id, action, fence))
            except Conflict as exc:
                if action.kind is ActionKind.CREATE:
                    raise CreateRaced(str(exc)) from exc
                raise
            if applied.target_id:
                outcome.target_id = applied.target_id
            if applied.refused:
                current_link = await self._record_conflicts(
                    item.id, job, outcome.target_id, current_link, applied.refused
                )
                warning = _conflict_text(job.name, applied.refused, item.identity_source or DEFAULT_SOURCE)
                shown = {p: v for p, v in (shown or {}).items() if p not in applied.refused}
                rows.append(
                    AuditRow.for_item(
                        item, job.name, "conflict", "conflict", outcome.target_id,
                        diff={p: [action.diff[p][0], v] for p, v in applied.refused.items()}, detail=warning,
                    )
                )  # fmt: skip
            warning = warning or applied.warning
        else:
            fence()
            current_link = await self._bookkeep(action, item.id, job, outcome.target_id, current_link)
        clock.add("target_write" if action.writes_target else "storage", t)
        self._record(work, action, outcome, rows, warning, shown)
        if action.kind is not ActionKind.SKIP:
            self.leases.fence_after_write(lease)  # a write that may have landed late: converge again
        return current_link

    def _record(
        self, work: _Work, action: Action, outcome: Outcome, rows: list[AuditRow], warning: str, shown: Any
    ) -> None:
        """An action done: in the outcome, and as its audit row (settled with the others)."""
        item, job = work.item, work.job
        label = job.target.rules.label(action.kind)
        outcome.actions.append(label)
        if warning:
            outcome.warnings.append(warning)
            correlated(log, item.correlation_id).warning("%s", warning)
        result = "warning" if warning else ("skipped" if action.kind is ActionKind.SKIP else "ok")
        rows.append(
            AuditRow.for_item(
                item, job.name, label, result, outcome.target_id, diff=shown, detail=warning or action.reason
            )
        )

    def _new_link(self, source_id: str, target_id: str, job: TargetJob) -> Link:
        """A link not stored yet, between the job's source and its target."""
        return Link(source_id, target_id, target=job.name, source=job.section.source)

    async def _record_conflicts(
        self, source_id: str, job: TargetJob, target_id: str, link: Link | None, refused: Mapping[str, Any]
    ) -> Link:
        base = link if link is not None and link.target_id == target_id else self._new_link(source_id, target_id, job)
        new = dataclasses.replace(base, conflicts={**base.conflicts, **refused})
        await job.links.put(new)
        return new

    async def _bookkeep(
        self, action: Action, source_id: str, job: TargetJob, target_id: str, link: Link | None
    ) -> Link:
        base = link if link is not None and link.target_id == target_id else self._new_link(source_id, target_id, job)
        if action.kind is ActionKind.LINK:
            new = dataclasses.replace(base, target_deleted=False)
        elif action.kind is ActionKind.START_DEPROVISION:
            new = dataclasses.replace(
                base, deprovision=DeprovisionState.PENDING, disabled_by_sync=bool(action.payload["disabled_by_sync"])
            )
        elif action.kind is ActionKind.FINISH_DEPROVISION:
            new = dataclasses.replace(base, deprovision=DeprovisionState.DONE)
        elif action.kind is ActionKind.CLEAR_DEPROVISION:
            new = dataclasses.replace(base, deprovision=DeprovisionState.NONE, disabled_by_sync=False)
        elif action.kind is ActionKind.MARK_TARGET_DELETED:
            new = dataclasses.replace(link or base, target_deleted=True)
        elif action.kind is ActionKind.SET_CONFLICTS:
            new = dataclasses.replace(base, conflicts=dict(action.payload["conflicts"]))
        else:
            raise AssertionError(f"not a bookkeeping action: {action.kind}")
        await job.links.put(new)
        return new

    async def _audit(
        self,
        item: WorkItem,
        target: str,
        action: str,
        outcome: str,
        target_id: str = "",
        detail: str = "",
        error: str = "",
    ) -> None:
        await self.audit.write(AuditRow.for_item(item, target, action, outcome, target_id, detail=detail, error=error))


def _intent(item: WorkItem, plan: Plan, carried: list[AuditRow]) -> dict[str, Any]:
    """What is about to be written, recorded before the first write (see the audit store)."""
    return {
        "correlation_id": item.correlation_id,
        "source": item.source,
        "identity_source": item.identity_source or DEFAULT_SOURCE,
        "at": utcnow(),
        "actions": [
            {"kind": a.kind.value, "reason": a.reason, "diff": {p: list(v) for p, v in a.diff.items()},
             "entitlements": list(a.entitlements)}
            for a in plan.actions
        ],
        "carried": [dataclasses.asdict(row) for row in carried],  # recovered rows not yet written
    }  # fmt: skip


def _action_from(entry: dict[str, Any]) -> Action | None:
    raw = entry.get("kind")
    try:
        kind = _LEGACY_KINDS.get(str(raw)) or ActionKind(raw)
    except ValueError:
        return None
    diff = {str(p): (pair[0], pair[1]) for p, pair in (entry.get("diff") or {}).items()}
    names = tuple(entry.get("entitlements") or entry.get("roles") or ())
    return Action(kind, {}, diff, str(entry.get("reason", "")), names)


def _conflict_text(target: str, refused: Mapping[str, Any], source: str) -> str:
    values = ", ".join(f"{path} {value!r}" for path, value in sorted(refused.items()))
    return (
        f"{target} refused {values}: another account already has it. The other changes were applied; this "
        f"value is not tried again until it changes {where(source)}, and reconciliation reports it as a conflict"
    )


def safe_diff(action: Action, entitlements: str = "entitlements") -> dict[str, Any] | None:
    """What an audit row may show: the mapped fields that changed, never a password or token;
    ``entitlements`` is the target's word for them ("roles")."""
    if action.diff:
        return {path: [before, after] for path, (before, after) in action.diff.items()}
    if action.kind is ActionKind.CREATE:
        return {k: v for k, v in action.payload.items() if k not in {"password"}}
    if action.entitlements:
        return {entitlements: list(action.entitlements)}
    return None
