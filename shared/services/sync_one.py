"""One person, now: what each target would do with them, and (unless it is a dry run) doing it.

:func:`plan_one` reads the identity from its source and, per target it feeds, the link and the
target (never the link's memory: an operator asking wants what is there), and plans exactly as the
worker does (one matching ladder, one planner). :func:`sync_one` then hands the identity to the
worker as a ``manual`` work item, so it goes through the same leases, fences, guard and audit as
any change; the worker reads again under its leases, so what it applies is decided on what is
there at that moment, and the audit rows it wrote say what that was.

Trusted for: the plan shown never carries a password or token (the diff an audit row would carry);
nothing is written by :func:`plan_one`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from shared.core.match import planned
from shared.core.work import DEFAULT_SOURCE, WorkItem, item_source
from shared.services.worker import Outcome, safe_diff
from shared.stores.audit import AuditQuery

if TYPE_CHECKING:
    from shared.bootstrap import App


@dataclass
class Step:
    action: str  # the target's word for it ("block", "update", ...)
    reason: str
    changes: dict[str, list[Any]] | None = None  # path -> [before, after]
    values: dict[str, Any] | None = None  # what a create sends (never a password), or the entitlements


@dataclass
class TargetPlan:
    target: str
    state: str  # the identity as this target sees it: active, disabled, out_of_scope, ...
    matched_by: str  # "link", a matcher ("email", ...), "none" (no account), or the problem's matcher
    account: str  # the account's id in the target, "" when there is none
    problem: str = ""  # why nothing can be planned (ambiguous, conflict)
    steps: list[Step] = field(default_factory=list)


@dataclass
class OnePlan:
    source: str
    id: str
    state: str
    groups: list[str]
    targets: list[TargetPlan]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def plan_one(svc: App, source_name: str, source_id: str, only: str | None = None) -> OnePlan:
    """What each target the source feeds (or ``only``) would do with the identity now."""
    identity = await svc.sources[source_name].read(source_id)
    plans: list[TargetPlan] = []
    for job in svc.jobs.values():
        if job.section.source != source_name or (only is not None and job.name != only):
            continue
        link = await job.links.get(source_id)
        done = await planned(identity, link, job.target, job.section, job.target)
        found = done.found
        account = found.account.target_id if found.account is not None else ""
        plan = TargetPlan(job.name, done.identity.state.value, found.matched_by or "none", account)
        if found.problem:
            plan.problem = found.explain()
        rules, word = job.target.rules, job.target.capabilities.entitlements or "entitlements"
        plan.steps = [
            Step(rules.label(a.kind), a.reason, safe_diff(a, word), None)
            if a.diff
            else Step(rules.label(a.kind), a.reason, None, safe_diff(a, word))
            for a in done.plan.actions
        ]
        plans.append(plan)
    return OnePlan(source_name, source_id, identity.state.value, sorted(identity.groups), plans)


async def sync_one(
    svc: App, source_name: str, source_id: str, only: str | None, by: str
) -> tuple[Outcome, list[dict[str, Any]]]:
    """The identity through the worker now (a ``manual`` item on the lane's terms), and the audit rows
    it wrote."""
    item = WorkItem(
        "user", source_id, "manual", f"cli:{by}"[:256], target=only or "",
        identity_source=item_source(source_name),
    )  # fmt: skip
    outcome = await svc.worker.sync_user(item)
    rows = await svc.audit.search(AuditQuery(correlation_id=item.correlation_id, limit=100))
    return outcome, list(reversed(rows))


def source_of(svc: App, name: str | None) -> str:
    """The source a command means: the one named, else Entra ID's, else the only one."""
    if name is not None:
        return name
    if DEFAULT_SOURCE in svc.sources or len(svc.sources) != 1:
        return DEFAULT_SOURCE
    return next(iter(svc.sources))
