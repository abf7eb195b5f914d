"""The pure core: from the source as it is, the target as it is and the link, decide what to do.

``plan`` performs no I/O and is deterministic. It converges the target to the source (level
triggered), so a replay, a duplicate or an out-of-order delivery plans nothing new, and it writes
only what differs (compare before write).

Deprovisioning is recorded in the link before the target is touched (``START_DEPROVISION``) and
finished after the revocations (``FINISH_DEPROVISION``): a worker that dies in between leaves a
``PENDING`` link, and the redelivery completes the revocations instead of skipping them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.core.model import Account, Action, ActionKind, DeprovisionState, Link, SourceState, SourceUser
from shared.mapping.model import METADATA_TARGETS, SyncMapping, read_path

# Auth0 stores database-connection emails in lower case: compare them without case.
_CASELESS = frozenset({"email"})
# Values Auth0 keeps unique per connection: a 409 on an update that changes one is a collision with
# another account, not a race.
UNIQUE_PATHS = ("email", "username")


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    @property
    def writes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.writes_target)

    @property
    def kinds(self) -> list[str]:
        return [a.kind.value for a in self.actions]


def desired_profile(source: SourceUser, mapping: SyncMapping) -> dict[str, Any]:
    """Mapped target attributes, plus the Entra object id under the matching key (always kept, so
    the account can be found again even if the link is lost)."""
    profile = mapping.profile({**source.props, "id": source.id})
    profile[f"app_metadata.{mapping.matching.app_metadata_key}"] = source.id
    return profile


def profile_diff(desired: Mapping[str, Any], account: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Target paths whose value differs: path -> (current, desired).

    A root attribute mapped to nothing is left as it is (Auth0 has no "unset" for most of them);
    a metadata key mapped to nothing is removed if present.
    """
    return diff_values(desired, lambda path: read_path(account, path))


def diff_values(desired: Mapping[str, Any], current: Callable[[str], Any]) -> dict[str, tuple[Any, Any]]:
    """:func:`profile_diff` over any way of reading the current value of a target path."""
    diff: dict[str, tuple[Any, Any]] = {}
    for path, want in desired.items():
        have = current(path)
        is_metadata = path.split(".", 1)[0] in METADATA_TARGETS
        if want is None and not is_metadata:
            continue
        if path in _CASELESS and isinstance(want, str) and isinstance(have, str):
            if want.casefold() == have.casefold():
                continue
        elif want == have:
            continue
        diff[path] = (have, want)
    return diff


def nest(paths: Mapping[str, Any]) -> dict[str, Any]:
    """``{"user_metadata.a": 1, "email": "x"}`` -> ``{"user_metadata": {"a": 1}, "email": "x"}``."""
    body: dict[str, Any] = {}
    for path, value in paths.items():
        head, _, rest = path.partition(".")
        if rest:
            body.setdefault(head, {})[rest] = value
        else:
            body[head] = value
    return body


def create_payload(source: SourceUser, desired: Mapping[str, Any], mapping: SyncMapping) -> dict[str, Any]:
    body = nest({k: v for k, v in desired.items() if v is not None})
    body["connection"] = mapping.target.connection
    body["blocked"] = False
    if mapping.target.deterministic_user_id:
        body["user_id"] = source.id
    return body


def role_changes(source: SourceUser, account: Account | None, mapping: SyncMapping) -> list[Action]:
    managed = mapping.managed_roles
    if not managed:
        return []
    want = mapping.roles_for(source.group_ids)
    have = (account.roles if account else frozenset()) & managed
    actions = []
    if add := sorted(want - have):
        actions.append(Action(ActionKind.ASSIGN_ROLES, {"roles": add}, reason="granted by group membership"))
    if remove := sorted(have - want):
        actions.append(Action(ActionKind.REMOVE_ROLES, {"roles": remove}, reason="no longer granted by any group"))
    return actions


def plan(source: SourceUser, account: Account | None, link: Link | None, mapping: SyncMapping) -> Plan:
    if source.state is SourceState.ACTIVE:
        return Plan(tuple(_plan_active(source, account, link, mapping)))
    return Plan(tuple(_plan_leaver(source, account, link, mapping)))


def _plan_active(source: SourceUser, account: Account | None, link: Link | None, mapping: SyncMapping) -> list[Action]:
    desired = desired_profile(source, mapping)
    if account is None:
        if not desired.get("email"):
            return [Action(ActionKind.SKIP, reason="joiner has no email after mapping; Auth0 needs one")]
        return [
            Action(ActionKind.CREATE, create_payload(source, desired, mapping), reason="joiner"),
            Action(ActionKind.LINK, reason="joiner created"),
            *role_changes(source, None, mapping),
        ]

    actions: list[Action] = []
    if link is None or link.user_id != account.user_id or link.target_deleted:
        actions.append(Action(ActionKind.LINK, reason="matched an existing account"))
    diff = profile_diff(desired, account.data)
    conflicts = dict(link.conflicts) if link is not None else {}
    for path, refused in conflicts.items():
        if path in diff and diff[path][1] == refused:
            del diff[path]  # the target refused exactly this value before: not again until it changes
    kept = {p: v for p, v in conflicts.items() if desired.get(p) == v}
    if kept != conflicts:  # before the update, which may record a new conflict on top
        actions.append(Action(ActionKind.SET_CONFLICTS, {"conflicts": kept}, reason="the refused value changed"))
    if diff:
        patch = nest({path: after for path, (_, after) in diff.items()})
        if "email" in diff and desired.get("email_verified") is not None:
            # Auth0 clears email_verified when the email changes unless told otherwise.
            patch["email_verified"] = desired["email_verified"]
        actions.append(Action(ActionKind.UPDATE, patch, diff, reason="mapped attributes changed"))
    if link is not None and link.deprovision is not DeprovisionState.NONE:
        if account.blocked and link.blocked_by_sync and not link.risk_locked:
            actions.append(Action(ActionKind.UNBLOCK, reason="re-enabled or back in scope in Entra"))
        actions.append(Action(ActionKind.CLEAR_DEPROVISION, reason="re-enabled or back in scope in Entra"))
    actions.extend(role_changes(source, account, mapping))
    return actions


def _plan_leaver(source: SourceUser, account: Account | None, link: Link | None, mapping: SyncMapping) -> list[Action]:
    if account is None:
        if link is not None and not link.target_deleted and source.state is SourceState.HARD_DELETED:
            return [Action(ActionKind.MARK_TARGET_DELETED, reason="target account already gone")]
        return [Action(ActionKind.SKIP, reason=f"{source.state.value} in Entra and no Auth0 account")]

    policy = mapping.deprovision
    action = policy.hard_delete if source.state is SourceState.HARD_DELETED else policy.action
    reason = f"{source.state.value} in Entra"
    revocations = _revocations(policy.revoke_sessions, policy.revoke_refresh_tokens, reason)
    if action == "delete":
        return [
            Action(ActionKind.START_DEPROVISION, {"blocked_by_sync": False}, reason=reason),
            *revocations,
            Action(ActionKind.DELETE, reason=f"{reason}; policy deletes"),
            Action(ActionKind.MARK_TARGET_DELETED, reason=reason),
        ]

    state = link.deprovision if link is not None and link.user_id == account.user_id else DeprovisionState.NONE
    if state is DeprovisionState.DONE and account.blocked:
        return [Action(ActionKind.SKIP, reason=f"{reason}; already blocked and revoked")]
    actions: list[Action] = []
    if state is DeprovisionState.NONE:
        # Remember whether the block is ours before placing it, so a re-enable lifts only our block.
        actions.append(Action(ActionKind.START_DEPROVISION, {"blocked_by_sync": not account.blocked}, reason=reason))
    if not account.blocked:
        actions.append(Action(ActionKind.BLOCK, {"blocked": True}, reason=f"{reason}; policy blocks"))
    actions.extend(revocations)
    actions.append(Action(ActionKind.FINISH_DEPROVISION, reason=reason))
    return actions


def _revocations(sessions: bool, refresh_tokens: bool, reason: str) -> Sequence[Action]:
    out = []
    if sessions:
        out.append(Action(ActionKind.REVOKE_SESSIONS, reason=reason))
    if refresh_tokens:
        out.append(Action(ActionKind.REVOKE_REFRESH_TOKENS, reason=reason))
    return out


@dataclass(frozen=True)
class MatchDecision:
    """What one matcher's candidates mean for an Entra user with no usable link."""

    outcome: str  # "found", "none", "ambiguous", "conflict"
    user_id: str | None = None
    candidates: tuple[str, ...] = ()


def judge_candidates(candidates: Sequence[Mapping[str, Any]], entra_id: str, app_metadata_key: str) -> MatchDecision:
    """One candidate that is not another Entra user's account is a match; several are ambiguous
    (never guessed at); one that carries another Entra object id is a conflict (never taken over)."""
    ids = tuple(sorted({str(c["user_id"]) for c in candidates}))
    if not ids:
        return MatchDecision("none")
    if len(ids) > 1:
        return MatchDecision("ambiguous", candidates=ids)
    owner = read_path(candidates[0], f"app_metadata.{app_metadata_key}")
    if owner is not None and str(owner) != entra_id:
        return MatchDecision("conflict", ids[0], ids)
    return MatchDecision("found", ids[0], ids)


def observed(action: Action, account: Account | None, link: Link | None) -> bool | None:
    """Whether the target (or the link) shows ``action``'s effect now: True, False, or None where it
    cannot be seen (a revocation). Used to record what an interrupted attempt did."""
    kind = action.kind
    if kind is ActionKind.CREATE:
        return account is not None
    if kind is ActionKind.DELETE:
        return account is None
    if kind in {ActionKind.BLOCK, ActionKind.UNBLOCK}:
        return account is not None and account.blocked is (kind is ActionKind.BLOCK)
    if kind is ActionKind.UPDATE:
        if account is None:
            return False
        after = {path: pair[1] for path, pair in action.diff.items()}
        return not diff_values(after, lambda path: read_path(account.data, path))
    if kind in {ActionKind.ASSIGN_ROLES, ActionKind.REMOVE_ROLES}:
        if account is None:
            return False
        roles = frozenset(action.payload.get("roles", ()))
        return roles <= account.roles if kind is ActionKind.ASSIGN_ROLES else not roles & account.roles
    if kind is ActionKind.START_DEPROVISION:
        return link is not None and link.deprovision is not DeprovisionState.NONE
    if kind is ActionKind.FINISH_DEPROVISION:
        return link is not None and link.deprovision is DeprovisionState.DONE
    if kind is ActionKind.CLEAR_DEPROVISION:
        return link is not None and link.deprovision is DeprovisionState.NONE
    if kind is ActionKind.LINK:
        return link is not None and account is not None and link.user_id == account.user_id
    if kind is ActionKind.MARK_TARGET_DELETED:
        return link is not None and link.target_deleted
    return None
