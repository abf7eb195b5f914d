"""Reconciliation: prove every target agrees with Entra, repair what is safe, report everything.

One run covers one target. It reads the target's links (without their memory of the last write)
and every account it holds (with their entitlements, in the target's own bulk way: Auth0 lists up
to 1,000 accounts and exports beyond), keeps them compactly (:mod:`shared.services.target_side`),
indexed by every key the target's matchers look up, then streams the Entra identities page by
page, and for each one runs the same ladder and the same planner as the worker (against the index
instead of the live target): the drift records are read off the plan the worker would make, so the
two can never disagree. Only drifted identities are kept, so memory grows with the target's size
(about a kilobyte an account and link) and the drift, not with Entra.

Remediation never acts here: drifted identities of the target's safe classes are queued for the
worker, which re-reads and converges them like any other work item. A run that would disable or
delete more managed accounts than the circuit breaker allows, or whose Entra read looks partial,
queues none of those, reports, alerts and waits for ``approve``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from shared.core.drift import (
    Breaker,
    DriftRecord,
    Orphaned,
    Provenance,
    RunSummary,
    deprovision_limit,
    drift_of,
    granting_groups,
    sign_in_name,
)
from shared.core.match import Resolution, planned
from shared.core.model import Identity, Link, Plan, SourceState
from shared.core.ports import (
    AuditStore,
    KeepsBaseline,
    KeepsHouse,
    ReadsGroups,
    Source,
    StateStore,
    TellsHowRead,
    WorkQueue,
)
from shared.core.work import WorkItem, item_source
from shared.errors import NotFound, PermanentError
from shared.mapping.model import SyncMapping
from shared.services.report import provenance as provenance_of
from shared.services.target_side import CompactAccounts, CompactLinks
from shared.services.worker import TargetJob
from shared.sources.graph.groups import mapping_group_problems
from shared.stores.audit import AuditRow
from shared.stores.keys import utcnow

log = logging.getLogger("entra_sync.reconcile")

RUN_KIND: Final = "reconcile-run"
UNKNOWN_GROUP: Final = "unknown_group"  # a failed run's record: a mapping entry naming a missing group
FINISHED: Final = frozenset({"completed", "held", "approved"})  # runs whose records are whole
HISTORY: Final = 12
PARTIAL_READ_SHARE: Final = 0.5  # fewer Entra users than half the last run's: the read looks partial
_RUN_ID: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")

Progress = Callable[[str, int, int | None], None]


class RunNotFound(PermanentError):
    pass


class UnknownGroups(PermanentError):
    """The mapping names groups the source cannot give: the run stops before it reads anything.
    ``problems``: one line per entry (``roles[2].group: group <id> does not exist ...``)."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems

    def records(self) -> list[DriftRecord]:
        """What the failed run's report (and the ticket book) says about it: a record per entry."""
        return [
            DriftRecord(UNKNOWN_GROUP, None, None, problem, {"entry": problem.split(": ", 1)[0]})
            for problem in self.problems
        ]


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
        source: Source,
        job: TargetJob,
        state: StateStore,
        queue: WorkQueue,
        audit: AuditStore,
        mapping: SyncMapping,
        reports: Any = None,  # shared.services.report.ReportStore, or None to skip writing reports
        alert: Callable[[str, str], Awaitable[Any]] | None = None,  # (incident key, message): a held or failed run
        # After a run is saved: its summary and records (the ticket book: shared.alerting.tickets).
        after_run: Callable[[RunSummary, list[DriftRecord]], Awaitable[Any]] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.source = source
        self.job = job
        self.target = job.target
        self.section = job.section
        self.links = job.links
        self.state = state
        self.queue = queue
        self.audit = audit
        self.mapping = mapping
        self.reports = reports
        self.alert = alert
        self.after_run = after_run
        self.now = now

    # ==============================================================================================

    async def run(
        self,
        mode: str = "dry-run",
        run_id: str | None = None,
        progress: Progress | None = None,
        provenance: Provenance | None = None,
    ) -> tuple[RunSummary, list[DriftRecord]]:
        """One run. ``provenance``: what the caller knows of where it comes from (the settings' side,
        the trigger and the operator: see ``shared.services.report.provenance``); without it the
        run records what the reconciler knows itself (source, target kind, version)."""
        if mode not in {"dry-run", "apply"}:
            raise ValueError("mode is dry-run or apply")
        report = progress or (lambda phase, done, total: None)
        summary = RunSummary(
            run_id=run_id or new_run_id(self.now()), mode=mode, started_at=utcnow(), target=self.target.name,
            provenance=provenance or self._provenance(),
        )  # fmt: skip
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

        await self._check_groups()
        if isinstance(self.target, KeepsHouse):  # a target with objects of its own (SCIM groups)
            summary.housekeeping = await self.target.tidy(summary.mode == "apply")
        if isinstance(self.target, KeepsBaseline):  # tenant settings the section declares (Auth0)
            await self._baseline(summary)
        lap("mapping")
        links = CompactLinks()
        async for link in self.links.all(applied=False):  # the run reads the target: no memory needed
            links.add(link)
        lap("links")
        index = await self._read_target(report)
        summary.accounts = len(index)
        summary.read_by = self.target.read_by if isinstance(self.target, TellsHowRead) else ""
        lap("target")

        records: list[DriftRecord] = []
        seen_accounts: set[str] = set()
        seen: set[str] = set()
        async for page in self.source.identities():
            for identity in page:
                summary.entra_users += 1
                seen.add(identity.id)
                records.extend(await self._drift(identity, links.get(identity.id), index, seen_accounts, summary))
            report("entra users", summary.entra_users, None)
        lap("entra")

        unseen = [target_id for target_id in index.ids() if target_id not in seen_accounts]
        source_of = links.holders(set(unseen))
        for target_id in unseen:
            account = index.get(target_id)
            source_id = source_of.get(target_id) or (account.owner if account is not None else None)
            if account is None or source_id is None:
                continue
            summary.managed_accounts += 1
            if source_id not in seen and account.active:
                email = account.data.get("email")
                display = str(email or account.data.get("name") or target_id)
                orphan = Orphaned("source deleted").record(source_id, target_id, display)
                orphan.sign_in = email if isinstance(email, str) else ""  # no identity was read: the account's
                records.append(orphan)
        lap("orphans")
        await self._mark_new(summary, records)

        counts: dict[str, int] = {}
        for r in records:
            counts[r.drift] = counts.get(r.drift, 0) + 1
        summary.counts = counts
        summary.drifted = len({r.identity for r in records})
        summary.breaker = await self._breaker(summary, records)
        await self._decide(summary, records)
        lap("decide")
        held = (summary.breaker.tripped and summary.held) or summary.baseline_held
        summary.status = "held" if held else "completed"
        summary.finished_at = utcnow()
        await self._save(summary, records)
        lap("report")
        return records

    async def _baseline(self, summary: RunSummary) -> None:
        """Every difference from the declared baseline, in the report and to the operators; where the
        section enforces it, an applying run is held until approved (``approve`` corrects them)."""
        assert isinstance(self.target, KeepsBaseline)
        found = await self.target.baseline_drift()
        summary.baseline = [d.line() for d in found]
        summary.baseline_held = bool(found) and summary.mode == "apply" and self.target.enforces_baseline
        if found and self.alert is not None:
            then = (
                f"Held: review the report, then run: entra-sync approve {summary.run_id}"
                if summary.baseline_held
                else "Reported only (the baseline is not enforced)."
            )
            lines = "; ".join(summary.baseline)
            message = f"{self.target.name} differs from its baseline: {lines}. {then}"
            await self.alert(f"baseline:{summary.run_id}", message)

    async def _failed(self, summary: RunSummary, error: Exception) -> None:
        """A run that could not finish still leaves its run record, a report saying why, an audit row
        and an alert: a silent nightly failure is how drift goes unseen."""
        summary.status = "failed"
        summary.error = f"{type(error).__name__}: {error}"
        summary.finished_at = utcnow()
        try:
            await self._save(summary, error.records() if isinstance(error, UnknownGroups) else [])
        except Exception as exc:  # storage is what failed: the alert and the log must still go out
            log.error("could not record the failed reconciliation %s: %s", summary.run_id, type(exc).__name__)
            if self.alert is not None:
                await self.alert(f"reconcile-failed:{summary.run_id}", _failure_message(summary))

    # -- reading -----------------------------------------------------------------------------------

    async def _read_target(self, report: Progress) -> CompactAccounts:
        index = CompactAccounts(self.target.rules)
        async for account in self.target.accounts():
            index.add(account)
            if len(index) % 5000 == 0:
                report(f"{self.target.name} accounts", len(index), None)
        report(f"{self.target.name} accounts", len(index), len(index))
        return index

    async def _check_groups(self) -> None:
        # A source with groups of its own says whether the mapping's exist (``mapping`` is the source's
        # view of the file: the targets it feeds); a source without them has none to check.
        problems = (
            await mapping_group_problems(self.source, self.mapping) if isinstance(self.source, ReadsGroups) else []
        )
        if problems:  # a missing scope group would make everyone a leaver: refuse the run instead
            raise UnknownGroups(
                f"the mapping file {self.mapping.source} names groups Entra ID cannot give, so scope and "
                f"entitlements cannot be worked out: {'; '.join(problems)}",
                problems,
            )

    async def plans(self, progress: Progress | None = None) -> AsyncIterator[tuple[Identity, Resolution, Plan]]:
        """Every identity of the source with its match and the plan the worker would make now,
        against the target read once (what a mapping would do before it is deployed: this is the
        mapping the reconciler was built with). Nothing is written or stored."""
        report = progress or (lambda phase, done, total: None)
        await self._check_groups()
        links = CompactLinks()
        async for link in self.links.all(applied=False):
            links.add(link)
        index = await self._read_target(report)
        read = 0
        async for page in self.source.identities():
            for source in page:
                done = await planned(source, links.get(source.id), index, self.section, self.target, entitlements=True)
                yield done.identity, done.found, done.plan
            read += len(page)
            report("entra users", read, None)

    async def _drift(
        self,
        source: Identity,
        link: Link | None,
        index: CompactAccounts,
        seen_accounts: set[str],
        summary: RunSummary,
    ) -> list[DriftRecord]:
        """Classified as the worker would: the same narrowing, ladder and planner."""
        done = await planned(source, link, index, self.section, self.target, entitlements=True)
        identity, found, plan, desired = done.identity, done.found, done.plan, done.desired
        rules = self.target.rules
        if found.account is not None:
            seen_accounts.add(found.account.target_id)
            summary.managed_accounts += 1
        display = str(
            identity.attributes.get("displayName") or identity.attributes.get("userPrincipalName") or identity.id
        )
        grants = ((g.group, g.entitlements) for g in self.section.grants)
        records = drift_of(
            identity, found, link, plan, rules, stale_after_days=self.section.reconcile.stale_after_days,
            now=self.now(), display=display, desired=desired, granted_by=granting_groups(grants, identity.groups),
        )  # fmt: skip
        sign_in = sign_in_name(identity.attributes)
        for record in records:
            record.sign_in = sign_in
        if identity.state is SourceState.ACTIVE:
            summary.entra_in_scope += 1
            if not records:
                summary.in_sync += 1
        return records

    async def _mark_new(self, summary: RunSummary, records: list[DriftRecord]) -> None:
        """Mark each record new or not against the previous run of this target that finished
        (its stored report read as a set of keys, never as records)."""
        previous = [r for r in await self.history() if r.status in FINISHED and r.run_id != summary.run_id]
        if not previous or self.reports is None:
            return
        try:
            before = await self.reports.record_keys(previous[-1].run_id)
        except NotFound:
            log.warning("the previous run %s has no stored report: nothing is marked new", previous[-1].run_id)
            return
        summary.previous_run = previous[-1].run_id
        for record in records:
            record.new = record.key not in before
        summary.new_records = sum(1 for r in records if r.new)

    def _provenance(self) -> Provenance:
        """What the reconciler knows of its own provenance, without the settings or a caller."""
        return provenance_of(self.mapping, self.target.name)

    # -- deciding --------------------------------------------------------------------------------------

    async def _breaker(self, summary: RunSummary, records: list[DriftRecord]) -> Breaker:
        policy = self.section.reconcile
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
        elif why := deprovision_limit(policy, deprovisions, summary.managed_accounts):
            breaker.tripped, breaker.reason = True, why
        return breaker

    async def _previous_entra_count(self) -> int:
        runs = await self.history()
        done = [r for r in runs if r.status in {"completed", "approved"} and r.entra_users]
        return done[-1].entra_users if done else 0

    async def _decide(self, summary: RunSummary, records: list[DriftRecord]) -> None:
        remediate = set(self.section.reconcile.remediate)
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
                WorkItem(
                    "user",
                    record.entra_id,
                    "reconcile",
                    summary.run_id,
                    summary.run_id,
                    approved=approved,
                    identity_source=item_source(self.section.source),
                )
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
            AuditRow(summary.run_id, "reconcile", summary.run_id, "reconcile", summary.target, "",
                     f"reconcile_{summary.mode}", outcome,
                     detail=f"{counts}; enqueued {summary.enqueued} identities; held {summary.held}",
                     error=summary.error or summary.breaker.reason)
        )  # fmt: skip
        if self.after_run is not None:
            try:
                await self.after_run(summary, records)
            except Exception as exc:  # tickets are told again by the next run; this run's record stands
                log.error("the findings of %s could not be passed on: %s: %s", summary.run_id, type(exc).__name__, exc)
        if self.alert is None:
            return
        if summary.status == "held" and summary.breaker.tripped and summary.held:  # a baseline hold says so itself
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

    async def history(self, every_target: bool = False) -> list[RunSummary]:
        """This target's runs (or every target's), oldest first."""
        runs = [RunSummary.from_dict(v) for v in (await self.state.list(RUN_KIND)).values()]
        mine = runs if every_target else [r for r in runs if r.target == self.target.name]
        return sorted(mine, key=lambda r: r.started_at)

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
        if summary.target != self.target.name:
            raise PermanentError(f"run {run_id} reconciled {summary.target}, not {self.target.name}")
        if summary.mode != "apply":
            raise PermanentError(f"run {run_id} is a {summary.mode}: it queued nothing, so there is nothing to approve")
        if summary.status != "held":
            raise PermanentError(f"run {run_id} is {summary.status}, not held: nothing to approve")
        held = sorted((await self.state.list(f"reconcile-held:{run_id}")).keys())
        records = await self._stored_records(run_id)
        approved = f"reconcile:{run_id}"
        fed = item_source(self.section.source)
        items = [
            WorkItem("user", entra_id, "reconcile", run_id, run_id, approved=approved, identity_source=fed)
            for entra_id in held
        ]
        if items:
            await self.queue.send(items)
        if summary.baseline_held and isinstance(self.target, KeepsBaseline):
            summary.baseline = [*summary.baseline, *await self.target.enforce_baseline()]
            summary.baseline_held = False
        summary.status = "approved"
        summary.approved_by, summary.approved_at = approver, utcnow()
        if records is not None:
            for record in records:
                if record.action == "held":
                    record.action = "approved"
            await self._save_report(summary, records)
        await self.state.put(RUN_KIND, run_id, summary.to_dict())
        await self.audit.write(
            AuditRow(run_id, "reconcile", run_id, "reconcile", summary.target, "", "approve", "ok",
                     detail=f"{len(items)} held deprovisions queued, approved by {approver}")
        )  # fmt: skip
        return len(items)


def _failure_message(summary: RunSummary) -> str:
    return (
        f"reconciliation {summary.run_id} ({summary.mode}) failed and proved nothing: {summary.error}. "
        "Nothing was repaired; fix the cause and run: entra-sync reconcile --dry-run"
    )


async def reconcile_every(
    reconcilers: Mapping[str, Reconciler],
    mode: str = "apply",
    provenance: Callable[[str], Provenance] | None = None,
) -> list[RunSummary]:
    """Every target in turn, each its own run, report and circuit breaker. One that fails (its run
    is recorded, reported and alerted already) does not stop the others; the failures are raised
    together once every target had its run. ``provenance``: a target's name -> its runs' provenance."""
    summaries: list[RunSummary] = []
    failures: list[str] = []
    for name, reconciler in reconcilers.items():
        try:
            summary, _ = await reconciler.run(mode, provenance=provenance(name) if provenance else None)
        except Exception as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        summaries.append(summary)
    if failures:
        raise ReconcileFailed("; ".join(failures))
    return summaries


class ReconcileFailed(Exception):
    """At least one target's reconciliation failed (each is recorded, reported and alerted)."""
