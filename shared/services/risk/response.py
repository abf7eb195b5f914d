"""Acting on a risk: the account stops working in every target, through the same actions, ports and
lease as the sync, and the security team hears about it once.

For a detection the mapping's rule picks the steps; each target's account is found by the sync's
own ladder (no match or an ambiguous one is never guessed at, only reported), and the steps go out
as neutral actions through the target's port, fenced by the identity's lease in that target. What
the response changed is recorded before it is done (``risk-response``), and a block locks the
link against the sync's unblocking, so a restore lifts only what the response did. The incident's
outcome is recorded once (``risk-incident``), so a redelivered item does not act again, and the
message goes to the alert routes that take risk at its level (``NOTIFY_WEBHOOK_URL`` where none
does), once per channel.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.alerting.alert import Alert
from shared.alerting.config import SEVERITIES
from shared.alerting.router import AlertRouter
from shared.core.classify import for_target
from shared.core.match import resolve
from shared.core.model import Account, Action, ActionKind, DeprovisionState, Identity, Link, SourceState
from shared.core.ports import AuditStore, LeaseStore, Source, StateStore
from shared.core.work import RiskSignal, WorkItem
from shared.errors import PermanentError
from shared.mapping.model import RiskPolicy
from shared.services.risk.monitor import ACTIONABLE_STATES, INCIDENTS
from shared.services.risk.policy import (
    Step,
    TargetResponse,
    flag_action,
    message,
    notify_due,
    past,
    responses_from,
    steps_for,
    who,
)
from shared.services.worker import TargetJob
from shared.stores.audit import AuditRow
from shared.stores.keys import utcnow
from shared.telemetry import correlated

log = logging.getLogger("entra_sync.risk")

RESPONSES: Final = "risk-response"  # per user: what the risk response changed, per target, for a restore


@dataclass
class RiskOutcome:
    item: WorkItem
    status: str  # "acted", "restored", "replay", "no_match", "ambiguous", "not_actionable", "no_rule", "nothing"
    responses: list[TargetResponse] = field(default_factory=list)
    notification: str = ""  # "sent", "already_sent", "not_configured", "" (none due)
    wanted: tuple[str, ...] = ()  # the policy's steps for this incident
    who: str = ""

    @property
    def done(self) -> list[str]:
        return [d for r in self.responses for d in r.done]

    @property
    def problems(self) -> list[str]:
        return [p for r in self.responses for p in r.problems]

    @property
    def target_id(self) -> str:
        return next((r.account_id for r in self.responses if r.account_id), "")


class RiskResponse:
    def __init__(
        self,
        *,
        source: Source,
        jobs: Mapping[str, TargetJob],
        leases: LeaseStore,
        state: StateStore,
        audit: AuditStore,
        alerts: AlertRouter | None,
        policy: RiskPolicy,
        lease_wait_s: float = 3.0,
    ):
        self.source = source
        self.jobs = dict(jobs)
        self.leases = leases
        self.state = state
        self.audit_store = audit
        self.alerts = alerts
        self.policy = policy
        self.lease_wait_s = lease_wait_s

    async def handle(self, item: WorkItem) -> RiskOutcome:
        signal = item.risk
        if signal is None:
            raise PermanentError("a risk work item without its risk signal")
        incident = f"{item.id}:{signal.key}"
        keys = {name: f"user:{item.id}:{name}" for name in self.jobs}
        async with self.leases.many(keys, wait_s=self.lease_wait_s) as (leased, refused):
            if refused:  # a risk acts on every target at once: wait for all of them
                raise next(iter(refused.values()))
            record = await self.state.get(INCIDENTS, incident)
            if record is None:
                outcome = await self._respond(item, signal, leased)
                record = {
                    "status": outcome.status,
                    "target_id": outcome.target_id,
                    "done": outcome.done,
                    "problems": outcome.problems,
                    "message": message(item, signal, outcome.who, outcome.responses)
                    if notify_due(outcome.status, outcome.wanted)
                    else "",
                }
                await self.state.put(INCIDENTS, incident, record)
            else:
                target_id = str(record.get("target_id") or record.get("user_id") or "")
                replay = TargetResponse("", target_id, done=list(record["done"]), problems=list(record["problems"]))
                outcome = RiskOutcome(item, "replay", [replay])
                await self._audit(item, "", "risk_replay", "skipped", target_id, "incident already handled")
        text = str(record.get("message") or "")
        if text:
            outcome.notification = await self._notify(item, incident, text, outcome.target_id)
        return outcome

    async def _notify(self, item: WorkItem, incident: str, text: str, target_id: str) -> str:
        if self.alerts is None:
            return "not_configured"
        level = item.risk.level if item.risk is not None and item.risk.level in SEVERITIES else "high"
        lines = text.splitlines()
        alert = Alert(
            key=incident, kind="risk", severity=level, title=lines[0].removeprefix("[entra-sync] "),
            text="\n".join(lines[1:]) or text, facts=(("Entra user", item.id),), source=item.source,
            correlation_id=item.correlation_id, identity=item.id, legacy_key=incident, plain=text,
        )  # fmt: skip
        delivery = await self.alerts.deliver(alert)
        if delivery.status in {"sent", "digested"}:
            told = "security team notified" + (" (in the next digest)" if delivery.status == "digested" else "")
            await self._audit(item, "", "notify", "ok", target_id, told)
        elif delivery.status == "not_configured":
            await self._audit(item, "", "notify", "failed", target_id, delivery.detail)
            correlated(log, item.correlation_id).warning("%s", delivery.detail)
        return delivery.status

    # -- a detection -------------------------------------------------------------------------------

    async def _respond(self, item: WorkItem, signal: RiskSignal, leases: Mapping[str, Any]) -> RiskOutcome:
        if signal.incident == "restore":
            return await self._restore(item, signal, leases)
        if signal.state not in ACTIONABLE_STATES:
            await self._audit(item, "", "risk_response", "skipped", "", f"riskState is {signal.state}: nothing to do")
            return RiskOutcome(item, "not_actionable")
        wanted = self.policy.actions_for(signal.level, signal.event_type)
        if not wanted:
            detail = f"no risk rule for {signal.level} {signal.event_type}"
            await self._audit(item, "", "risk_response", "skipped", "", detail)
            return RiskOutcome(item, "no_rule")
        identity = await self.source.read(item.id)
        outcome = RiskOutcome(item, "acted", wanted=wanted, who=who(identity))
        record: dict[str, Any] = {}
        for name, job in self.jobs.items():
            response, change = await self._respond_in(item, signal, identity, job, leases[name], wanted)
            outcome.responses.append(response)
            if change:
                record[name] = change
        if not any(r.account_id for r in outcome.responses):
            problems = {p for r in outcome.responses for p in r.problems}
            outcome.status = "ambiguous" if any("not guessing" in p for p in problems) else "no_match"
        return outcome

    async def _respond_in(
        self, item: WorkItem, signal: RiskSignal, source: Identity, job: TargetJob, lease: Any, wanted: tuple[str, ...]
    ) -> tuple[TargetResponse, dict[str, Any]]:
        rules, target = job.target.rules, job.target
        response = TargetResponse(job.name)
        identity = for_target(source, job.section.scope)
        link = await job.links.get(item.id)
        found = await resolve(
            identity, link, target, rules, job.section.matching, rules.desired(identity), entitlements=False
        )
        if found.problem:
            response.problems.append(
                f"not guessing: {found.matched_by} matched {', '.join(found.candidates)}"
                + (" (another Entra user's account)" if found.problem == "conflict" else "")
                + f"; nothing was done in {response.title}"
            )
            await self._audit(item, job.name, "risk_response", "refused", "", response.problems[-1])
            return response, {}
        account = found.account
        if account is None:
            response.problems.append(
                f"no {response.title} account is linked to or matches this user; nothing was done in {response.title}"
            )
            await self._audit(item, job.name, "risk_response", "refused", "", response.problems[-1])
            return response, {}
        response.account_id, response.matched_by = account.target_id, found.matched_by
        steps = steps_for(wanted, account, rules, target.capabilities, self.policy.mfa_flag, response.title)
        change: dict[str, Any] = {}
        if any(s.action is not None for s in steps):  # before acting: a restore needs it
            change = await self._remember(item.id, job, account, link, steps)

        for step in steps:
            await self._step(item, job, account.target_id, step, lease, response)
        summary = f"{signal.level} {signal.event_type}: " + "; ".join(response.done + response.problems)
        outcome = "warning" if response.problems else "ok"
        await self._audit(item, job.name, "risk_response", outcome, account.target_id, summary)
        return response, change

    async def _step(
        self, item: WorkItem, job: TargetJob, target_id: str, step: Step, lease: Any, response: TargetResponse
    ) -> None:
        """One step in one target: sent through its port (fenced by the lease), or its note kept."""
        name, action = step.name, step.action
        if action is None:
            if step.problem:
                response.problems.append(step.problem)
                await self._audit(item, job.name, f"risk_{name}", "warning", target_id, step.problem)
            elif step.done:
                response.done.append(step.done)
            return

        def fence() -> None:
            self.leases.fence(lease)

        fence()
        try:
            applied = await job.target.apply(target_id, action, fence)
        except PermanentError as exc:
            response.problems.append(f"could not {name.replace('_', ' ')} ({exc})")
            await self._audit(item, job.name, f"risk_{name}", "failed", target_id, response.problems[-1])
            return
        self.leases.fence_after_write(lease)  # landed late: the item runs again and converges
        if applied.warning:
            response.problems.append(f"could not {name.replace('_', ' ')}: {applied.warning}")
            await self._audit(item, job.name, f"risk_{name}", "warning", target_id, response.problems[-1])
            return
        response.done.append(step.done)
        await self._audit(item, job.name, f"risk_{name}", "ok", target_id, "risk response")

    async def _remember(
        self, source_id: str, job: TargetJob, account: Account, link: Link | None, steps: list[Any]
    ) -> dict[str, Any]:
        """Record what the response is about to change in this target (merged with earlier
        incidents), and lock the link against the sync's unblocking before the block is placed."""
        stored = await self.state.get(RESPONSES, source_id) or {}
        targets = responses_from(stored) if stored else {}
        previous = targets.get(job.name, {})
        sending = {s.name for s in steps if s.action is not None}
        change = {
            "target_id": account.target_id,
            "disabled_by_risk": bool(previous.get("disabled_by_risk")) or "block" in sending,
            "mfa_by_risk": bool(previous.get("mfa_by_risk")) or "require_mfa" in sending,
        }
        targets[job.name] = change
        await self.state.put(RESPONSES, source_id, {"targets": targets, "since": stored.get("since") or utcnow()})
        if any(s.name == "block" for s in steps):
            base = (
                link
                if link is not None and link.target_id == account.target_id
                else Link(source_id, account.target_id, target=job.name, source=self.source.name)
            )
            if not base.risk_locked or base.target_deleted:
                # The account changed outside the worker's plans: its remembered state is forgotten.
                await job.links.put(dataclasses.replace(base, risk_locked=True, target_deleted=False, applied=None))
        return change

    # -- a restore ---------------------------------------------------------------------------------

    async def _restore(self, item: WorkItem, signal: RiskSignal, leases: Mapping[str, Any]) -> RiskOutcome:
        """Lift what the risk response did, and only that."""
        if signal.state not in self.policy.restore_on:
            detail = f"the policy does not restore on {signal.state}"
            await self._audit(item, "", "risk_restore", "skipped", "", detail)
            return RiskOutcome(item, "nothing")
        stored = await self.state.get(RESPONSES, item.id)
        if stored is None:
            await self._audit(item, "", "risk_restore", "skipped", "", "no risk response in place")
            return RiskOutcome(item, "nothing")
        identity = await self.source.read(item.id)
        outcome = RiskOutcome(item, "restored", who=who(identity))
        for name, change in responses_from(stored).items():
            job = self.jobs.get(name)
            if job is None:
                continue
            outcome.responses.append(await self._restore_in(item, signal, identity, job, leases[name], change))
        await self.state.delete(RESPONSES, item.id)
        return outcome

    async def _restore_in(
        self, item: WorkItem, signal: RiskSignal, identity: Identity, job: TargetJob, lease: Any, change: dict[str, Any]
    ) -> TargetResponse:
        rules = job.target.rules
        target_id = str(change.get("target_id") or "")
        response = TargetResponse(job.name, target_id, "risk response")
        link = await job.links.get(item.id)

        def fence() -> None:
            self.leases.fence(lease)

        account = await job.target.read(target_id, entitlements=False) if target_id else None
        if account is None:
            response.problems.append(f"the {response.title} account no longer exists")
        else:
            fence()
            disabled = past(rules.label(ActionKind.DISABLE))
            if not account.active and change.get("disabled_by_risk"):
                leaver = identity.state is not SourceState.ACTIVE or (
                    link is not None and link.deprovision is not DeprovisionState.NONE
                )
                if leaver:
                    response.problems.append(
                        f"left the account {disabled}: the user is {identity.state.value} in Entra, so the "
                        f"{rules.label(ActionKind.DISABLE)} now belongs to deprovisioning"
                    )
                else:
                    await job.target.apply(target_id, Action(ActionKind.ENABLE, reason="risk restored"), fence)
                    response.done.append(
                        f"{past(rules.label(ActionKind.ENABLE))} the {response.title} account (the "
                        f"{rules.label(ActionKind.DISABLE)} was the risk response's)"
                    )
                    await self._audit(item, job.name, "risk_unblock", "ok", target_id, f"riskState {signal.state}")
            elif not account.active:
                response.done.append(
                    f"left the existing {rules.label(ActionKind.DISABLE)} in place (the risk response did not place it)"
                )
            path = rules.flag_path(self.policy.mfa_flag)
            if change.get("mfa_by_risk") and path is not None and rules.current(account, path) is True:
                await job.target.apply(target_id, flag_action(rules, path, True, None), fence)
                response.done.append(f"cleared {path}")
                await self._audit(item, job.name, "risk_clear_mfa", "ok", target_id, f"riskState {signal.state}")
        if link is not None and link.risk_locked:
            await job.links.put(dataclasses.replace(link, risk_locked=False, applied=None))
            response.done.append("cleared the risk lock (sync manages the account again)")
        summary = "; ".join(response.done + response.problems)
        await self._audit(item, job.name, "risk_restore", "warning" if response.problems else "ok", target_id, summary)
        return response

    # -- audit ------------------------------------------------------------------------------------

    async def _audit(
        self, item: WorkItem, target: str, action: str, outcome: str, target_id: str = "", detail: str = ""
    ) -> None:
        await self.audit_store.write(AuditRow.for_item(item, target, action, outcome, target_id, detail=detail))
