"""Plain, vendor-neutral data the pure core works on.

An :class:`Identity` is a person as a source (Entra ID) has them now; an :class:`Account` is what a
target (Auth0, a SCIM application, ...) holds for them now; a :class:`Link` is what entra-sync
remembers about the pair; a plan is made of :class:`Action` s. Nothing here knows a vendor: what a
target's attributes are called, how its values compare and what deprovisioning means there are
the target's rules (:class:`shared.core.ports.Rules`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

LINK_SCHEMA: Final = 2  # links written with source/target names and neutral field names


class SourceState(Enum):
    ACTIVE = "active"  # exists, enabled, in scope
    DISABLED = "disabled"  # disabled at the source (Entra: accountEnabled = false)
    OUT_OF_SCOPE = "out_of_scope"  # exists and enabled, but the scope excludes it
    SOFT_DELETED = "soft_deleted"  # deleted, restorable (Entra: deleted items, 30 days)
    HARD_DELETED = "hard_deleted"  # gone for good

    @property
    def is_leaver(self) -> bool:
        return self is not SourceState.ACTIVE


@dataclass(frozen=True)
class Identity:
    """A person as a source has them now. ``attributes`` carry the source's own property names (the
    mapping speaks them); ``groups`` are the relevant groups they belong to, directly or nested."""

    id: str
    state: SourceState
    attributes: Mapping[str, Any] = field(default_factory=dict)
    groups: frozenset[str] = frozenset()
    source: str = field(kw_only=True)  # the source's name: "entra"


@dataclass(frozen=True)
class Account:
    """An account as a target holds it now.

    ``data`` is the target's own representation (its rules read paths from it); ``entitlements``
    the names of what it holds (roles, groups, permission sets), as far as they were read; ``active``
    whether it can sign in; ``owner`` the source id stamped on it (so another identity's account is
    never taken over).
    """

    target_id: str
    data: Mapping[str, Any] = field(default_factory=dict)
    entitlements: frozenset[str] = frozenset()
    active: bool = True
    owner: str | None = None
    # Target path -> value, for an account known from its link (:class:`LastApplied`) instead of read:
    # the planner compares these, not ``data``.
    known: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LastApplied:
    """What entra-sync last converged an account to, kept in its link: the mapped target paths'
    values, the managed entitlements it holds (None where they were not read) out of ``managed``
    (the grants' entitlements at the time), and whether it can sign in.

    A change notification is planned against this instead of a read of the target, so a mover costs
    one write and a change to nothing mapped costs no call at all. A change made directly in the
    target is not seen that way: reconciliation, which always reads the target, finds and repairs it.
    """

    values: Mapping[str, Any]
    entitlements: frozenset[str] | None
    managed: frozenset[str]
    active: bool


class DeprovisionState(Enum):
    NONE = "none"
    PENDING = "pending"  # started: the account may be disabled, revocations may not be done
    DONE = "done"


@dataclass(frozen=True)
class Link:
    """What entra-sync remembers about one source identity and its account in one target.

    ``disabled_by_sync`` says the disabling is ours (set while deprovisioning), so a re-enable lifts
    only what entra-sync placed, never an administrator's block or the risk response's.
    """

    source_id: str
    target_id: str
    deprovision: DeprovisionState = DeprovisionState.NONE
    disabled_by_sync: bool = False
    target_deleted: bool = False
    risk_locked: bool = False
    # Target path -> the value the target refused as taken by another account (an email collision):
    # not tried again until the desired value changes; reconciliation reports it as a conflict.
    conflicts: Mapping[str, Any] = field(default_factory=dict)
    applied: LastApplied | None = field(default=None, kw_only=True)
    target: str = field(kw_only=True)  # the target's name: "auth0", "scim:hr-app"
    source: str = field(kw_only=True)  # the source's name: "entra"
    schema_version: int = field(default=LINK_SCHEMA, kw_only=True)


class ActionKind(Enum):
    CREATE = "create"
    UPDATE = "update"
    DISABLE = "disable"
    ENABLE = "enable"
    REVOKE_SESSIONS = "revoke_sessions"
    REVOKE_REFRESH_TOKENS = "revoke_refresh_tokens"
    DELETE = "delete"
    GRANT = "grant"  # entitlements to add
    UNGRANT = "ungrant"  # entitlements to remove
    # bookkeeping in the link (no target call)
    LINK = "link"
    START_DEPROVISION = "start_deprovision"
    FINISH_DEPROVISION = "finish_deprovision"
    CLEAR_DEPROVISION = "clear_deprovision"
    MARK_TARGET_DELETED = "mark_target_deleted"
    SET_CONFLICTS = "set_conflicts"  # forget conflicts that no longer apply
    # nothing to do, or a refusal the operator must see
    SKIP = "skip"


TARGET_WRITES: Final = frozenset(
    {
        ActionKind.CREATE,
        ActionKind.UPDATE,
        ActionKind.DISABLE,
        ActionKind.ENABLE,
        ActionKind.REVOKE_SESSIONS,
        ActionKind.REVOKE_REFRESH_TOKENS,
        ActionKind.DELETE,
        ActionKind.GRANT,
        ActionKind.UNGRANT,
    }
)


@dataclass(frozen=True)
class Action:
    """One step of a plan. ``payload`` is what the target is sent (built by its rules), ``diff`` the
    target paths that change (path -> (before, after)), ``entitlements`` what a grant adds or an
    ungrant removes."""

    kind: ActionKind
    payload: Mapping[str, Any] = field(default_factory=dict)
    diff: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    reason: str = ""
    entitlements: tuple[str, ...] = ()

    @property
    def writes_target(self) -> bool:
        return self.kind in TARGET_WRITES


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    @property
    def writes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.writes_target)

    def has(self, kind: ActionKind) -> bool:
        return any(a.kind is kind for a in self.actions)

    def first(self, kind: ActionKind) -> Action | None:
        return next((a for a in self.actions if a.kind is kind), None)
