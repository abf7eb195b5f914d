"""A target's backfill, in one run: every in-scope identity matched against the accounts the target
already has, adopted or created, and counted (``entra-sync backfill --target <name>``).

The target is read once, whole (its ``accounts()``, as reconciliation reads it), and every
identity goes through the worker's own path (the same matching ladder against that index, the
same planner, lease, intent, fenced writes and audit rows), a few at a time: an account found by
a trusted identifier (the owner stamp, then the section's other matchers, such as ``userName``)
is adopted and stamped, the rest are created, and nobody gets a second account. A create that
meets an account made since the index was read (409) is read again from the target and
converged, as the worker does.

Identities out of scope are left to the worker and to reconciliation (a backfill provisions; it
does not deprovision what it never made). Work that cannot go on now (a rate limit, a busy lease)
is handed to the queue for the worker, like any share; nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from shared.core.classify import for_target
from shared.core.match import AccountIndex
from shared.core.model import Identity, SourceState
from shared.core.ports import Discovers, Gathers, Source
from shared.core.work import WorkItem, item_source
from shared.services.worker import Outcome, TargetJob, Worker

CONCURRENCY: Final = 8
GATHER_S: Final = 3.0  # how long a target may hold a change for others to join its write (SCIM groups)
Progress = Callable[[str, int, int | None], None]


@dataclass
class BackfillResult:
    target: str
    identities: int = 0  # read from the source
    in_scope: int = 0
    accounts: int = 0  # the target held before the run
    created: int = 0
    adopted: int = 0  # an existing account matched by a matcher (not the link) and stamped
    updated: int = 0  # linked already, brought up to date
    in_sync: int = 0
    skipped: int = 0  # the target would not create this one (a joiner without the values it needs)
    refused: int = 0  # ambiguous or another identity's account: reported, never guessed at
    waiting: int = 0  # handed to the queue for later (a rate limit, a busy lease, a retry)
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, outcome: Outcome) -> None:
        actions = set(outcome.actions)
        if outcome.status in {"ambiguous", "conflict"}:
            self.refused += 1
        elif outcome.status in {"deferred", "quarantined", "retrying", "held"}:
            self.waiting += 1
        elif outcome.status in {"failed", "poisoned"}:
            self.failed += 1
            self.failures.append(f"{outcome.item.id}: {'; '.join(outcome.warnings)[:300]}")
        elif outcome.status == "skipped":
            self.skipped += 1
        elif any(a.startswith("create") for a in actions):
            self.created += 1
        elif outcome.status == "noop":
            self.in_sync += 1
        elif self._adopted(outcome):
            self.adopted += 1
        else:
            self.updated += 1

    @staticmethod
    def _adopted(outcome: Outcome) -> bool:
        return "link" in outcome.actions


class Backfill:
    def __init__(self, *, source: Source, worker: Worker, job: TargetJob, concurrency: int = CONCURRENCY):
        self.source = source
        self.worker = worker
        self.job = job
        self.concurrency = max(1, concurrency)

    async def run(self, progress: Progress | None = None, correlation_id: str | None = None) -> BackfillResult:
        report = progress or (lambda phase, done, total: None)
        started = time.perf_counter()
        result = BackfillResult(self.job.name)
        target = self.job.target
        if isinstance(target, Discovers):
            await target.discover(force=True)  # what the server supports, read once for the run
        index = AccountIndex(target.rules)
        async for account in target.accounts():
            index.add(account)
            if len(index.accounts) % 1000 == 0:
                report(f"{self.job.name} accounts", len(index.accounts), None)
        result.accounts = len(index.accounts)
        report(f"{self.job.name} accounts", result.accounts, result.accounts)
        cid = correlation_id or uuid.uuid4().hex
        todo: asyncio.Queue[Identity | None] = asyncio.Queue(maxsize=self.concurrency * 4)

        finished = 0

        async def converge() -> None:
            nonlocal finished
            while (identity := await todo.get()) is not None:
                item = WorkItem(
                    "user", identity.id, "backfill", "backfill", cid, target=self.job.name,
                    identity_source=item_source(self.job.section.source),
                )  # fmt: skip
                result.count(await self.worker.converge(item, identity, self.job, index))
                finished += 1
                if finished % 100 == 0:
                    report(f"{self.job.name} backfill", finished, None)

        workers = [asyncio.create_task(converge()) for _ in range(self.concurrency)]
        # a target that can write many changes as one
        batched = target.gathering(GATHER_S) if isinstance(target, Gathers) else contextlib.nullcontext()
        try:
            batched.__enter__()
            async for page in self.source.identities():
                for identity in page:
                    result.identities += 1
                    if for_target(identity, self.job.section.scope).state is not SourceState.ACTIVE:
                        continue
                    result.in_scope += 1
                    await todo.put(identity)
                report("entra users", result.identities, None)
            for _ in workers:
                await todo.put(None)
            await asyncio.gather(*workers)
        finally:
            batched.__exit__(None, None, None)
            for task in workers:
                task.cancel()
        result.seconds = time.perf_counter() - started
        report(f"{self.job.name} backfill", result.in_scope, result.in_scope)
        return result


def summary(result: BackfillResult) -> list[str]:
    """The operator's reading of a backfill, a line each."""
    lines = [
        f"backfill of {result.target}: {result.identities} Entra users, {result.in_scope} in scope; "
        f"{result.accounts} accounts were there before",
        f"  created {result.created}, adopted {result.adopted}, updated {result.updated}, in sync {result.in_sync}",
        f"  skipped {result.skipped}, refused {result.refused} (ambiguous or another's account), "
        f"waiting on the queue {result.waiting}, failed {result.failed}",
        f"  {result.seconds:.1f} s ({result.in_scope / result.seconds:.0f} identities/s)" if result.seconds else "",
    ]
    lines += [f"    failed {f}" for f in result.failures[:20]]
    return [line for line in lines if line]
