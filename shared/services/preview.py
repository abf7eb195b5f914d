"""What a mapping file would do before it is deployed: per target, the accounts it would create,
change (per field and entitlement) and deprovision, and whether the nightly circuit breaker or the
live mass-change guard would hold it.

It runs the new mapping's own reconcilers' :meth:`~shared.services.reconcile.Reconciler.plans`
(the worker's matching ladder and planner, against the targets read now) and tallies the plans as
they stream by: the deprovisions are handed to ``on_deprovision`` one by one (the CLI prints them
by name as they come), so memory holds the target's index and the tallies, never a list of plans.
Nothing is written, queued or stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from shared.core.drift import deprovision_limit
from shared.core.model import ActionKind, Identity, SourceState
from shared.services.guard import DEPROVISION, exceeded, subjects_of
from shared.services.reconcile import Progress, Reconciler

DEPROVISIONS = frozenset({ActionKind.DISABLE, ActionKind.DELETE})


@dataclass
class Deprovision:
    identity: str
    name: str
    action: str  # the target's word ("block", "delete", ...)
    why: str


@dataclass
class TargetPreview:
    target: str
    identities: int = 0
    in_scope: int = 0
    managed: int = 0  # accounts matched to an identity
    created: int = 0
    changed: int = 0  # accounts with a mapped field changed
    deprovisioned: int = 0
    restored: int = 0
    unmatched: int = 0  # ambiguous or conflicting matches: reported, never planned
    fields: Counter[str] = field(default_factory=Counter)  # target path -> accounts it would change on
    granted: Counter[str] = field(default_factory=Counter)  # entitlement -> accounts it would be added to
    removed: Counter[str] = field(default_factory=Counter)
    breaker: str = ""  # why a reconcile --apply would be held, or ""
    guard: list[str] = field(default_factory=list)  # why the live guard would hold changes, if it would

    def to_dict(self) -> dict[str, Any]:
        # asdict would rebuild each Counter from its (key, count) pairs, counting the pairs
        plain = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in plain.items()}


async def preview_target(
    reconciler: Reconciler,
    on_deprovision: Callable[[Deprovision], None] = lambda d: None,
    progress: Progress | None = None,
) -> TargetPreview:
    rules = reconciler.target.rules
    seen = TargetPreview(reconciler.target.name)
    subjects: Counter[str] = Counter()
    async for identity, found, plan in reconciler.plans(progress):
        seen.identities += 1
        seen.in_scope += identity.state is SourceState.ACTIVE
        seen.managed += found.account is not None
        seen.unmatched += bool(found.problem)
        kinds = {a.kind for a in plan.actions}
        seen.created += ActionKind.CREATE in kinds
        seen.restored += ActionKind.ENABLE in kinds
        for action in plan.actions:
            if action.kind is ActionKind.UPDATE:
                seen.fields.update(action.diff.keys())
            elif action.kind is ActionKind.GRANT:
                seen.granted.update(action.entitlements)
            elif action.kind is ActionKind.UNGRANT:
                seen.removed.update(action.entitlements)
        seen.changed += ActionKind.UPDATE in kinds
        deprovision = next((a for a in plan.actions if a.kind in DEPROVISIONS), None)
        if deprovision is not None:
            seen.deprovisioned += 1
            on_deprovision(Deprovision(identity.id, _name(identity), rules.label(deprovision.kind), deprovision.reason))
        subjects.update(subjects_of(plan))
    seen.breaker = deprovision_limit(reconciler.section.reconcile, seen.deprovisioned, seen.managed)
    guard = reconciler.section.guard
    counts = {**subjects, DEPROVISION: seen.deprovisioned}  # every account's deprovision, at once
    seen.guard = [why for s, n in sorted(counts.items()) if n and (why := exceeded(guard, s, n, seen.managed))]
    return seen


def _name(identity: Identity) -> str:
    a = identity.attributes
    return str(a.get("userPrincipalName") or a.get("mail") or a.get("userName") or a.get("displayName") or "")
