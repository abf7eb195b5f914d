"""The pure core: from the identity as it is, the account as it is and the link, decide what to do.

``plan`` performs no I/O and is deterministic. It converges the account to the identity (level
triggered), so a replay, a duplicate or an out-of-order delivery plans nothing new, and it writes
only what differs (compare before write). It knows no vendor: the target's rules say which paths
exist and how values compare, its capabilities what deprovisioning can include.

Deprovisioning is recorded in the link before the target is touched (``START_DEPROVISION``) and
finished after the revocations (``FINISH_DEPROVISION``): a worker that dies in between leaves a
``PENDING`` link, and the redelivery completes the revocations instead of skipping them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from shared.core.model import (
    Account,
    Action,
    ActionKind,
    DeprovisionState,
    Identity,
    LastApplied,
    Link,
    Plan,
    SourceState,
)
from shared.core.ports import Capabilities, Rules
from shared.core.work import where
from shared.mapping.model import TargetSection

# Revocations leave nothing to observe afterwards: sent again after a crash rather than claimed.
REVOCATIONS: Final = frozenset({ActionKind.REVOKE_SESSIONS, ActionKind.REVOKE_REFRESH_TOKENS})


def value_at(account: Account, path: str, rules: Rules) -> Any:
    """The account's value at a target path: as remembered (:attr:`Account.known`) or as read."""
    return account.known.get(path) if account.known is not None else rules.current(account, path)


def diff(desired: Mapping[str, Any], account: Account, rules: Rules) -> dict[str, tuple[Any, Any]]:
    """Target paths whose value differs: path -> (current, desired). A path mapped to nothing is
    removed where the target's rules say so, and left as it is elsewhere."""
    out: dict[str, tuple[Any, Any]] = {}
    for path, want in desired.items():
        have = value_at(account, path, rules)
        if want is None and not rules.removes_unmapped(path):
            continue
        if rules.same(path, want, have):
            continue
        out[path] = (have, want)
    return out


def entitlement_changes(identity: Identity, account: Account | None, section: TargetSection) -> list[Action]:
    """Grant what the identity's groups give and the account lacks; take back what no group gives
    any more. Entitlements no grant names are never touched."""
    managed = section.managed
    if not managed:
        return []
    want = section.entitlements_for(identity.groups, identity.attributes)
    have = (account.entitlements if account else frozenset()) & managed
    actions = []
    if add := tuple(sorted(want - have)):
        actions.append(Action(ActionKind.GRANT, entitlements=add, reason="granted by group membership"))
    if remove := tuple(sorted(have - want)):
        actions.append(Action(ActionKind.UNGRANT, entitlements=remove, reason="no longer granted by any group"))
    return actions


def plan(
    identity: Identity,
    account: Account | None,
    link: Link | None,
    section: TargetSection,
    rules: Rules,
    capabilities: Capabilities,
    *,
    desired: Mapping[str, Any] | None = None,
) -> Plan:
    """``desired`` is ``rules.desired(identity)``, when the caller has it already."""
    if identity.state is SourceState.ACTIVE:
        wanted = rules.desired(identity) if desired is None else desired
        return Plan(tuple(_active(identity, account, link, section, rules, wanted)))
    return Plan(tuple(_leaver(identity, account, link, section, capabilities)))


def _active(
    identity: Identity,
    account: Account | None,
    link: Link | None,
    section: TargetSection,
    rules: Rules,
    desired: Mapping[str, Any],
) -> list[Action]:
    if account is None:
        payload = rules.create_payload(identity, desired)
        if isinstance(payload, str):
            return [Action(ActionKind.SKIP, reason=payload)]
        return [
            Action(ActionKind.CREATE, payload, reason="joiner"),
            Action(ActionKind.LINK, reason="joiner created"),
            *entitlement_changes(identity, None, section),
        ]

    actions: list[Action] = []
    if link is None or link.target_id != account.target_id or link.target_deleted:
        actions.append(Action(ActionKind.LINK, reason="matched an existing account"))
    changes = diff(desired, account, rules)
    conflicts = dict(link.conflicts) if link is not None else {}
    for path, refused in conflicts.items():
        if path in changes and changes[path][1] == refused:
            del changes[path]  # the target refused exactly this value before: not again until it changes
    kept = {p: v for p, v in conflicts.items() if desired.get(p) == v}
    if kept != conflicts:  # before the update, which may record a new conflict on top
        actions.append(Action(ActionKind.SET_CONFLICTS, {"conflicts": kept}, reason="the refused value changed"))
    if changes:
        payload = rules.update_payload({path: after for path, (_, after) in changes.items()}, desired)
        actions.append(Action(ActionKind.UPDATE, payload, changes, reason="mapped attributes changed"))
    if link is not None and link.deprovision is not DeprovisionState.NONE:
        back = f"re-enabled or back in scope {where(identity.source)}"
        if not account.active and link.disabled_by_sync and not link.risk_locked:
            actions.append(Action(ActionKind.ENABLE, reason=back))
        actions.append(Action(ActionKind.CLEAR_DEPROVISION, reason=back))
    actions.extend(entitlement_changes(identity, account, section))
    return actions


def _leaver(
    identity: Identity, account: Account | None, link: Link | None, section: TargetSection, capabilities: Capabilities
) -> list[Action]:
    if account is None:
        if link is not None and not link.target_deleted and identity.state is SourceState.HARD_DELETED:
            return [Action(ActionKind.MARK_TARGET_DELETED, reason="target account already gone")]
        return [Action(ActionKind.SKIP, reason=f"{identity.state.value} {where(identity.source)} and no account")]

    policy = section.deprovision
    action = policy.hard_delete if identity.state is SourceState.HARD_DELETED else policy.action
    reason = f"{identity.state.value} {where(identity.source)}"
    revocations = []
    if policy.revoke_sessions and capabilities.revoke_sessions:
        revocations.append(Action(ActionKind.REVOKE_SESSIONS, reason=reason))
    if policy.revoke_refresh_tokens and capabilities.revoke_refresh_tokens:
        revocations.append(Action(ActionKind.REVOKE_REFRESH_TOKENS, reason=reason))
    if action == "delete" and capabilities.delete:
        return [
            Action(ActionKind.START_DEPROVISION, {"disabled_by_sync": False}, reason=reason),
            *revocations,
            Action(ActionKind.DELETE, reason=f"{reason}; policy deletes"),
            Action(ActionKind.MARK_TARGET_DELETED, reason=reason),
        ]

    state = link.deprovision if link is not None and link.target_id == account.target_id else DeprovisionState.NONE
    if state is DeprovisionState.DONE and not account.active:
        return [Action(ActionKind.SKIP, reason=f"{reason}; already disabled and revoked")]
    actions: list[Action] = []
    if state is DeprovisionState.NONE:
        # Remember whether the disabling is ours before doing it, so a re-enable lifts only ours.
        actions.append(Action(ActionKind.START_DEPROVISION, {"disabled_by_sync": account.active}, reason=reason))
    if account.active:
        actions.append(Action(ActionKind.DISABLE, reason=f"{reason}; policy disables"))
    actions.extend(revocations)
    actions.append(Action(ActionKind.FINISH_DEPROVISION, reason=reason))
    return actions


def observed(action: Action, account: Account | None, link: Link | None, rules: Rules) -> bool | None:
    """Whether the target (or the link) shows ``action``'s effect now: True, False, or None where it
    cannot be seen (a revocation). Used to record what an interrupted attempt did."""
    kind = action.kind
    if kind is ActionKind.CREATE:
        return account is not None
    if kind is ActionKind.DELETE:
        return account is None
    if kind in {ActionKind.DISABLE, ActionKind.ENABLE}:
        return account is not None and account.active is (kind is ActionKind.ENABLE)
    if kind is ActionKind.UPDATE:
        if account is None:
            return False
        return all(rules.same(path, pair[1], value_at(account, path, rules)) for path, pair in action.diff.items())
    if kind in {ActionKind.GRANT, ActionKind.UNGRANT}:
        if account is None:
            return False
        names = frozenset(action.entitlements)
        return names <= account.entitlements if kind is ActionKind.GRANT else not names & account.entitlements
    if kind is ActionKind.START_DEPROVISION:
        return link is not None and link.deprovision is not DeprovisionState.NONE
    if kind is ActionKind.FINISH_DEPROVISION:
        return link is not None and link.deprovision is DeprovisionState.DONE
    if kind is ActionKind.CLEAR_DEPROVISION:
        return link is not None and link.deprovision is DeprovisionState.NONE
    if kind is ActionKind.LINK:
        return link is not None and account is not None and link.target_id == account.target_id
    if kind is ActionKind.MARK_TARGET_DELETED:
        return link is not None and link.target_deleted
    return None


def resend(plan: Plan, earlier: Sequence[Action], identity: Identity, account: Account | None) -> Plan:
    """``plan`` with the revocations an interrupted attempt began (``earlier``, its intent) and this
    plan no longer makes sent again. A revocation leaves nothing to observe, so whether the killed
    attempt's reached the target is not known; sending it again is harmless (it is idempotent), and
    then its audit row records a send that is known. Only for a leaver whose account is still there:
    a returner is not signed out again, and a deleted account has nothing to revoke (the worker
    records those as unconfirmed)."""
    if identity.state is SourceState.ACTIVE or account is None or plan.has(ActionKind.DELETE):
        return plan
    planned = {a.kind for a in plan.actions}
    kinds = dict.fromkeys(a.kind for a in earlier if a.kind in REVOCATIONS and a.kind not in planned)
    if not kinds:
        return plan
    why = (
        f"{identity.state.value} {where(identity.source)}; sent again, as whether an interrupted attempt's "
        "reached it cannot be seen"
    )
    again = [Action(kind, reason=why) for kind in kinds]
    kept = [a for a in plan.actions if a.kind is not ActionKind.SKIP]  # "already revoked" is not known
    at = next((i for i, a in enumerate(kept) if a.kind is ActionKind.FINISH_DEPROVISION), len(kept))
    return Plan((*kept[:at], *again, *kept[at:]))


# ------------------------------------------------------------------------------------------------
# What was applied, remembered in the link
# ------------------------------------------------------------------------------------------------


def remembered(
    identity: Identity, link: Link | None, section: TargetSection, desired: Mapping[str, Any]
) -> Account | None:
    """The account as its link remembers it (:class:`LastApplied`), when that can stand in for a read.

    The memory is what entra-sync itself last wrote, so it may be trusted for decisions about
    entra-sync's own values: which mapped paths to write (a mover) and which managed entitlements
    to grant or take back (a group change). Every write it leads to is idempotent, and a change made
    by hand in the target is reconciliation's to find. It may not be trusted for a decision about
    someone else's state: whether the account is blocked (an administrator may have blocked or
    unblocked it by hand), so a leaver (deprovision: whose block is it, is one needed) and an
    identity whose link records a deprovision (restore: lift the block or not) read the target.
    Nor where it may be stale: a refused value to watch, a risk lock (the risk response writes
    outside these plans), a mapping that maps other paths or grants than when it was remembered,
    entitlements not read where an active identity's grants need them. The worker also reads after
    a failure, a create race or a crash (see :mod:`shared.services.worker`)."""
    if link is None or link.applied is None or link.target_deleted or link.risk_locked or link.conflicts:
        return None
    if identity.state is not SourceState.ACTIVE or link.deprovision is not DeprovisionState.NONE:
        return None  # a block or an unblock is decided from the account as it is
    applied = link.applied
    if set(applied.values) != set(desired):
        return None
    if applied.managed != section.managed:
        return None
    if identity.state is SourceState.ACTIVE and section.managed and applied.entitlements is None:
        return None
    return Account(
        link.target_id,
        entitlements=applied.entitlements or frozenset(),
        active=applied.active,
        owner=identity.id,
        known=dict(applied.values),
    )


def applied_after(
    identity: Identity,
    account: Account | None,
    plan: Plan,
    section: TargetSection,
    rules: Rules,
    desired: Mapping[str, Any],
    *,
    entitlements_read: bool,
) -> LastApplied | None:
    """What the account holds once every action of ``plan`` succeeded, to remember in its link;
    None where that is not known (nothing to converge, a delete, an account another identity owns).
    ``entitlements_read``: whether ``account.entitlements`` were read (a leaver's are not)."""
    kinds = {a.kind for a in plan.actions}
    if kinds & {ActionKind.DELETE, ActionKind.MARK_TARGET_DELETED}:
        return None
    if account is None and ActionKind.CREATE not in kinds:
        return None
    values: dict[str, Any] = {}
    for path, want in desired.items():
        have = value_at(account, path, rules) if account is not None else None
        # A leaver's attributes are not written, nor a path mapped to nothing that is left alone.
        left = identity.state is not SourceState.ACTIVE or (want is None and not rules.removes_unmapped(path))
        values[path] = have if account is not None and left else want
    held: frozenset[str] | None = None
    if account is None or entitlements_read:
        held = (account.entitlements if account is not None else frozenset()) & section.managed
        for action in plan.actions:
            if action.kind is ActionKind.GRANT:
                held |= frozenset(action.entitlements)
            elif action.kind is ActionKind.UNGRANT:
                held -= frozenset(action.entitlements)
    active = account.active if account is not None else True
    if ActionKind.ENABLE in kinds:
        active = True
    if ActionKind.DISABLE in kinds:
        active = False
    return LastApplied(values, held, section.managed, active)
