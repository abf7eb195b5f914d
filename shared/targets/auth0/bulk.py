"""Initial load through Auth0 import jobs: every in-scope joiner created in a few calls, not one
create (and one role call) per user.

One run reads the Entra users and the relevant group memberships, builds the account the worker
would create for each in-scope joiner that has no link yet (the same payload, the deterministic
``user_id`` = the Entra object id, ``app_metadata`` carrying that id), and sends them as JSON array
files of at most 500 KB to ``/jobs/users-imports``, at most two jobs at a time (Auth0's limit). It
waits for the jobs, reads their errors, assigns the managed roles per role in bulk
(``POST /roles/{id}/users``), writes the links in table batches and one audit row per account.

Users that an import could not create (an account with that email or id exists already, or a row
was refused) are not guessed at: they are queued for the worker, which matches, links or creates
them one by one like any other work item. Imported accounts carry no password: they sign in
through a reset or SSO, so no password can reach a file, a log or the audit.

The run starts from a users delta link taken before the read, so changes made while the jobs run
are caught up by the next delta run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from shared.core.classify import for_target
from shared.core.model import Identity, Link, SourceState
from shared.core.ports import AuditStore, CursorSource, LeaseStore, StateStore, WorkQueue
from shared.core.work import WorkItem
from shared.services.delta import USERS_DELTA_LEASE
from shared.services.worker import TargetJob
from shared.stores.audit import AuditRow
from shared.targets.auth0.rules import Auth0Rules

log = logging.getLogger("entra_sync.bulk")

MAX_FILE_BYTES: Final = 500 * 1024  # Auth0's limit for one users-imports file
MAX_ACTIVE_JOBS: Final = 2  # Auth0 runs at most two import jobs per tenant at once
# POST /roles/{id}/users documents no maximum; stay at a size a single request body carries easily.
ROLE_ASSIGN_BATCH: Final = 500
AUDIT_CONCURRENCY: Final = 16
# Fields a users-imports file accepts (Auth0's bulk import schema); the rest of a create body
# (connection, password, verify_email) has no place in it.
IMPORT_FIELDS: Final = frozenset(
    {
        "email", "email_verified", "user_id", "given_name", "family_name", "name", "nickname", "picture",
        "blocked", "username", "app_metadata", "user_metadata",
    }
)  # fmt: skip
DUPLICATE_CODES: Final = frozenset({"DUPLICATED_USER"})

Progress = Callable[[str, int, int | None], None]


@runtime_checkable
class ImportJobs(Protocol):
    """A target that takes users in bulk through Auth0 import jobs (the Auth0 adapter does, and any
    stand-in a test gives for it): what this path needs of a target beyond the ``Target`` port."""

    @property
    def name(self) -> str: ...

    @property
    def rules(self) -> Auth0Rules: ...

    async def connection_id(self, name: str) -> str: ...

    async def start_import(self, connection_id: str, users_json: bytes, external_id: str = "") -> str: ...

    async def job(self, job_id: str) -> dict[str, Any]: ...

    async def job_errors(self, job_id: str) -> list[dict[str, Any]]: ...

    async def role_ids(self, names: Iterable[str]) -> dict[str, str]: ...

    async def assign_role_users(self, role_id: str, user_ids: list[str]) -> None: ...


@dataclass
class BulkResult:
    """What one import-job backfill did."""

    entra_users: int = 0
    in_scope: int = 0
    already_linked: int = 0
    without_email: int = 0
    files: int = 0
    inserted: int = 0
    existing: int = 0  # refused as duplicates: handed to the worker to match and link
    failed: int = 0  # refused for another reason: handed to the worker too
    failures: list[str] = field(default_factory=list)  # "entra id: code" (no payload, nothing secret)
    role_assignments: int = 0
    role_calls: int = 0
    links: int = 0
    enqueued: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Joiner:
    entra_id: str
    record: dict[str, Any]
    roles: frozenset[str]


@dataclass
class _JobOutcome:
    inserted: list[str] = field(default_factory=list)  # Entra ids
    existing: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (Entra id, code)


def import_record(identity: Identity, rules: Auth0Rules) -> dict[str, Any] | None:
    """The account the worker would create for ``identity``, as a users-imports row (None where the
    worker would not create one: no email, which Auth0 needs)."""
    body = rules.create_payload(identity, rules.desired(identity))
    if isinstance(body, str):
        return None
    body["user_id"] = identity.id  # the deterministic key, whatever the mapping's create default
    return {k: v for k, v in body.items() if k in IMPORT_FIELDS}


def pack_files(records: Iterable[dict[str, Any]], max_bytes: int = MAX_FILE_BYTES) -> list[tuple[bytes, list[str]]]:
    """JSON array files of at most ``max_bytes`` each, with the user ids each one holds."""
    files: list[tuple[bytes, list[str]]] = []
    parts: list[bytes] = []
    ids: list[str] = []
    size = 2  # "[" and "]"
    for record in records:
        row = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(row) + 2 > max_bytes:
            raise ValueError(f"one import row is larger than {max_bytes} bytes")
        if parts and size + len(row) + 1 > max_bytes:
            files.append((b"[" + b",".join(parts) + b"]", ids))
            parts, ids, size = [], [], 2
        size += len(row) + (1 if parts else 0)
        parts.append(row)
        ids.append(str(record["user_id"]))
    if parts:
        files.append((b"[" + b",".join(parts) + b"]", ids))
    return files


class ImportBackfill:
    def __init__(
        self,
        *,
        source: CursorSource,
        job: TargetJob,
        state: StateStore,
        leases: LeaseStore,
        queue: WorkQueue,
        audit: AuditStore,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_active_jobs: int = MAX_ACTIVE_JOBS,
        job_timeout_s: float = 3600.0,
        poll_s: float = 0.25,
        max_poll_s: float = 2.0,
    ):
        if not isinstance(job.target, ImportJobs):
            raise TypeError("import jobs are an Auth0 bulk path")
        self.source = source
        self.job = job
        self.target: ImportJobs = job.target
        self.rules: Auth0Rules = self.target.rules
        self.links = job.links
        self.state = state
        self.leases = leases
        self.queue = queue
        self.audit_store = audit
        self.max_file_bytes = max_file_bytes
        self.max_active_jobs = min(max_active_jobs, MAX_ACTIVE_JOBS)
        self.job_timeout_s = job_timeout_s
        self.poll_s = poll_s
        self.max_poll_s = max_poll_s

    async def run(self, progress: Progress | None = None, correlation_id: str | None = None) -> BulkResult:
        report = progress or (lambda phase, done, total: None)
        correlation = correlation_id or uuid.uuid4().hex
        result = BulkResult()
        async with self.leases.held(USERS_DELTA_LEASE, wait_s=10.0):
            clock = time.perf_counter()

            def lap(phase: str) -> None:
                nonlocal clock
                result.timings[phase] = round(time.perf_counter() - clock, 3)
                clock = time.perf_counter()

            delta_link = await self.source.latest_delta_link("users")
            joiners = await self._joiners(result, report)
            lap("read")
            outcome = await self._import(joiners, result, report)
            lap("import")
            by_id = {j.entra_id: j for j in joiners}
            inserted = [by_id[i] for i in outcome.inserted]
            await self._assign_roles(inserted, result)
            lap("roles")
            target, source = self.target.name, self.source.name
            await self.links.put_many(
                [Link(j.entra_id, f"auth0|{j.entra_id}", target=target, source=source) for j in inserted]
            )
            result.links = len(inserted)
            await self._audit_created(inserted, correlation)
            lap("links_audit")
            handed = outcome.existing + [entra_id for entra_id, _code in outcome.failed]
            items = [WorkItem("user", i, "backfill", "import-jobs", correlation) for i in sorted(handed)]
            if items:
                await self.queue.send(items)
            result.enqueued = len(items)
            await self.state.put("delta", "users", {"link": delta_link})
            lap("handoff")
        await self.audit_store.write(
            AuditRow(
                correlation, "backfill", "import-jobs", "backfill", self.target.name, "", "backfill_import", "ok",
                detail=(
                    f"{result.inserted} created through {result.files} import jobs, {result.existing} existing and "
                    f"{result.failed} refused handed to the worker"
                ),
            )
        )  # fmt: skip
        return result

    # -- reading -----------------------------------------------------------------------------------

    async def _joiners(self, result: BulkResult, report: Progress) -> list[_Joiner]:
        linked = {link.source_id async for link in self.links.all()}
        joiners: list[_Joiner] = []
        async for page in self.source.identities():
            for found in page:
                result.entra_users += 1
                identity = for_target(found, self.job.section.scope)  # classified as the worker does
                if identity.state is not SourceState.ACTIVE:
                    continue
                result.in_scope += 1
                if identity.id in linked:
                    result.already_linked += 1
                    continue
                record = import_record(identity, self.rules)
                if record is None:
                    result.without_email += 1
                    continue
                granted = self.job.section.entitlements_for(identity.groups, identity.attributes)
                joiners.append(_Joiner(identity.id, record, granted))
            report("entra users", result.entra_users, None)
        return joiners

    # -- import jobs -------------------------------------------------------------------------------

    async def _import(self, joiners: list[_Joiner], result: BulkResult, report: Progress) -> _JobOutcome:
        outcome = _JobOutcome()
        if not joiners:
            return outcome
        files = pack_files((j.record for j in joiners), self.max_file_bytes)
        result.files = len(files)
        connection_id = await self.target.connection_id(self.rules.options.connection)
        gate = asyncio.Semaphore(self.max_active_jobs)
        done = 0

        async def one(n: int, data: bytes, ids: list[str]) -> None:
            nonlocal done
            async with gate:
                job_id = await self.target.start_import(connection_id, data, external_id=f"entra-sync-{n}")
                status = await self._wait(job_id)
            if status.get("status") != "completed":
                log.warning(
                    "import job %s ended %s: its %d users go to the worker", job_id, status.get("status"), len(ids)
                )
                outcome.failed.extend((i, "JOB_FAILED") for i in ids)
            else:
                failed = _summary(status, "failed")
                refused = await self._refused(job_id) if failed is None or failed > 0 else {}
                for entra_id in ids:
                    code = refused.get(entra_id)
                    if code is None:
                        outcome.inserted.append(entra_id)
                    elif code in DUPLICATE_CODES:
                        outcome.existing.append(entra_id)
                    else:
                        outcome.failed.append((entra_id, code))
            done += len(ids)
            report("import jobs", done, len(joiners))

        await asyncio.gather(*(one(n, data, ids) for n, (data, ids) in enumerate(files)))
        result.inserted = len(outcome.inserted)
        result.existing = len(outcome.existing)
        result.failed = len(outcome.failed)
        result.failures = [f"{entra_id}: {code}" for entra_id, code in outcome.failed]
        return outcome

    async def _wait(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.job_timeout_s
        delay = self.poll_s
        while True:
            status = await self.target.job(job_id)
            if status.get("status") in {"completed", "failed"}:
                return status
            if time.monotonic() > deadline:
                return {"status": "timed out"}
            await asyncio.sleep(delay)
            delay = min(self.max_poll_s, delay * 2)

    async def _refused(self, job_id: str) -> dict[str, str]:
        """Entra id -> error code for every row the job refused."""
        refused: dict[str, str] = {}
        for entry in await self.target.job_errors(job_id):
            user = entry.get("user") or {}
            errors = entry.get("errors") or [{}]
            user_id = str(user.get("user_id", ""))
            if user_id:
                refused[user_id] = str(errors[0].get("code") or "UNKNOWN")
        return refused

    # -- roles, audit ------------------------------------------------------------------------------

    async def _assign_roles(self, inserted: list[_Joiner], result: BulkResult) -> None:
        holders: dict[str, list[str]] = {}
        for joiner in inserted:
            for role in joiner.roles:
                holders.setdefault(role, []).append(f"auth0|{joiner.entra_id}")
        if not holders:
            return
        ids = await self.target.role_ids(sorted(holders))
        for role, users in sorted(holders.items()):
            for start in range(0, len(users), ROLE_ASSIGN_BATCH):
                await self.target.assign_role_users(ids[role], users[start : start + ROLE_ASSIGN_BATCH])
                result.role_calls += 1
            result.role_assignments += len(users)

    async def _audit_created(self, inserted: list[_Joiner], correlation: str) -> None:
        gate = asyncio.Semaphore(AUDIT_CONCURRENCY)

        async def one(joiner: _Joiner) -> None:
            diff = {**joiner.record, "roles": sorted(joiner.roles)}
            row = AuditRow(
                correlation, "backfill", "import-jobs", joiner.entra_id, self.target.name,
                f"auth0|{joiner.entra_id}", "create", "ok", diff=diff, detail="created by an import job",
            )  # fmt: skip
            async with gate:
                await self.audit_store.write(row)

        await asyncio.gather(*(one(j) for j in inserted))


def _summary(status: dict[str, Any], key: str) -> int | None:
    """A count from a finished job's summary, or None when the job reported none."""
    summary = status.get("summary")
    if not isinstance(summary, dict) or key not in summary:
        return None
    return int(summary[key] or 0)
