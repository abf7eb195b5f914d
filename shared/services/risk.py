"""Risky sign-in response: Entra ID Protection says a user is at risk; the Auth0 account stops
working, and the security team hears about it once, with what was done and what could not be.

Two halves, joined by the work queue:

* **Watching** (:meth:`RiskService.poll`, the ``risk_monitor`` timer; the ``risk_alert`` push
  endpoint enqueues the same work items). Risk detections and risky users have no change
  notifications, so they are polled: ``riskDetections`` whose ``lastUpdatedDateTime`` is at or after
  the stored watermark minus :data:`OVERLAP` (late-arriving detections fall inside the overlap), and,
  when the policy restores on some state, ``riskyUsers`` the same way. Each detection id (and each
  restore event) is remembered in the state table once it is enqueued, so overlapping windows and
  replays enqueue it once; the watermark moves only after a complete read. Identity Protection
  allows one request per second per tenant and sends no ``Retry-After``: requests are paced at least
  :data:`PACE_S` apart (pages included) and a 429 ends the run without retrying; the next run picks
  up from the unchanged watermark.
* **Acting** (:meth:`RiskService.handle`, in ``sync_worker`` under the identity's lease). The
  Auth0 account is found through the link table, then the matching precedence (the sync's own
  ``resolve``); no match or an ambiguous one is never guessed at. The mapping's ``risk`` policy
  picks the actions. What the response did is recorded before it is done (``risk-response``), so a
  restore lifts only that: the block only if it was the response's, the MFA flag, the risk lock. The
  incident's outcome is recorded once (``risk-incident``), so a redelivered item does not act
  again, and the message is sent through :class:`~shared.services.notify.Notifier` exactly once.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from shared.core.model import Account, DeprovisionState, Link, SourceState, SourceUser
from shared.core.ports import Fence
from shared.core.work import RiskSignal, WorkItem
from shared.errors import LeaseBusy, NotFound, PermanentError, Refused
from shared.mapping.model import RiskPolicy
from shared.services.notify import Notifier
from shared.services.worker import SyncService
from shared.sources.graph.risk_feed import (
    IdentityProtectionThrottled,
    Pacer,
    RiskFeed,
    odata_when,
    parse_when,
    signal_from_detection,
)
from shared.stores.audit import AuditRow, AuditStore
from shared.stores.keys import utcnow
from shared.stores.leases import LeaseStore
from shared.stores.links import LinkStore
from shared.stores.queue import WorkQueue
from shared.stores.state import StateStore
from shared.targets.auth0.target import Auth0Target
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


RESPONSES: Final = "risk-response"  # per user: what the risk response changed, for a restore


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


@dataclass
class RiskOutcome:
    item: WorkItem
    status: str  # "acted", "restored", "replay", "no_match", "ambiguous", "not_actionable", "no_rule", "nothing"
    user_id: str = ""
    done: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notification: str = ""  # "sent", "already_sent", "not_configured", "" (none due)
    wanted: tuple[str, ...] = ()  # the policy's actions for this incident
    who: str = ""
    matched_by: str = ""


class RiskService:
    def __init__(
        self,
        *,
        sync: SyncService,
        feed: RiskFeed,
        notifier: Notifier,
        policy: RiskPolicy,
        overlap: timedelta = OVERLAP,
        lease_wait_s: float = 3.0,
    ):
        self.sync = sync
        self.feed = feed
        self.notifier = notifier
        self.policy = policy
        self.overlap = overlap
        self.lease_wait_s = lease_wait_s

    # -- shorthands ---------------------------------------------------------------------------------

    @property
    def state(self) -> StateStore:
        return self.sync.state

    @property
    def links(self) -> LinkStore:
        return self.sync.links

    @property
    def leases(self) -> LeaseStore:
        return self.sync.leases

    @property
    def audit_store(self) -> AuditStore:
        return self.sync.audit_store

    @property
    def target(self) -> Auth0Target:
        return self.sync.target

    @property
    def queue(self) -> WorkQueue:
        return self.sync.queue

    # ==============================================================================================
    # Watching
    # ==============================================================================================

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
        cutoff = (datetime.now(UTC) - REMEMBER_FOR).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        table = self.state.table
        pruned = 0
        for partition in (SEEN, INCIDENTS):
            query = table.query_entities(
                "PartitionKey eq @pk and updated_at lt @cutoff",
                parameters={"pk": partition, "cutoff": cutoff},
                select=["PartitionKey", "RowKey"],
            )
            async for entity in query:
                await table.delete_entity(entity["PartitionKey"], entity["RowKey"])
                pruned += 1
                if pruned >= PRUNE_BATCH:
                    return pruned
        return pruned

    async def enqueue_alert(self, user_id: str, signal: RiskSignal, correlation_id: str | None = None) -> WorkItem:
        """A pushed alert (Sentinel / Logic Apps): queued like a polled detection."""
        item = WorkItem("risk", user_id, "risk", f"push:{signal.ref}", correlation_id or uuid.uuid4().hex, risk=signal)
        await self.queue.send([item])
        return item

    # ==============================================================================================
    # Acting
    # ==============================================================================================

    async def handle(self, item: WorkItem) -> RiskOutcome:
        signal = item.risk
        if signal is None:
            raise PermanentError("a risk work item without its risk signal")
        incident = f"{item.id}:{signal.key}"
        async with self.leases.held(f"user:{item.id}", wait_s=self.lease_wait_s) as lease:

            def fence() -> None:
                self.leases.fence(lease)

            record = await self.state.get(INCIDENTS, incident)
            if record is None:
                outcome = await self._respond(item, signal, fence)
                record = {
                    "status": outcome.status,
                    "user_id": outcome.user_id,
                    "done": outcome.done,
                    "problems": outcome.problems,
                    "message": self._message(item, signal, outcome) if self._notify_due(outcome) else "",
                }
                await self.state.put(INCIDENTS, incident, record)
            else:
                outcome = RiskOutcome(
                    item, "replay", str(record.get("user_id", "")), list(record["done"]), list(record["problems"])
                )
                await self._audit(item, "risk_replay", "skipped", outcome.user_id, "incident already handled")
        message = str(record.get("message") or "")
        if message:
            outcome.notification = await self._notify(item, incident, message, outcome.user_id)
        return outcome

    @staticmethod
    def _notify_due(outcome: RiskOutcome) -> bool:
        if outcome.status == "acted":
            return "notify" in outcome.wanted
        return outcome.status in {"restored", "no_match", "ambiguous"}

    async def _notify(self, item: WorkItem, incident: str, message: str, target_id: str) -> str:
        delivery = await self.notifier.send_once(incident, message)
        if delivery.status == "sent":
            await self._audit(item, "notify", "ok", target_id, "security team notified")
        elif delivery.status == "not_configured":
            await self._audit(item, "notify", "failed", target_id, delivery.detail)
            correlated(log, item.correlation_id).warning("%s", delivery.detail)
        return delivery.status

    async def _respond(self, item: WorkItem, signal: RiskSignal, fence: Fence) -> RiskOutcome:
        if signal.incident == "restore":
            return await self._restore(item, signal, fence)
        if signal.state not in ACTIONABLE_STATES:
            await self._audit(item, "risk_response", "skipped", "", f"riskState is {signal.state}: nothing to do")
            return RiskOutcome(item, "not_actionable")
        wanted = self.policy.actions_for(signal.level, signal.event_type)
        if not wanted:
            await self._audit(
                item, "risk_response", "skipped", "", f"no risk rule for {signal.level} {signal.event_type}"
            )
            return RiskOutcome(item, "no_rule")
        source = await self.sync.source.read_user(item.id)
        link = await self.links.get(item.id)
        found = await self.sync.resolve(source, link)
        outcome = RiskOutcome(item, "acted", wanted=wanted, who=_who(source))
        if found.problem:
            outcome.status = "ambiguous"
            outcome.problems.append(
                f"not guessing: {found.matched_by} matched {', '.join(found.candidates)}"
                + (" (another Entra user's account)" if found.problem == "conflict" else "")
                + "; nothing was done in Auth0"
            )
            await self._audit(item, "risk_response", "refused", "", outcome.problems[-1])
            return outcome
        if found.account is None:
            outcome.status = "no_match"
            outcome.problems.append("no Auth0 account is linked to or matches this user; nothing was done in Auth0")
            await self._audit(item, "risk_response", "refused", "", outcome.problems[-1])
            return outcome
        account = found.account
        outcome.user_id, outcome.matched_by = account.user_id, found.matched_by
        if any(a != "notify" for a in wanted):
            await self._remember(item.id, account, link, wanted)  # before acting: a restore needs it
        for action in wanted:
            if action == "block":
                await self._block(item, account, outcome, fence)
            elif action in {"revoke_sessions", "revoke_refresh_tokens"}:
                await self._revoke(item, action, account.user_id, outcome, fence)
            elif action == "require_mfa":
                await self._require_mfa(item, account, outcome, fence)
        summary = f"{signal.level} {signal.event_type}: " + "; ".join(outcome.done + outcome.problems)
        await self._audit(item, "risk_response", "warning" if outcome.problems else "ok", account.user_id, summary)
        return outcome

    async def _remember(self, entra_id: str, account: Account, link: Link | None, wanted: tuple[str, ...]) -> None:
        """Record what the response is about to change (merged with earlier incidents), and lock
        the account against the sync's unblock before the block is placed."""
        previous = await self.state.get(RESPONSES, entra_id) or {}
        flag = self.policy.mfa_flag
        await self.state.put(
            RESPONSES,
            entra_id,
            {
                "user_id": account.user_id,
                "blocked_by_risk": bool(previous.get("blocked_by_risk")) or ("block" in wanted and not account.blocked),
                "mfa_by_risk": bool(previous.get("mfa_by_risk"))
                or ("require_mfa" in wanted and _app_metadata(account).get(flag) is not True),
                "since": previous.get("since") or utcnow(),
            },
        )
        if "block" in wanted:
            base = link if link is not None and link.user_id == account.user_id else Link(entra_id, account.user_id)
            if not base.risk_locked or base.target_deleted:
                await self.links.put(dataclasses.replace(base, risk_locked=True, target_deleted=False))

    async def _block(self, item: WorkItem, account: Account, outcome: RiskOutcome, fence: Fence) -> None:
        if account.blocked:
            outcome.done.append("the Auth0 account was already blocked (locked against unblocking by sync)")
            return
        try:
            await self.target.update(account.user_id, {"blocked": True}, fence)
        except PermanentError as exc:
            outcome.problems.append(f"could not block the Auth0 account ({exc})")
            await self._audit(item, "risk_block", "failed", account.user_id, outcome.problems[-1])
            return
        outcome.done.append("blocked the Auth0 account")
        await self._audit(item, "risk_block", "ok", account.user_id, "risk response")

    async def _revoke(self, item: WorkItem, action: str, user_id: str, outcome: RiskOutcome, fence: Fence) -> None:
        what = "sessions" if action == "revoke_sessions" else "refresh tokens"
        try:
            if action == "revoke_sessions":
                await self.target.revoke_sessions(user_id, fence)
            else:
                await self.target.revoke_refresh_tokens(user_id, fence)
        except (Refused, NotFound) as exc:
            status = exc.status if isinstance(exc, Refused) else 404
            outcome.problems.append(
                f"could not revoke {what}: Auth0 refused ({status}; revocation needs the Enterprise plan), "
                f"existing {what} stay valid until they expire"
            )
            await self._audit(item, action, "warning", user_id, outcome.problems[-1])
            return
        outcome.done.append(f"revoked all {what}")
        await self._audit(item, action, "ok", user_id, "risk response")

    async def _require_mfa(self, item: WorkItem, account: Account, outcome: RiskOutcome, fence: Fence) -> None:
        flag = self.policy.mfa_flag
        if _app_metadata(account).get(flag) is True:
            outcome.done.append(f"app_metadata.{flag} was already set")
            return
        try:
            await self.target.update(account.user_id, {"app_metadata": {flag: True}}, fence)
        except PermanentError as exc:
            outcome.problems.append(f"could not set app_metadata.{flag} ({exc})")
            await self._audit(item, "risk_require_mfa", "failed", account.user_id, outcome.problems[-1])
            return
        outcome.done.append(f"set app_metadata.{flag} = true (the login flow asks for MFA)")
        await self._audit(item, "risk_require_mfa", "ok", account.user_id, "risk response")

    async def _restore(self, item: WorkItem, signal: RiskSignal, fence: Fence) -> RiskOutcome:
        """Lift what the risk response did, and only that."""
        if signal.state not in self.policy.restore_on:
            await self._audit(item, "risk_restore", "skipped", "", f"the policy does not restore on {signal.state}")
            return RiskOutcome(item, "nothing")
        response = await self.state.get(RESPONSES, item.id)
        if response is None:
            await self._audit(item, "risk_restore", "skipped", "", "no risk response in place")
            return RiskOutcome(item, "nothing")
        source = await self.sync.source.read_user(item.id)
        link = await self.links.get(item.id)
        user_id = str(response["user_id"])
        outcome = RiskOutcome(item, "restored", user_id=user_id, who=_who(source), matched_by="risk response")
        data = await self.target.get(user_id)
        if data is None:
            outcome.problems.append("the Auth0 account no longer exists")
        else:
            account = Account(user_id, data)
            if account.blocked and response.get("blocked_by_risk"):
                leaver = source.state is not SourceState.ACTIVE or (
                    link is not None and link.deprovision is not DeprovisionState.NONE
                )
                if leaver:
                    outcome.problems.append(
                        f"left the account blocked: the user is {source.state.value} in Entra, so the block now "
                        "belongs to deprovisioning"
                    )
                else:
                    await self.target.update(user_id, {"blocked": False}, fence)
                    outcome.done.append("unblocked the Auth0 account (the block was the risk response's)")
                    await self._audit(item, "risk_unblock", "ok", user_id, f"riskState {signal.state}")
            elif account.blocked:
                outcome.done.append("left the existing block in place (the risk response did not place it)")
            flag = self.policy.mfa_flag
            if response.get("mfa_by_risk") and _app_metadata(account).get(flag) is True:
                await self.target.update(user_id, {"app_metadata": {flag: None}}, fence)
                outcome.done.append(f"cleared app_metadata.{flag}")
                await self._audit(item, "risk_clear_mfa", "ok", user_id, f"riskState {signal.state}")
        if link is not None and link.risk_locked:
            await self.links.put(dataclasses.replace(link, risk_locked=False))
            outcome.done.append("cleared the risk lock (sync manages the account again)")
        await self.state.delete(RESPONSES, item.id)
        summary = "; ".join(outcome.done + outcome.problems)
        await self._audit(item, "risk_restore", "warning" if outcome.problems else "ok", user_id, summary)
        return outcome

    def _message(self, item: WorkItem, signal: RiskSignal, outcome: RiskOutcome) -> str:
        """The security team's message: who, what risk, what was done, what could not be done.
        Never a secret: ids, names, the risk and the outcome only."""
        who = outcome.who or f"Entra user {item.id}"
        if signal.incident == "restore":
            lines = [
                f"[entra-sync] Risk response lifted for {who}",
                f"Why: riskState is {signal.state} in Entra ID Protection (updated {signal.ref})",
            ]
        else:
            lines = [f"[entra-sync] {signal.level.upper()} sign-in risk for {who}"]
            risk = f"Risk: {signal.event_type}, level {signal.level}, state {signal.state}"
            if signal.detected_at:
                risk += f", detected {signal.detected_at}"
            if signal.ip_address:
                risk += f" from {signal.ip_address}"
            lines.append(f"{risk} (detection {signal.ref})")
        if outcome.user_id:
            lines.append(f"Auth0 account: {outcome.user_id} (found by {outcome.matched_by})")
        lines.append("Done: " + ("; ".join(outcome.done) if outcome.done else "nothing in Auth0"))
        if outcome.problems:
            lines.append("Could not do: " + "; ".join(outcome.problems))
        lines.append(f"Entra object id {item.id} | correlation id {item.correlation_id}")
        return "\n".join(lines)

    # -- audit ------------------------------------------------------------------------------------

    async def _audit(self, item: WorkItem, action: str, outcome: str, target_id: str = "", detail: str = "") -> None:
        await self.audit_store.write(
            AuditRow.for_item(item, self.target.name, action, outcome, target_id, detail=detail)
        )

    async def _audit_job(
        self, cid: str, action: str, outcome: str, detail: str, identity: str = "risk_monitor"
    ) -> None:
        await self.audit_store.write(
            AuditRow(cid, "risk", "risk_monitor", identity, "", "", action, outcome, detail=detail)
        )


def _app_metadata(account: Account) -> dict[str, Any]:
    meta = account.data.get("app_metadata")
    return dict(meta) if isinstance(meta, dict) else {}


def _who(source: SourceUser) -> str:
    name = source.props.get("displayName")
    upn = source.props.get("userPrincipalName") or source.props.get("mail")
    if name and upn:
        return f"{name} ({upn})"
    return str(name or upn or f"Entra user {source.id}")


def risk_service(svc: Any) -> RiskService:
    """The risk service for a :class:`~shared.bootstrap.Services`, built once per process and kept
    there (and the notifier with it, so ``Services.aclose`` closes its HTTP client)."""
    pacer: Pacer = svc._get("risk_pacer", Pacer)
    return svc._get(  # type: ignore[no-any-return]
        "risk",
        lambda: RiskService(
            sync=svc.sync, feed=RiskFeed(svc.source, pacer), notifier=svc.notifier, policy=svc.mapping.risk
        ),
    )
