"""The mapping: what is synced, how it is shaped, what groups grant, and the policies.

Plain, validated data (``shared.mapping.load`` reads and checks the file) and pure functions over
it. Named sources (:class:`SourceSection`: ``entra``, an inbound SCIM endpoint, ...) say where
identities come from; one shared :class:`Scope` says which people are synced at all; each named
target section (:class:`TargetSection`: ``auth0``, ``scim:<name>``, ...) is fed by exactly one
source and has its own attributes, entitlements, matching, deprovisioning, reconciliation and guard
policy, and may narrow the scope. A source's and a target's own options (an Auth0 connection, a
SCIM base URL) are validated by its kind.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol, runtime_checkable

from shared.alerting.config import AlertsConfig
from shared.core.work import DEFAULT_SOURCE

USER_TYPES: Final = ("Member", "Guest")
# Graph properties every read selects, whatever the mapping says.
ALWAYS_SELECTED: Final = ("id", "accountEnabled", "userType", "userPrincipalName", "mail")
DEPROVISION_ACTIONS: Final = ("disable", "delete")


class MappingError(ValueError):
    """The mapping file is wrong; the message names the file, the entry and the problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"mapping file {source} is invalid ({len(problems)} problem(s)):\n{lines}")


# ------------------------------------------------------------------------------------------------
# Values: attributes, transforms, conditions, scope
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """One step applied to a value: ``lower``, ``upper``, ``trim``, ``first``, ``default``,
    ``lookup``, ``join``, ``constant``."""

    kind: str
    arg: Any = None
    fallback: Any = None  # lookup: the value for keys not in the table (None: keep the input)

    def apply(self, value: Any) -> Any:
        if self.kind == "constant":
            return self.arg
        if self.kind == "default":
            return self.arg if _absent(value) else value
        if self.kind == "join":
            parts = value if isinstance(value, list | tuple) else [value]
            kept = [str(p) for p in parts if not _absent(p)]
            return self.arg.join(kept) if kept else None
        if self.kind == "first":
            if isinstance(value, list | tuple):
                return next((v for v in value if not _absent(v)), None)
            return value
        if _absent(value):
            return None
        if self.kind == "lookup":
            key = str(value)
            if key in self.arg:
                return self.arg[key]
            return value if self.fallback is None else self.fallback
        if isinstance(value, list | tuple):
            return [self._text(v) for v in value]
        return self._text(value)

    def _text(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if self.kind == "lower":
            return value.lower()
        if self.kind == "upper":
            return value.upper()
        if self.kind == "trim":
            stripped = value.strip()
            return stripped if stripped else None
        raise AssertionError(f"unknown transform {self.kind}")  # validated at load


@dataclass(frozen=True)
class AttributeMapping:
    target: str  # "email", "user_metadata.department", ...
    sources: tuple[str, ...]  # Graph property paths: "mail", "manager.id", "onPremisesExtensionAttributes.x"
    transforms: tuple[Transform, ...] = ()

    def value_from(self, user: Mapping[str, Any]) -> Any:
        if not self.sources:
            value: Any = None
        elif len(self.sources) == 1:
            value = read_path(user, self.sources[0])
        else:
            value = [read_path(user, s) for s in self.sources]
        for transform in self.transforms:
            value = transform.apply(value)
        return value


@dataclass(frozen=True)
class Condition:
    attribute: str
    operator: str
    value: Any = None

    def holds(self, user: Mapping[str, Any]) -> bool:
        actual = read_path(user, self.attribute)
        op = self.operator
        if op == "is_present":
            return not _absent(actual)
        if op == "is_absent":
            return _absent(actual)
        if op == "is_true":
            return actual is True
        if op == "is_false":
            return actual is False
        if _absent(actual):
            return op in {"not_equals", "not_in"}
        text = str(actual).casefold()
        if op == "equals":
            return text == str(self.value).casefold()
        if op == "not_equals":
            return text != str(self.value).casefold()
        if op == "in":
            return text in {str(v).casefold() for v in self.value}
        if op == "not_in":
            return text not in {str(v).casefold() for v in self.value}
        if op == "starts_with":
            return text.startswith(str(self.value).casefold())
        if op == "ends_with":
            return text.endswith(str(self.value).casefold())
        if op == "matches":
            return re.fullmatch(self.value, str(actual)) is not None
        raise AssertionError(f"unknown operator {op}")  # validated at load


CONDITION_OPERATORS: Final = (
    "equals",
    "not_equals",
    "in",
    "not_in",
    "starts_with",
    "ends_with",
    "matches",
    "is_present",
    "is_absent",
    "is_true",
    "is_false",
)


@dataclass(frozen=True)
class Scope:
    user_types: tuple[str, ...] = ("Member",)
    groups: tuple[str, ...] = ()  # member (transitively) of any of these; empty: no group condition
    conditions: tuple[Condition, ...] = ()  # all must hold

    def includes(self, user: Mapping[str, Any], group_ids: frozenset[str]) -> bool:
        if user.get("userType", "Member") not in self.user_types:
            return False
        if self.groups and not group_ids.intersection(self.groups):
            return False
        return all(c.holds(user) for c in self.conditions)


@dataclass(frozen=True)
class Deprovision:
    """What a leaver (disabled, soft-deleted or out of scope) gets, and one deleted for good."""

    action: str = "disable"  # "disable" (Auth0: block; SCIM: active=false) or "delete"
    hard_delete: str = "disable"
    revoke_sessions: bool = True  # where the target can (a capability)
    revoke_refresh_tokens: bool = True


DRIFT_CLASSES: Final = (
    "missing",  # in scope in Entra, no Auth0 account
    "orphaned",  # managed Auth0 account whose Entra user is gone, disabled or out of scope, still active
    "attribute_mismatch",
    "role_mismatch",
    "stale",  # no Auth0 login in stale_after_days (reported only)
    "ambiguous",  # several candidates (never auto-fixed)
    "conflict",  # a value the target refused as another account's (reported only)
)
SAFE_BY_DEFAULT: Final = ("missing", "attribute_mismatch", "role_mismatch")
NEVER_AUTO_FIXED: Final = frozenset({"ambiguous", "stale", "conflict"})


@dataclass(frozen=True)
class ReconcilePolicy:
    """What the nightly reconciliation may repair on its own, and when it must stop and ask."""

    remediate: tuple[str, ...] = SAFE_BY_DEFAULT  # drift classes enqueued for the worker
    stale_after_days: int = 90
    # Circuit breaker (like Entra's accidental-deletion threshold): a run that would block or delete
    # more than this many managed users, or this share of them, is held for approval.
    max_deprovisions: int = 25
    max_deprovision_share: float = 0.05


@dataclass(frozen=True)
class GuardPolicy:
    """Mass changes held for approval on the way in (notifications, delta, repairs), over a sliding
    window: many deprovisions, or one attribute changed or cleared on many accounts.

    Its limits are its own, not the nightly circuit breaker's (:class:`ReconcilePolicy`): holding a
    live leaver leaves someone who was let go with access, so they are looser. A count rule (like
    Entra provisioning's accidental-deletion threshold, a count of 500 per cycle by default) and a
    share rule for tenants too small for the count to matter. The share rules apply only once at
    least ``min_changes_for_share`` changes of a kind are counted in the window: in a tenant of ten,
    five leavers in an hour are half the accounts but not a mass event.

    Defaults, and why:

    * ``max_deprovisions`` 100 an hour: ordinary leavers never come near it (a 50,000-person
      organisation with 15% yearly attrition has about 30 a working day); a layoff or a scope
      mistake does, and either deserves a look before the rest go out.
    * ``max_deprovision_share`` 20% of the managed accounts: what a broken scope filter or a removed
      group looks like in a tenant under 500 accounts, where the count rule would never trip.
    * ``min_changes_for_share`` 10: below ten in an hour a share says nothing about intent, and a
      whole small team leaving at once is not held (Entra's own threshold holds nothing there).

    ``configured``: the keys the mapping file set (the rest are defaults), so start-up can say when
    live leavers may be held by limits nobody wrote down.
    """

    window_minutes: int = 60
    max_deprovisions: int = 100
    max_deprovision_share: float = 0.2
    max_attribute_changes: int = 500  # one target path changed or cleared on this many accounts
    max_attribute_change_share: float = 0.5
    min_changes_for_share: int = 10
    configured: frozenset[str] = field(default=frozenset(), compare=False)


RISK_LEVELS: Final = ("low", "medium", "high")
RISK_ACTIONS: Final = ("block", "revoke_sessions", "revoke_refresh_tokens", "require_mfa", "notify")


@dataclass(frozen=True)
class RiskRule:
    level: str | None = None  # applies to this level, or any level when None
    event_type: str | None = None  # applies to this riskEventType, or any when None
    actions: tuple[str, ...] = ("notify",)


@dataclass(frozen=True)
class RiskPolicy:
    """Entra ID Protection response. The first rule matching a detection's event type and level wins."""

    rules: tuple[RiskRule, ...] = (
        RiskRule(level="high", actions=("block", "revoke_sessions", "revoke_refresh_tokens", "notify")),
        RiskRule(level="medium", actions=("revoke_sessions", "require_mfa", "notify")),
        RiskRule(level="low", actions=("notify",)),
    )
    restore_on: tuple[str, ...] = ()  # riskState values that lift the response (off by default)
    mfa_flag: str = "require_mfa"  # app_metadata key the Auth0 login flow reads

    def actions_for(self, level: str, event_type: str) -> tuple[str, ...]:
        for rule in self.rules:
            if (rule.level is None or rule.level == level) and (rule.event_type in (None, event_type)):
                return rule.actions
        return ()


NO_CONDITIONS: Final[Mapping[str, str]] = MappingProxyType({})  # a kind whose grants are by group alone


@dataclass(frozen=True)
class Grant:
    """A group and the entitlements its members get in one target (Auth0 roles, SCIM groups, ...),
    where the kind allows it only to members whose job title or department the entry names."""

    group: str  # Entra group object id
    entitlements: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()

    def applies(self, groups: frozenset[str], attributes: Mapping[str, Any]) -> bool:
        return self.group in groups and all(c.holds(attributes) for c in self.conditions)


@runtime_checkable
class NamesGroups(Protocol):
    """A kind's options that name groups of their own beside the grants (Salesforce's profile and
    role tables, which pick one value each): their groups' membership, and the source paths their
    conditions read, matter to the target as its grants' do."""

    @property
    def group_entries(self) -> tuple[tuple[str, str], ...]:
        """(entry, group id) for each group the options name, the entry as a user finds it."""

    @property
    def condition_paths(self) -> tuple[str, ...]:
        """Source paths the options' conditions read."""


# ------------------------------------------------------------------------------------------------
# Targets and the whole mapping
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSection:
    """One source's part of the mapping: where identities come from, and its kind's options."""

    name: str  # "entra", "hr-push"
    kind: str  # "entra", "scim_inbox", ...
    where: str  # the entry prefix in messages: "" (the default source) or "sources.<name>."
    options: Any = None  # the kind's own validated options


DEFAULT_SOURCES: Final = {DEFAULT_SOURCE: SourceSection(DEFAULT_SOURCE, DEFAULT_SOURCE, "")}


@dataclass(frozen=True)
class TargetSection:
    """One target's part of the mapping: a provisioning job of its own, fed by one source."""

    name: str  # "auth0", "scim:hr-app"
    kind: str  # "auth0", "scim", ...
    where: str  # the entry prefix in messages: "" (a version 1 file) or "targets.<name>."
    attributes: tuple[AttributeMapping, ...] = ()
    grants: tuple[Grant, ...] = ()
    matching: tuple[str, ...] = ("link",)  # matchers in order, "link" first
    deprovision: Deprovision = field(default_factory=Deprovision)
    reconcile: ReconcilePolicy = field(default_factory=ReconcilePolicy)
    guard: GuardPolicy = field(default_factory=GuardPolicy)
    scope: Scope | None = None  # narrows the shared scope for this target
    options: Any = None  # the kind's own validated options
    grants_key: str = "entitlements"  # what the file calls the grants here ("roles" for Auth0)
    source: str = DEFAULT_SOURCE  # the source that feeds it (a name under the mapping's sources)

    @property
    def managed(self) -> frozenset[str]:
        """Every entitlement some group grants: the only ones entra-sync ever adds or removes."""
        return frozenset(e for g in self.grants for e in g.entitlements)

    def entitlements_for(self, groups: frozenset[str], attributes: Mapping[str, Any] | None = None) -> frozenset[str]:
        """What the grants give members of ``groups`` with these source ``attributes`` (a grant with
        conditions gives nothing without them)."""
        have = attributes or {}
        return frozenset(e for g in self.grants if g.applies(groups, have) for e in g.entitlements)

    @property
    def groups(self) -> frozenset[str]:
        """Groups whose membership matters to this target: its grants' and its scope's."""
        scoped = self.scope.groups if self.scope is not None else ()
        named = [g for _, g in self.options.group_entries] if isinstance(self.options, NamesGroups) else []
        return frozenset(g.group for g in self.grants) | frozenset(scoped) | frozenset(named)

    def source_paths(self) -> list[str]:
        paths = [s for a in self.attributes for s in a.sources]
        if isinstance(self.options, NamesGroups):
            paths += self.options.condition_paths
        paths += [c.attribute for g in self.grants for c in g.conditions]
        return paths + ([c.attribute for c in self.scope.conditions] if self.scope is not None else [])


@dataclass(frozen=True)
class SyncMapping:
    source: str  # where it was read from, for messages
    version: int = 2
    scope: Scope = field(default_factory=Scope)
    targets: Mapping[str, TargetSection] = field(default_factory=dict)
    risk: RiskPolicy = field(default_factory=RiskPolicy)
    sources: Mapping[str, SourceSection] = field(default_factory=lambda: dict(DEFAULT_SOURCES))
    sha256: str = ""  # of the file's bytes as they were read (load_mapping), for reports' provenance
    alerts: AlertsConfig | None = None  # the alerts: section (None: NOTIFY_WEBHOOK_URL alone, if set)

    def fed_by(self, source: str) -> dict[str, TargetSection]:
        """The targets the source feeds, by name, in file order."""
        return {name: s for name, s in self.targets.items() if s.source == source}

    def for_source(self, source: str) -> SyncMapping:
        """The mapping as one source reads it: only the targets it feeds (what it selects, the groups
        that matter and the entries that name them follow from those), the shared scope and policy."""
        return dataclasses.replace(self, targets=self.fed_by(source))

    def target(self, name: str) -> TargetSection:
        try:
            return self.targets[name]
        except KeyError:
            raise KeyError(f"the mapping file {self.source} has no target {name!r}") from None

    @property
    def relevant_groups(self) -> frozenset[str]:
        """Groups whose membership matters to any target: the scope's, every target's scope and grants."""
        groups = frozenset(self.scope.groups)
        for section in self.targets.values():
            groups |= section.groups
        return groups

    def group_entries(self) -> list[tuple[str, str]]:
        """Every place the file names a group, in file order: (entry, group object id), e.g.
        ``("roles[2].group", "<id>")``. Validation refuses a file with a bad entry rather than skip
        it, so positions here are positions in the file."""
        entries = [(f"scope.groups[{i}]", group) for i, group in enumerate(self.scope.groups)]
        for s in self.targets.values():
            if s.scope is not None:
                entries += [(f"{s.where}scope.groups[{i}]", group) for i, group in enumerate(s.scope.groups)]
            entries += [(f"{s.where}{s.grants_key}[{i}].group", g.group) for i, g in enumerate(s.grants)]
            if isinstance(s.options, NamesGroups):
                entries += list(s.options.group_entries)
        return entries

    def graph_select(self) -> tuple[list[str], bool]:
        """The ``$select`` list for reading a user, and whether the manager must be expanded."""
        props = dict.fromkeys(ALWAYS_SELECTED)
        manager = False
        paths = [c.attribute for c in self.scope.conditions]
        for section in self.targets.values():
            paths += section.source_paths()
        for path in paths:
            head = path.split(".", 1)[0]
            if head == "manager":
                manager = True
                continue
            props[head] = None
        return list(props), manager


# ------------------------------------------------------------------------------------------------
# Reading values
# ------------------------------------------------------------------------------------------------


def read_path(obj: Mapping[str, Any] | None, path: str) -> Any:
    """``a.b.c`` through nested mappings; ``None`` where any step is missing."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "") or value == []
