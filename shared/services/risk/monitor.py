"""Watching Entra ID Protection: new risk detections (and, when the policy restores, risky users'
state changes) become ``risk`` work items for the worker.

Risk detections and risky users have no change notifications, so they are polled:
``riskDetections`` whose ``lastUpdatedDateTime`` is at or after the stored watermark minus
:data:`OVERLAP` (late-arriving detections fall inside the overlap), and ``riskyUsers`` the same
way. Each detection id (and each restore event) is remembered in the state table once it is
queued, so overlapping windows and replays queue it once; the watermark moves only after a
complete read. Identity Protection allows one request per second per tenant and sends no
``Retry-After``: requests are paced (:mod:`shared.sources.graph.risk_feed`) and a 429 ends the run
without retrying; the next run picks up from the unchanged watermark. The ``risk_alert`` push
endpoint queues the same work items (:meth:`RiskMonitor.enqueue_alert`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from shared.core.ports import AuditStore, LeaseStore, StateStore, WorkQueue
from shared.core.work import RiskSignal, WorkItem
from shared.errors import LeaseBusy, PermanentError
from shared.mapping.model import RiskPolicy
from shared.sources.graph.risk_feed import (
    IdentityProtectionThrottled,
    RiskFeed,
    odata_when,
    parse_when,
    signal_from_detection,
)
from shared.stores.audit import AuditRow
from shared.stores.keys import utc_text, utcnow
from shared.telemetry import correlated

log = logging.getLogger("entra_sync.risk")

OVERLAP: Final = timedelta(hours=1)  # re-read this much before the watermark (late detections)
REMEMBER_FOR: Final = timedelta(days=30)  # how long processed detection ids are kept
PRUNE_BATCH: Final = 200  # most remembered ids deleted per run
MONITOR_LEASE: Final = "job:risk-monitor"
ACTIONABLE_STATES: Final = frozenset({"atRisk", "confirmedCompromised"})

# State table partitions (StateStore kinds).
WATERMARKS: Final = "risk"
SEEN: Final = "risk-detection"  # detection ids / restore events already enqueued
INCIDENTS: Final = "risk-incident"  # the outcome of each incident, once acted on


@dataclass
class PollResult:
    detections: int = 0  # read from Graph
    enqueued: int = 0
    duplicates: int = 0  # already enqueued by an earlier (overlapping) run
    not_actionable: int = 0  # dismissed, remediated, ... by the time we read it
    restores: int = 0
    throttled: bool = False
    busy: bool = False  # another run holds the monitor's lease
    pruned: int = 0


class RiskMonitor:
    def __init__(
        self,
        *,
        feed: RiskFeed,
        policy: RiskPolicy,
        state: StateStore,
        leases: LeaseStore,
        queue: WorkQueue,
        audit: AuditStore,
        overlap: timedelta = OVERLAP,
    ):
        self.feed = feed
        self.policy = policy
        self.state = state
        self.leases = leases
        self.queue = queue
        self.audit_store = audit
        self.overlap = overlap

    async def poll(self, correlation_id: str | None = None) -> PollResult:
        cid = correlation_id or uuid.uuid4().hex
        clog = correlated(log, cid)
        result = PollResult()
        try:
            async with self.leases.held(MONITOR_LEASE, wait_s=0.5):
                await self._poll_once(cid, result)
        except LeaseBusy:
            result.busy = True
            clog.info("another risk_monitor run is in progress; skipping this one")
        return result

    async def _poll_once(self, cid: str, result: PollResult) -> None:
        try:
            await self._poll_detections(cid, result)
            if self.policy.restore_on:
                await self._poll_risky_users(cid, result)
        except IdentityProtectionThrottled as exc:
            result.throttled = True
            correlated(log, cid).warning("%s; the watermark stays, the next run continues from it", exc)
            await self._audit_job(cid, "risk_poll", "warning", f"throttled: {exc}")
        result.pruned = await self._prune()

    async def _window(self, name: str) -> tuple[datetime, datetime]:
        """(where the stored watermark is, where this run reads from)."""
        now = datetime.now(UTC)
        stored = await self.state.get(WATERMARKS, name)
        mark = parse_when((stored or {}).get("watermark")) or now
        return mark, mark - self.overlap

    async def _poll_detections(self, cid: str, result: PollResult) -> None:
        started = datetime.now(UTC)
        mark, since = await self._window("detections")
        newest = mark
        async for page in self.feed.detections(since):
            items: list[tuple[str, WorkItem | None]] = []
            for d in page:
                result.detections += 1
                when = parse_when(d.get("lastUpdatedDateTime"))
                if when is not None and when > newest:
                    newest = when
                detection_id, user_id = str(d.get("id") or ""), str(d.get("userId") or "")
                if not detection_id or not user_id:
                    continue
                if await self.state.get(SEEN, detection_id) is not None:
                    result.duplicates += 1
                    continue
                if d.get("riskState") not in ACTIONABLE_STATES:
                    result.not_actionable += 1
                    items.append((detection_id, None))
                    continue
                try:
                    signal = signal_from_detection(d)
                    item = WorkItem("risk", user_id, "risk", f"detection:{detection_id}", cid, risk=signal)
                    WorkItem.from_json(item.to_json())  # the worker must be able to read it back
                except PermanentError as exc:
                    await self._audit_job(cid, "risk_detection", "refused", f"{detection_id}: {exc}", user_id)
                    items.append((detection_id, None))
                    continue
                items.append((detection_id, item))
            await self._enqueue_and_remember(items, result)
        # Only a complete read moves the watermark; never behind where it was, never behind the
        # start of this run (so the window stays one overlap wide when nothing happens).
        await self.state.put(WATERMARKS, "detections", {"watermark": odata_when(max(newest, started))})

    async def _poll_risky_users(self, cid: str, result: PollResult) -> None:
        started = datetime.now(UTC)
        mark, since = await self._window("risky-users")
        newest = mark
        async for page in self.feed.risky_users(since):
            items: list[tuple[str, WorkItem | None]] = []
            for u in page:
                when_text = str(u.get("riskLastUpdatedDateTime") or "")
                when = parse_when(when_text)
                if when is not None and when > newest:
                    newest = when
                state, user_id = u.get("riskState"), str(u.get("id") or "")
                if state not in self.policy.restore_on or not user_id or when is None:
                    continue
                key = f"restore:{user_id}:{state}:{when_text}"
                if await self.state.get(SEEN, key) is not None:
                    result.duplicates += 1
                    continue
                try:
                    signal = RiskSignal.from_dict(
                        {"incident": "restore", "ref": when_text, "state": state, "level": u.get("riskLevel")}
                    )
                    item = WorkItem("risk", user_id, "risk", f"risky_user:{state}", cid, risk=signal)
                    WorkItem.from_json(item.to_json())
                except PermanentError as exc:
                    await self._audit_job(cid, "risk_restore", "refused", f"{user_id}: {exc}", user_id)
                    continue
                result.restores += 1
                items.append((key, item))
            await self._enqueue_and_remember(items, result)
        await self.state.put(WATERMARKS, "risky-users", {"watermark": odata_when(max(newest, started))})

    async def _enqueue_and_remember(self, items: list[tuple[str, WorkItem | None]], result: PollResult) -> None:
        """Enqueue first, remember second: a crash in between re-enqueues on the next run, and the
        worker's incident record keeps that from acting twice."""
        work = [item for _, item in items if item is not None]
        if work:
            await self.queue.send(work)
            result.enqueued += sum(1 for item in work if item.risk is not None and item.risk.incident == "detection")
        for key, item in items:
            await self.state.put(SEEN, key, {"at": utcnow(), "user": item.id if item else ""})

    async def _prune(self) -> int:
        """Forget processed ids older than :data:`REMEMBER_FOR` (far beyond the overlap window)."""
        cutoff = utc_text(datetime.now(UTC) - REMEMBER_FOR)
        pruned = 0
        for kind in (SEEN, INCIDENTS):
            pruned += await self.state.delete_older(kind, cutoff, limit=PRUNE_BATCH - pruned)
            if pruned >= PRUNE_BATCH:
                break
        return pruned

    async def enqueue_alert(self, user_id: str, signal: RiskSignal, correlation_id: str | None = None) -> WorkItem:
        """A pushed alert (Sentinel / Logic Apps): queued like a polled detection."""
        item = WorkItem("risk", user_id, "risk", f"push:{signal.ref}", correlation_id or uuid.uuid4().hex, risk=signal)
        await self.queue.send([item])
        return item

    async def _audit_job(
        self, cid: str, action: str, outcome: str, detail: str, identity: str = "risk_monitor"
    ) -> None:
        await self.audit_store.write(
            AuditRow(cid, "risk", "risk_monitor", identity, "", "", action, outcome, detail=detail)
        )
