"""Plain data the pure core works on: the source as Entra has it now, the target as Auth0 has it
now, what entra-sync remembers about the pair (the link), and the actions a plan is made of."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class SourceState(Enum):
    ACTIVE = "active"  # exists, enabled, in scope
    DISABLED = "disabled"  # accountEnabled = false
    OUT_OF_SCOPE = "out_of_scope"  # exists and enabled, but the scope excludes it
    SOFT_DELETED = "soft_deleted"  # in deleted items, restorable for 30 days
    HARD_DELETED = "hard_deleted"  # gone for good

    @property
    def is_leaver(self) -> bool:
        return self is not SourceState.ACTIVE


@dataclass(frozen=True)
class SourceUser:
    """An Entra user as read now. ``props`` holds the selected Graph properties (and ``manager``)."""

    id: str
    state: SourceState
    props: Mapping[str, Any] = field(default_factory=dict)
    group_ids: frozenset[str] = frozenset()  # relevant groups the user is a (transitive) member of


@dataclass(frozen=True)
class Account:
    """An Auth0 user as read now, with the names of the roles it holds."""

    user_id: str
    data: Mapping[str, Any]  # the Management API's user object
    roles: frozenset[str] = frozenset()

    @property
    def blocked(self) -> bool:
        return bool(self.data.get("blocked"))


class DeprovisionState(Enum):
    NONE = "none"
    PENDING = "pending"  # started: the block may be in place, revocations may not be
    DONE = "done"


@dataclass(frozen=True)
class Link:
    """What entra-sync remembers about one Entra user and its Auth0 account.

    ``blocked_by_sync`` says the block is ours (set while deprovisioning), so a re-enable lifts only
    blocks entra-sync placed, never one placed by an admin or the risk response.
    """

    entra_id: str
    user_id: str
    deprovision: DeprovisionState = DeprovisionState.NONE
    blocked_by_sync: bool = False
    target_deleted: bool = False
    risk_locked: bool = False
    # Target path -> the value the target refused as taken by another account (an email collision):
    # not tried again until the desired value changes; reconciliation reports it as a conflict.
    conflicts: Mapping[str, Any] = field(default_factory=dict)


class ActionKind(Enum):
    CREATE = "create"
    UPDATE = "update"
    BLOCK = "block"
    UNBLOCK = "unblock"
    REVOKE_SESSIONS = "revoke_sessions"
    REVOKE_REFRESH_TOKENS = "revoke_refresh_tokens"
    DELETE = "delete"
    ASSIGN_ROLES = "assign_roles"
    REMOVE_ROLES = "remove_roles"
    # bookkeeping in Table Storage (no target call)
    LINK = "link"
    START_DEPROVISION = "start_deprovision"
    FINISH_DEPROVISION = "finish_deprovision"
    CLEAR_DEPROVISION = "clear_deprovision"
    MARK_TARGET_DELETED = "mark_target_deleted"
    SET_CONFLICTS = "set_conflicts"  # forget conflicts that no longer apply
    # nothing to do, or a refusal the operator must see
    SKIP = "skip"


TARGET_WRITES = frozenset(
    {
        ActionKind.CREATE,
        ActionKind.UPDATE,
        ActionKind.BLOCK,
        ActionKind.UNBLOCK,
        ActionKind.REVOKE_SESSIONS,
        ActionKind.REVOKE_REFRESH_TOKENS,
        ActionKind.DELETE,
        ActionKind.ASSIGN_ROLES,
        ActionKind.REMOVE_ROLES,
    }
)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    payload: Mapping[str, Any] = field(default_factory=dict)
    diff: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)  # target path -> (before, after)
    reason: str = ""

    @property
    def writes_target(self) -> bool:
        return self.kind in TARGET_WRITES
