"""The mapping file: what is synced, how it is shaped, which roles groups grant, and the policies.

The file (YAML or JSON, named by ``SYNC_MAPPING_FILE``) is validated once at start-up; every error
names the file, the entry (for example ``attributes[3].transforms[1]``) and what is wrong. All
functions here are pure: they take plain data and return plain data.

Example (see ``mapping.example.yaml`` for every option)::

    version: 1
    target: {connection: Username-Password-Authentication}
    scope: {user_types: [Member], groups: [<group object id>]}
    matching: {precedence: [link, app_metadata, enterprise_identity, email]}
    attributes:
      - {source: mail, target: email, transforms: [trim, lower]}
      - {source: department, target: user_metadata.department}
    roles:
      - {group: <group object id>, roles: [Sales Reader, Sales Writer]}
    deprovision: {action: block, hard_delete: block, revoke_sessions: true, revoke_refresh_tokens: true}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from shared.mapping.graph_schema import user_path_problem

SUPPORTED_VERSION: Final = 1

# Auth0 root attributes the Management API lets us write for a database-connection user.
ROOT_TARGETS: Final = frozenset(
    {"email", "email_verified", "name", "given_name", "family_name", "nickname", "picture", "username"}
)
METADATA_TARGETS: Final = ("user_metadata", "app_metadata")

MATCHERS: Final = ("link", "app_metadata", "enterprise_identity", "email")
USER_TYPES: Final = ("Member", "Guest")
DEPROVISION_ACTIONS: Final = ("block", "delete")

# Graph properties the worker always reads, whatever the mapping says.
ALWAYS_SELECTED: Final = ("id", "accountEnabled", "userType", "userPrincipalName", "mail")

_GRAPH_PROPERTY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# An Entra object id: a GUID in its usual 8-4-4-4-12 form (Graph writes them in lower case).
_OBJECT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}$")


class MappingError(ValueError):
    """The mapping file is wrong; the message names the file, the entry and the problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"mapping file {source} is invalid ({len(problems)} problem(s)):\n{lines}")


# ------------------------------------------------------------------------------------------------
# Model
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
class Matching:
    precedence: tuple[str, ...] = ("link", "app_metadata", "email")
    app_metadata_key: str = "entra_object_id"
    enterprise_connection: str | None = None  # e.g. "entra" (strategy waad): user_id "waad|<oid>"


@dataclass(frozen=True)
class Target:
    connection: str = "Username-Password-Authentication"
    # Create database users with user_id = the Entra object id: a deterministic key, so two
    # workers racing on one joiner cannot make two accounts (the second create gets 409).
    deterministic_user_id: bool = True


@dataclass(frozen=True)
class Deprovision:
    action: str = "block"  # disabled, soft-deleted or out of scope
    hard_delete: str = "block"  # deleted for good in Entra
    revoke_sessions: bool = True
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
    window: the reconcile section's deprovision thresholds, and one attribute changed or cleared on
    many accounts. The share rules apply once at least ``min_changes_for_share`` changes of a kind
    are counted, so two leavers in a small tenant are not a mass event."""

    window_minutes: int = 60
    max_deprovisions: int = 25
    max_deprovision_share: float = 0.05
    max_attribute_changes: int = 500  # one target path changed or cleared on this many accounts
    max_attribute_change_share: float = 0.5
    min_changes_for_share: int = 5


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


@dataclass(frozen=True)
class RoleGrant:
    group: str  # Entra group object id
    roles: tuple[str, ...]  # Auth0 role names (or ids starting with "rol_")


@dataclass(frozen=True)
class SyncMapping:
    source: str  # where it was read from, for messages
    target: Target = field(default_factory=Target)
    scope: Scope = field(default_factory=Scope)
    matching: Matching = field(default_factory=Matching)
    attributes: tuple[AttributeMapping, ...] = ()
    roles: tuple[RoleGrant, ...] = ()
    deprovision: Deprovision = field(default_factory=Deprovision)
    reconcile: ReconcilePolicy = field(default_factory=ReconcilePolicy)
    risk: RiskPolicy = field(default_factory=RiskPolicy)
    guard: GuardPolicy = field(default_factory=GuardPolicy)

    # -- derived ---------------------------------------------------------------------------------

    @property
    def managed_roles(self) -> frozenset[str]:
        """Every role some group grants: the only roles entra-sync ever adds or removes."""
        return frozenset(r for grant in self.roles for r in grant.roles)

    @property
    def role_groups(self) -> frozenset[str]:
        return frozenset(g.group for g in self.roles)

    @property
    def relevant_groups(self) -> frozenset[str]:
        """Groups whose membership matters: scope groups and role-granting groups."""
        return frozenset(self.scope.groups) | self.role_groups

    def group_entries(self) -> list[tuple[str, str]]:
        """Every place the file names a group, in file order: (entry, group object id), e.g.
        ``("roles[2].group", "<id>")``. Validation refuses a file with a bad entry rather than skip
        it, so positions here are positions in the file."""
        entries = [(f"scope.groups[{i}]", group) for i, group in enumerate(self.scope.groups)]
        entries += [(f"roles[{i}].group", grant.group) for i, grant in enumerate(self.roles)]
        return entries

    def roles_for(self, group_ids: frozenset[str]) -> frozenset[str]:
        return frozenset(r for grant in self.roles if grant.group in group_ids for r in grant.roles)

    def graph_select(self) -> tuple[list[str], bool]:
        """The ``$select`` list for reading a user, and whether the manager must be expanded."""
        props = dict.fromkeys(ALWAYS_SELECTED)
        manager = False
        paths = [s for a in self.attributes for s in a.sources] + [c.attribute for c in self.scope.conditions]
        for path in paths:
            head = path.split(".", 1)[0]
            if head == "manager":
                manager = True
                continue
            props[head] = None
        return list(props), manager

    def profile(self, user: Mapping[str, Any]) -> dict[str, Any]:
        """The target attributes (flat paths) this mapping derives from an Entra user."""
        return {a.target: a.value_from(user) for a in self.attributes}


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


# ------------------------------------------------------------------------------------------------
# Loading and validation
# ------------------------------------------------------------------------------------------------


def load_mapping(path: str | Path) -> SyncMapping:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(str(path), [f"cannot be read: {exc.strerror or exc}"]) from exc
    return parse_mapping(text, source=str(path), json_only=path.suffix.lower() == ".json")


def parse_mapping(text: str, source: str = "<mapping>", json_only: bool = False) -> SyncMapping:
    try:
        data = json.loads(text) if json_only else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise MappingError(source, [f"is not valid {'JSON' if json_only else 'YAML'}: {exc}"]) from exc
    return _Validator(source).mapping(data)


class _Validator:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, data: Any) -> SyncMapping:
        if not isinstance(data, dict):
            raise MappingError(self.source, ["the top level must be a mapping (key: value)"])
        known = {
            "version", "target", "scope", "matching", "attributes", "roles", "deprovision", "reconcile", "risk",
            "guard",
        }  # fmt: skip
        for key in data:
            if key not in known:
                self.fail(str(key), f"unknown section (expected one of: {', '.join(sorted(known))})")
        if data.get("version") != SUPPORTED_VERSION:
            self.fail("version", f"must be {SUPPORTED_VERSION}, got {data.get('version')!r}")
        target = self.target(data.get("target") or {})
        scope = self.scope(data.get("scope") or {})
        matching = self.matching(data.get("matching") or {})
        attributes = self.attributes(data.get("attributes"))
        roles = self.roles(data.get("roles") or [])
        deprovision = self.deprovision(data.get("deprovision") or {})
        reconcile = self.reconcile(data.get("reconcile") or {})
        risk = self.risk(data.get("risk") or {})
        guard = self.guard(data.get("guard") or {}, reconcile)
        if self.problems:
            raise MappingError(self.source, self.problems)
        return SyncMapping(self.source, target, scope, matching, attributes, roles, deprovision, reconcile, risk, guard)

    # -- helpers -----------------------------------------------------------------------------------

    def keys(self, where: str, data: Any, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail(where, f"must be a mapping, got {type(data).__name__}")
            return {}
        for key in data:
            if key not in allowed:
                self.fail(f"{where}.{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return data

    def text(self, where: str, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"must be a non-empty string, got {value!r}")
            return None
        return value.strip()

    def flag(self, where: str, value: Any, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(where, f"must be true or false, got {value!r}")
            return default
        return value

    def choice(self, where: str, value: Any, options: Sequence[str], default: str) -> str:
        if value is None:
            return default
        if value not in options:
            self.fail(where, f"must be one of {', '.join(options)}, got {value!r}")
            return default
        return str(value)

    def string_list(self, where: str, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(where, f"must be a list, got {type(value).__name__}")
            return ()
        out = []
        for i, item in enumerate(value):
            text = self.text(f"{where}[{i}]", item)
            if text is not None:
                out.append(text)
        return tuple(out)

    def graph_path(self, where: str, value: Any) -> str | None:
        path = self.text(where, value)
        if path is None:
            return None
        if not all(_GRAPH_PROPERTY.fullmatch(part) for part in path.split(".")):
            self.fail(where, f"{path!r} is not a Graph property path such as 'department' or 'manager.id'")
            return None
        problem = user_path_problem(path)
        if problem is not None:
            self.fail(where, problem)
            return None
        return path

    def group_id(self, where: str, value: Any) -> str | None:
        """A group's object id, in lower case as Graph writes ids (group ids are compared exactly)."""
        text = self.text(where, value)
        if text is None:
            return None
        if not _OBJECT_ID.fullmatch(text):
            self.fail(
                where,
                f"{text!r} is not a group object id: use the group's object id (a GUID, shown as Object ID "
                "on the group's overview in the Entra admin center), not its name",
            )
            return None
        return text.lower()

    # -- sections ----------------------------------------------------------------------------------

    def target(self, data: Any) -> Target:
        data = self.keys("target", data, {"connection", "deterministic_user_id"})
        connection = data.get("connection", Target.connection)
        return Target(
            connection=self.text("target.connection", connection) or Target.connection,
            deterministic_user_id=self.flag("target.deterministic_user_id", data.get("deterministic_user_id"), True),
        )

    def scope(self, data: Any) -> Scope:
        data = self.keys("scope", data, {"user_types", "groups", "conditions"})
        user_types = self.string_list("scope.user_types", data.get("user_types", ["Member"]))
        for i, t in enumerate(user_types):
            if t not in USER_TYPES:
                self.fail(f"scope.user_types[{i}]", f"must be Member or Guest, got {t!r}")
        if not user_types:
            self.fail("scope.user_types", "must name at least one of Member, Guest")
        raw_groups = data.get("groups")
        if raw_groups is not None and not isinstance(raw_groups, list):
            self.fail("scope.groups", f"must be a list of group object ids, got {type(raw_groups).__name__}")
            raw_groups = None
        groups = tuple(
            group for i, item in enumerate(raw_groups or []) if (group := self.group_id(f"scope.groups[{i}]", item))
        )
        conditions = []
        raw = data.get("conditions") or []
        if not isinstance(raw, list):
            self.fail("scope.conditions", "must be a list")
            raw = []
        for i, item in enumerate(raw):
            cond = self.condition(f"scope.conditions[{i}]", item)
            if cond is not None:
                conditions.append(cond)
        return Scope(user_types or ("Member",), groups, tuple(conditions))

    def condition(self, where: str, data: Any) -> Condition | None:
        data = self.keys(where, data, {"attribute", "operator", "value"})
        attribute = self.graph_path(f"{where}.attribute", data.get("attribute"))
        op = data.get("operator")
        if op not in CONDITION_OPERATORS:
            self.fail(f"{where}.operator", f"must be one of {', '.join(CONDITION_OPERATORS)}, got {op!r}")
            return None
        value = data.get("value")
        if op in {"in", "not_in"} and not (isinstance(value, list) and value):
            self.fail(f"{where}.value", f"operator {op} needs a non-empty list")
            return None
        if op in {"equals", "not_equals", "starts_with", "ends_with", "matches"} and value is None:
            self.fail(f"{where}.value", f"operator {op} needs a value")
            return None
        if op == "matches":
            try:
                re.compile(str(value))
            except re.error as exc:
                self.fail(f"{where}.value", f"is not a valid regular expression: {exc}")
                return None
        if attribute is None:
            return None
        return Condition(attribute, op, value)

    def matching(self, data: Any) -> Matching:
        data = self.keys("matching", data, {"precedence", "app_metadata_key", "enterprise_connection"})
        connection = data.get("enterprise_connection")
        if connection is not None:
            connection = self.text("matching.enterprise_connection", connection)
        # Default: every matcher, less the enterprise identity when no enterprise connection is named.
        default = [m for m in MATCHERS if m != "enterprise_identity" or connection is not None]
        precedence = self.string_list("matching.precedence", data.get("precedence", default))
        for i, name in enumerate(precedence):
            if name not in MATCHERS:
                self.fail(f"matching.precedence[{i}]", f"must be one of {', '.join(MATCHERS)}, got {name!r}")
        if len(set(precedence)) != len(precedence):
            self.fail("matching.precedence", "names a matcher twice")
        key = data.get("app_metadata_key", Matching.app_metadata_key)
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            self.fail("matching.app_metadata_key", f"must be a simple key (letters, digits, _ or -), got {key!r}")
            key = Matching.app_metadata_key
        if "enterprise_identity" in precedence and connection is None:
            self.fail("matching.enterprise_connection", "is required when precedence includes enterprise_identity")
        return Matching(precedence, key, connection)

    def attributes(self, data: Any) -> tuple[AttributeMapping, ...]:
        if not isinstance(data, list) or not data:
            self.fail("attributes", "must be a non-empty list of {source, target, transforms}")
            return ()
        result = []
        seen: dict[str, int] = {}
        for i, item in enumerate(data):
            where = f"attributes[{i}]"
            mapped = self.attribute(where, item)
            if mapped is None:
                continue
            if mapped.target in seen:
                self.fail(
                    f"{where}.target", f"{mapped.target!r} is already mapped by attributes[{seen[mapped.target]}]"
                )
                continue
            seen[mapped.target] = i
            result.append(mapped)
        return tuple(result)

    def attribute(self, where: str, data: Any) -> AttributeMapping | None:
        self.keys(where, data, {"source", "target", "transforms"})
        if not isinstance(data, dict):  # an empty {} is not skipped: it fails below, like any entry
            return None
        target = self.target_path(f"{where}.target", data.get("target"))
        raw_source = data.get("source")
        sources: tuple[str, ...] = ()
        if isinstance(raw_source, list):
            sources = tuple(p for j, s in enumerate(raw_source) if (p := self.graph_path(f"{where}.source[{j}]", s)))
        elif raw_source is not None:
            path = self.graph_path(f"{where}.source", raw_source)
            sources = (path,) if path else ()
        transforms = self.transforms(f"{where}.transforms", data.get("transforms") or [])
        if raw_source is None and not any(t.kind == "constant" for t in transforms):
            self.fail(where, "needs a source (a Graph property path or a list of them) or a constant transform")
            return None
        if target is None:
            return None
        return AttributeMapping(target, sources, transforms)

    def target_path(self, where: str, value: Any) -> str | None:
        path = self.text(where, value)
        if path is None:
            return None
        head, _, rest = path.partition(".")
        if head in METADATA_TARGETS:
            if not _METADATA_KEY.fullmatch(rest):
                self.fail(
                    where,
                    f"{path!r}: metadata targets are one key deep ({head}.<key>), because Auth0 merges "
                    "metadata one level deep",
                )
                return None
            return path
        if path not in ROOT_TARGETS:
            allowed = ", ".join(sorted(ROOT_TARGETS))
            self.fail(
                where,
                f"{path!r} is not a writable Auth0 attribute ({allowed}, user_metadata.<key>, app_metadata.<key>)",
            )
            return None
        return path

    def transforms(self, where: str, data: Any) -> tuple[Transform, ...]:
        if not isinstance(data, list):
            self.fail(where, "must be a list")
            return ()
        out = []
        for i, item in enumerate(data):
            t = self.transform(f"{where}[{i}]", item)
            if t is not None:
                out.append(t)
        return tuple(out)

    def transform(self, where: str, item: Any) -> Transform | None:
        simple = {"lower", "upper", "trim", "first"}
        if isinstance(item, str):
            if item in simple:
                return Transform(item)
            self.fail(where, f"unknown transform {item!r} (lower, upper, trim, first, default, lookup, join, constant)")
            return None
        if not isinstance(item, dict) or len(item) != 1:
            self.fail(where, "must be a name (lower) or a one-key mapping ({default: value})")
            return None
        kind, arg = next(iter(item.items()))
        if kind in {"default", "constant"}:
            return Transform(kind, arg)
        if kind == "join":
            if not isinstance(arg, str):
                self.fail(where, "join takes the separator string, e.g. {join: ' '}")
                return None
            return Transform("join", arg)
        if kind == "lookup":
            if not isinstance(arg, dict) or "table" not in arg or not isinstance(arg["table"], dict):
                self.fail(where, "lookup takes {table: {from: to, ...}, default: value}")
                return None
            extra = set(arg) - {"table", "default"}
            if extra:
                self.fail(where, f"lookup has unknown keys {sorted(extra)}")
            return Transform("lookup", {str(k): v for k, v in arg["table"].items()}, arg.get("default"))
        self.fail(where, f"unknown transform {kind!r} (lower, upper, trim, first, default, lookup, join, constant)")
        return None

    def roles(self, data: Any) -> tuple[RoleGrant, ...]:
        if not isinstance(data, list):
            self.fail("roles", "must be a list of {group, roles}")
            return ()
        grants = []
        for i, item in enumerate(data):
            where = f"roles[{i}]"
            entry = self.keys(where, item, {"group", "roles", "note"})
            if not isinstance(item, dict):  # an empty {} is not skipped: it fails below, like any entry
                continue
            group = self.group_id(f"{where}.group", entry.get("group"))
            roles = self.string_list(f"{where}.roles", entry.get("roles"))
            if not roles:
                self.fail(f"{where}.roles", "must name at least one Auth0 role")
            if group and roles:
                grants.append(RoleGrant(group, roles))
        return tuple(grants)

    def deprovision(self, data: Any) -> Deprovision:
        data = self.keys("deprovision", data, {"action", "hard_delete", "revoke_sessions", "revoke_refresh_tokens"})
        return Deprovision(
            action=self.choice("deprovision.action", data.get("action"), DEPROVISION_ACTIONS, "block"),
            hard_delete=self.choice("deprovision.hard_delete", data.get("hard_delete"), DEPROVISION_ACTIONS, "block"),
            revoke_sessions=self.flag("deprovision.revoke_sessions", data.get("revoke_sessions"), True),
            revoke_refresh_tokens=self.flag(
                "deprovision.revoke_refresh_tokens", data.get("revoke_refresh_tokens"), True
            ),
        )

    def number(self, where: str, value: Any, default: float, low: float, high: float) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.fail(where, f"must be a number from {low:g} to {high:g}, got {value!r}")
            return default
        return float(value)

    def reconcile(self, data: Any) -> ReconcilePolicy:
        data = self.keys(
            "reconcile", data, {"remediate", "stale_after_days", "max_deprovisions", "max_deprovision_share"}
        )
        remediate = self.string_list("reconcile.remediate", data.get("remediate", list(SAFE_BY_DEFAULT)))
        for i, name in enumerate(remediate):
            if name not in DRIFT_CLASSES:
                self.fail(f"reconcile.remediate[{i}]", f"must be one of {', '.join(DRIFT_CLASSES)}, got {name!r}")
            elif name in NEVER_AUTO_FIXED:
                self.fail(f"reconcile.remediate[{i}]", f"{name} drift is never repaired automatically")
        return ReconcilePolicy(
            remediate=remediate,
            stale_after_days=int(self.number("reconcile.stale_after_days", data.get("stale_after_days"), 90, 1, 3650)),
            max_deprovisions=int(self.number("reconcile.max_deprovisions", data.get("max_deprovisions"), 25, 0, 10**7)),
            max_deprovision_share=self.number(
                "reconcile.max_deprovision_share", data.get("max_deprovision_share"), 0.05, 0.0, 1.0
            ),
        )

    def guard(self, data: Any, reconcile: ReconcilePolicy) -> GuardPolicy:
        """Defaults: the reconcile section's deprovision thresholds, so both paths hold alike."""
        data = self.keys(
            "guard",
            data,
            {"window_minutes", "max_deprovisions", "max_deprovision_share", "max_attribute_changes",
             "max_attribute_change_share", "min_changes_for_share"},
        )  # fmt: skip
        d = GuardPolicy()

        def count(key: str, default: int, low: int = 0) -> int:
            return int(self.number(f"guard.{key}", data.get(key), default, low, 10**7))

        def share(key: str, default: float) -> float:
            return self.number(f"guard.{key}", data.get(key), default, 0.0, 1.0)

        return GuardPolicy(
            window_minutes=count("window_minutes", d.window_minutes, 1),
            max_deprovisions=count("max_deprovisions", reconcile.max_deprovisions),
            max_deprovision_share=share("max_deprovision_share", reconcile.max_deprovision_share),
            max_attribute_changes=count("max_attribute_changes", d.max_attribute_changes),
            max_attribute_change_share=share("max_attribute_change_share", d.max_attribute_change_share),
            min_changes_for_share=count("min_changes_for_share", d.min_changes_for_share, 1),
        )

    def risk(self, data: Any) -> RiskPolicy:
        data = self.keys("risk", data, {"rules", "restore_on", "mfa_flag"})
        default = RiskPolicy()
        rules = default.rules
        if "rules" in data:
            raw = data["rules"]
            if not isinstance(raw, list):
                self.fail("risk.rules", "must be a list of {level, event_type, actions}")
                raw = []
            parsed = []
            for i, item in enumerate(raw):
                where = f"risk.rules[{i}]"
                entry = self.keys(where, item, {"level", "event_type", "actions"})
                level = entry.get("level")
                if level is not None and level not in RISK_LEVELS:
                    self.fail(f"{where}.level", f"must be one of {', '.join(RISK_LEVELS)}, got {level!r}")
                event_type = entry.get("event_type")
                if event_type is not None:
                    event_type = self.text(f"{where}.event_type", event_type)
                actions = self.string_list(f"{where}.actions", entry.get("actions"))
                for j, action in enumerate(actions):
                    if action not in RISK_ACTIONS:
                        self.fail(f"{where}.actions[{j}]", f"must be one of {', '.join(RISK_ACTIONS)}, got {action!r}")
                parsed.append(RiskRule(level, event_type, actions))
            rules = tuple(parsed)
        restore_on = self.string_list("risk.restore_on", data.get("restore_on"))
        for i, state in enumerate(restore_on):
            if state not in {"dismissed", "remediated", "confirmedSafe"}:
                self.fail(f"risk.restore_on[{i}]", f"must be dismissed, remediated or confirmedSafe, got {state!r}")
        flag = data.get("mfa_flag", default.mfa_flag)
        if not isinstance(flag, str) or not _METADATA_KEY.fullmatch(flag):
            self.fail("risk.mfa_flag", f"must be a simple app_metadata key, got {flag!r}")
            flag = default.mfa_flag
        return RiskPolicy(rules, restore_on, flag)
