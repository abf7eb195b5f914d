"""Reading and checking the mapping file.

The file (YAML or JSON, named by ``SYNC_MAPPING_FILE``) is validated once at start-up; every error
names the file, the entry (``targets.auth0.attributes[3].transforms[1]``) and what is wrong, all
problems at once. A source's section is checked by its kind (``shared.sources``): its options, and
the paths the targets it feeds may read; a target's section by its kind (``shared.targets``): which
paths it can write, which matchers it offers, its own options.

Version 2 (named sources, shared scope, named targets)::

    version: 2
    sources:                      # optional: without it, the one source entra (Entra ID through Graph)
      entra: {}
      hr-push: {kind: scim_inbox}
    scope: {user_types: [Member], groups: [<group object id>]}
    targets:
      auth0:
        source: entra             # the one source that feeds the target (default: entra)
        connection: Username-Password-Authentication
        matching: {precedence: [link, app_metadata, email]}
        attributes:
          - {source: mail, target: email, transforms: [trim, lower]}
        roles:
          - {group: <group object id>, roles: [Sales Reader]}
        deprovision: {action: block}
    risk: {...}
    alerts: {...}                # channels, routes, digest, event feed (shared.alerting.check)

Version 1 (one Auth0 target, its sections at the top level) still loads, as the single target
``auth0``: move ``target``'s keys and the sections ``matching``, ``attributes``, ``roles``,
``deprovision``, ``reconcile`` and ``guard`` under ``targets.auth0`` to convert it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from shared.alerting.check import check_alerts
from shared.core.work import DEFAULT_SOURCE, SOURCE_NAME, TARGET_NAME
from shared.mapping.check import Checker
from shared.mapping.model import (
    CONDITION_OPERATORS,
    DEFAULT_SOURCES,
    DEPROVISION_ACTIONS,
    DRIFT_CLASSES,
    NEVER_AUTO_FIXED,
    RISK_ACTIONS,
    RISK_LEVELS,
    SAFE_BY_DEFAULT,
    USER_TYPES,
    AttributeMapping,
    Condition,
    Deprovision,
    Grant,
    GuardPolicy,
    MappingError,
    ReconcilePolicy,
    RiskPolicy,
    RiskRule,
    Scope,
    SourceSection,
    SyncMapping,
    TargetSection,
    Transform,
)
from shared.sources.registry import KINDS as SOURCE_KINDS
from shared.sources.registry import SourceKind
from shared.targets.registry import KINDS, TargetKind

VERSIONS: Final = (1, 2)
V1_SECTIONS: Final = frozenset(
    {"version", "target", "scope", "matching", "attributes", "roles", "deprovision", "reconcile", "risk", "guard"}
)
V2_SECTIONS: Final = frozenset({"version", "sources", "scope", "targets", "risk", "alerts"})
SECTION_KEYS: Final = frozenset(
    {"kind", "source", "attributes", "matching", "deprovision", "reconcile", "guard", "scope", "note"}
)
SOURCE_KEYS: Final = frozenset({"kind", "note"})
# The keys of each part of a section, as the checker reads them (the JSON Schema of shared.mapping.schema
# is made from these same sets, so the two cannot disagree on a key).
MATCHING_KEYS: Final = frozenset({"precedence"})
SCOPE_KEYS: Final = frozenset({"user_types", "groups", "conditions"})
CONDITION_KEYS: Final = frozenset({"attribute", "operator", "value"})
ATTRIBUTE_KEYS: Final = frozenset({"source", "target", "transforms"})
GRANT_KEYS: Final = frozenset({"group", "note"})  # and the kind's grants key ("roles", "groups")
DEPROVISION_KEYS: Final = frozenset({"action", "hard_delete", "revoke_sessions", "revoke_refresh_tokens"})
RECONCILE_KEYS: Final = frozenset({"remediate", "stale_after_days", "max_deprovisions", "max_deprovision_share"})
GUARD_KEYS: Final = frozenset(
    {"window_minutes", "max_deprovisions", "max_deprovision_share", "max_attribute_changes",
     "max_attribute_change_share", "min_changes_for_share"}
)  # fmt: skip
RISK_KEYS: Final = frozenset({"rules", "restore_on", "mfa_flag"})
RISK_RULE_KEYS: Final = frozenset({"level", "event_type", "actions"})
V1_TARGET: Final = "auth0"

# The sources of a section: where its paths are read and what its groups are.
_Fed = tuple[SourceKind, ...]


def load_mapping(
    path: str | Path,
    kinds: Mapping[str, TargetKind] | None = None,
    source_kinds: Mapping[str, SourceKind] | None = None,
) -> SyncMapping:
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except OSError as exc:
        raise MappingError(str(path), [f"cannot be read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise MappingError(str(path), [f"is not UTF-8: {exc}"]) from exc
    json_only = path.suffix.lower() == ".json"
    mapping = parse_mapping(text, source=str(path), json_only=json_only, kinds=kinds, source_kinds=source_kinds)
    # What the app runs with is what it read now: a report names these bytes, not the file's later state.
    return dataclasses.replace(mapping, sha256=hashlib.sha256(data).hexdigest())


def parse_mapping(
    text: str,
    source: str = "<mapping>",
    json_only: bool = False,
    kinds: Mapping[str, TargetKind] | None = None,
    source_kinds: Mapping[str, SourceKind] | None = None,
) -> SyncMapping:
    try:
        data = json.loads(text) if json_only else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise MappingError(source, [f"is not valid {'JSON' if json_only else 'YAML'}: {exc}"]) from exc
    checker = MappingChecker(source, SOURCE_KINDS if source_kinds is None else source_kinds)
    return checker.mapping(data, KINDS if kinds is None else kinds)


class MappingChecker(Checker):
    """Checks a whole file: its version, sources, scope, targets (each through its kind, its paths
    and groups through its source's kind) and risk policy."""

    def __init__(self, source: str, source_kinds: Mapping[str, SourceKind] = SOURCE_KINDS):
        super().__init__(source)
        self.source_kinds = source_kinds
        self.fed: dict[str, SourceKind] = {}  # source name -> its kind, once the sources are read

    # -- the file ------------------------------------------------------------------------------------

    def mapping(self, data: Any, kinds: Mapping[str, TargetKind]) -> SyncMapping:
        if not isinstance(data, dict):
            raise MappingError(self.source, ["the top level must be a mapping (key: value)"])
        version = data.get("version")
        if version not in VERSIONS:
            self.fail("version", f"must be 1 or 2, got {version!r}")
        known = V2_SECTIONS if version == 2 else V1_SECTIONS
        for key in data:
            if key not in known:
                self.fail(str(key), f"unknown section (expected one of: {', '.join(sorted(known))})")
        sources = self.sources(data["sources"]) if version == 2 and "sources" in data else self.default_sources()
        scope = self.scope("scope.", data.get("scope") or {}, tuple({k.name: k for k in self.fed.values()}.values()))
        if version == 2:
            targets = self.targets(data.get("targets"), kinds)
        else:
            v1 = {k: v for k, v in data.items() if k in V1_SECTIONS - {"version", "scope", "risk", "target"}}
            kind = kinds[V1_TARGET]
            target = self.keys("target", data.get("target") or {}, kind.option_keys)
            section = self.section(V1_TARGET, kind, v1, "", options=(target, "target."))
            targets = {V1_TARGET: section} if section is not None else {}
        risk = self.risk(data.get("risk") or {})
        alerts = check_alerts(self, data.get("alerts")) if version == 2 else None
        if self.problems:
            raise MappingError(self.source, self.problems)
        return SyncMapping(self.source, 2 if version == 2 else 1, scope, targets, risk, sources, alerts=alerts)

    def default_sources(self) -> dict[str, SourceSection]:
        """A file without ``sources:`` reads from the one source ``entra``, as every file did."""
        kind = self.source_kinds.get(DEFAULT_SOURCE)
        if kind is not None:
            self.fed[DEFAULT_SOURCE] = kind
        return dict(DEFAULT_SOURCES)

    def sources(self, data: Any) -> dict[str, SourceSection]:
        if not data or not isinstance(data, dict):
            got = "nothing" if not data else type(data).__name__
            self.fail("sources", f"must be a mapping of source name to its section (such as entra: {{}}), got {got}")
            return {}
        out: dict[str, SourceSection] = {}
        for name, section in data.items():
            entry = f"sources.{name}"
            if not isinstance(name, str) or not SOURCE_NAME.fullmatch(name):
                self.fail(entry, "a source name is lower-case letters, digits and dashes, such as entra or hr-push")
                continue
            section = {} if section is None else section
            if not isinstance(section, dict):
                self.fail(entry, f"must be a mapping, got {type(section).__name__}")
                continue
            kind_name = str(section.get("kind") or name)
            kind = self.source_kinds.get(kind_name)
            if kind is None:
                known = ", ".join(sorted(self.source_kinds))
                self.fail(f"{entry}.kind", f"{kind_name!r} is not a source kind (one of: {known})")
                continue
            self.fed[name] = kind  # its targets are checked against its kind, whatever else is wrong here
            if kind_name == DEFAULT_SOURCE and name != DEFAULT_SOURCE:
                # Its subscriptions, delta cursors and risk feed are the tenant's, kept under its name.
                self.fail(entry, f"the {kind.title} source is the tenant's own: name it {DEFAULT_SOURCE}")
                continue
            values = self.keys(entry, section, SOURCE_KEYS | kind.option_keys)
            count = len(self.problems)
            options = kind.options(self, f"{entry}.", {k: v for k, v in values.items() if k not in SOURCE_KEYS})
            if len(self.problems) == count:
                out[name] = SourceSection(name, kind.name, f"{entry}.", options)
        return out

    def targets(self, data: Any, kinds: Mapping[str, TargetKind]) -> dict[str, TargetSection]:
        if not data:
            self.fail("targets", "a version 2 file names at least one target (for example targets: {auth0: ...})")
            return {}
        if not isinstance(data, dict):
            self.fail("targets", f"must be a mapping of target name to its section, got {type(data).__name__}")
            return {}
        out: dict[str, TargetSection] = {}
        for name, section in data.items():
            where = f"targets.{name}."
            if not isinstance(name, str) or not TARGET_NAME.fullmatch(name):
                self.fail(
                    f"targets.{name}",
                    "a target name is a kind and an optional name, in lower case: auth0, scim:hr-app",
                )
                continue
            if not isinstance(section, dict):
                self.fail(f"targets.{name}", f"must be a mapping, got {type(section).__name__}")
                continue
            named = name.split(":", 1)[0]
            kind_name = str(section.get("kind") or named)
            if ":" in name and kind_name != named:
                self.fail(f"{where}kind", f"{kind_name!r} differs from the kind the name gives ({named!r})")
                continue
            kind = kinds.get(kind_name)
            if kind is None:
                self.fail(f"{where}kind", f"{kind_name!r} is not a target kind (one of: {', '.join(sorted(kinds))})")
                continue
            parsed = self.section(name, kind, section, where, options=(section, where))
            if parsed is not None:
                out[name] = parsed
        for kind in kinds.values():  # what sections of one kind cannot both have (a kind may say)
            clashes = getattr(kind, "clashes", None)
            if clashes is not None:
                for entry, message in clashes([s for s in out.values() if s.kind == kind.name]):
                    self.fail(entry, message)
        return out

    def section(
        self, name: str, kind: TargetKind, data: dict[str, Any], where: str, *, options: tuple[Mapping[str, Any], str]
    ) -> TargetSection | None:
        allowed = (SECTION_KEYS | {kind.grants_key} | kind.option_keys) if where else set(data)
        for key in data:
            if key not in allowed:
                self.fail(f"{where}{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        count = len(self.problems)
        source, fed = self.fed_by(where, data.get("source"))
        option_values, option_where = options
        matching = self.keys(f"{where}matching", data.get("matching") or {}, MATCHING_KEYS | kind.matching_keys)
        parsed_options = kind.options(self, option_where, option_values, matching, f"{where}matching.")
        precedence = self.precedence(f"{where}matching.", matching, kind, parsed_options)
        attributes = self.attributes(where, data.get("attributes"), kind, fed)
        grants = self.grants(where, data.get(kind.grants_key) or [], kind, fed)
        kind.check_grants(self, f"{where}{kind.grants_key}", grants)
        deprovision = self.deprovision(f"{where}deprovision", data.get("deprovision") or {}, kind)
        reconcile = self.reconcile(f"{where}reconcile", data.get("reconcile") or {})
        guard = self.guard(f"{where}guard", data.get("guard") or {})
        scope = self.scope(f"{where}scope.", data["scope"], fed) if where and "scope" in data else None
        if len(self.problems) > count:
            return None
        return TargetSection(
            name=name, kind=kind.name, where=where, attributes=attributes, grants=grants, matching=precedence,
            deprovision=deprovision, reconcile=reconcile, guard=guard, scope=scope, options=parsed_options,
            grants_key=kind.grants_key, source=source,
        )  # fmt: skip

    def fed_by(self, where: str, value: Any) -> tuple[str, _Fed]:
        """The source a target names (``entra`` unless it says), and its kind; none where the file
        has no such source (its paths and groups then go unchecked: the name is the problem)."""
        if value is None:
            name = DEFAULT_SOURCE
        elif not isinstance(value, str) or not SOURCE_NAME.fullmatch(value):
            self.fail(f"{where}source", f"must be the name of a source such as entra, got {value!r}")
            return DEFAULT_SOURCE, ()
        else:
            name = value
        kind = self.fed.get(name)
        if kind is None:
            entry = f"{where}source" if where else "sources"
            named = ", ".join(sorted(self.fed)) or "none"
            self.fail(entry, f"{name!r} is not a source the file names under sources (it names: {named})")
            return name, ()
        return name, (kind,)

    def source_path(self, where: str, value: Any, fed: _Fed) -> str | None:
        """A path read from the identities of ``fed`` (each kind must have it)."""
        path = self.text(where, value)
        if path is None:
            return None
        for kind in fed:
            problem = kind.path_problem(path)
            if problem is not None:
                self.fail(where, problem if kind.name == DEFAULT_SOURCE else f"{kind.title} source: {problem}")
                return None
        return path

    def group_id(self, where: str, value: Any, fed: _Fed) -> str | None:
        """A group the file names, as the identities of ``fed`` carry it (each kind must accept it)."""
        text = self.text(where, value)
        group = text
        for kind in fed:
            if text is None or group is None:
                return None
            group = kind.group_id(self, where, text)
        return group

    # -- shared parts ------------------------------------------------------------------------------------

    def scope(self, where: str, data: Any, fed: _Fed) -> Scope:
        data = self.keys(where.rstrip("."), data, SCOPE_KEYS)
        user_types = self.string_list(f"{where}user_types", data.get("user_types", ["Member"]))
        for i, t in enumerate(user_types):
            if t not in USER_TYPES:
                self.fail(f"{where}user_types[{i}]", f"must be Member or Guest, got {t!r}")
        if not user_types:
            self.fail(f"{where}user_types", "must name at least one of Member, Guest")
        raw_groups = data.get("groups")
        if raw_groups is not None and not isinstance(raw_groups, list):
            self.fail(f"{where}groups", f"must be a list of group object ids, got {type(raw_groups).__name__}")
            raw_groups = None
        groups = tuple(
            group
            for i, item in enumerate(raw_groups or [])
            if (group := self.group_id(f"{where}groups[{i}]", item, fed))
        )
        conditions = []
        raw = data.get("conditions") or []
        if not isinstance(raw, list):
            self.fail(f"{where}conditions", "must be a list")
            raw = []
        for i, item in enumerate(raw):
            cond = self.condition(f"{where}conditions[{i}]", item, fed)
            if cond is not None:
                conditions.append(cond)
        return Scope(user_types or ("Member",), groups, tuple(conditions))

    def condition(self, where: str, data: Any, fed: _Fed) -> Condition | None:
        data = self.keys(where, data, CONDITION_KEYS)
        attribute = self.source_path(f"{where}.attribute", data.get("attribute"), fed)
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

    # -- a target's section ----------------------------------------------------------------------------

    def precedence(self, where: str, data: Mapping[str, Any], kind: TargetKind, options: Any) -> tuple[str, ...]:
        matchers = ("link", *kind.matchers)
        default = list(kind.default_matching(options))
        precedence = self.string_list(f"{where}precedence", data.get("precedence", default))
        for i, name in enumerate(precedence):
            if name not in matchers:
                self.fail(f"{where}precedence[{i}]", f"must be one of {', '.join(matchers)}, got {name!r}")
        if len(set(precedence)) != len(precedence):
            self.fail(f"{where}precedence", "names a matcher twice")
        problem = kind.matching_problem(options, precedence)
        if problem is not None:
            self.fail(f"{where}{problem[0]}", problem[1])
        return precedence

    def attributes(self, where: str, data: Any, kind: TargetKind, fed: _Fed) -> tuple[AttributeMapping, ...]:
        if not isinstance(data, list) or not data:
            self.fail(f"{where}attributes", "must be a non-empty list of {source, target, transforms}")
            return ()
        result = []
        seen: dict[str, int] = {}
        for i, item in enumerate(data):
            entry = f"{where}attributes[{i}]"
            mapped = self.attribute(entry, item, kind, fed)
            if mapped is None:
                continue
            if mapped.target in seen:
                self.fail(
                    f"{entry}.target", f"{mapped.target!r} is already mapped by attributes[{seen[mapped.target]}]"
                )
                continue
            seen[mapped.target] = i
            result.append(mapped)
        return tuple(result)

    def attribute(self, where: str, data: Any, kind: TargetKind, fed: _Fed) -> AttributeMapping | None:
        self.keys(where, data, ATTRIBUTE_KEYS)
        if not isinstance(data, dict):  # an empty {} is not skipped: it fails below, like any entry
            return None
        target = self.text(f"{where}.target", data.get("target"))
        if target is not None and (problem := kind.path_problem(target)) is not None:
            self.fail(f"{where}.target", problem)
            target = None
        raw_source = data.get("source")
        sources: tuple[str, ...] = ()
        if isinstance(raw_source, list):
            sources = tuple(
                p for j, s in enumerate(raw_source) if (p := self.source_path(f"{where}.source[{j}]", s, fed))
            )
        elif raw_source is not None:
            path = self.source_path(f"{where}.source", raw_source, fed)
            sources = (path,) if path else ()
        transforms = self.transforms(f"{where}.transforms", data.get("transforms") or [])
        if raw_source is None and not any(t.kind == "constant" for t in transforms):
            self.fail(where, "needs a source (a Graph property path or a list of them) or a constant transform")
            return None
        if target is None:
            return None
        return AttributeMapping(target, sources, transforms)

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

    def grants(self, where: str, data: Any, kind: TargetKind, fed: _Fed) -> tuple[Grant, ...]:
        key = kind.grants_key
        if not isinstance(data, list):
            self.fail(f"{where}{key}", f"must be a list of {{group, {key}}}")
            return ()
        grants = []
        for i, item in enumerate(data):
            entry = f"{where}{key}[{i}]"
            values = self.keys(entry, item, GRANT_KEYS | {key} | set(kind.grant_conditions))
            if not isinstance(item, dict):  # an empty {} is not skipped: it fails below, like any entry
                continue
            group = self.group_id(f"{entry}.group", values.get("group"), fed)
            names = self.string_list(f"{entry}.{key}", values.get(key))
            if not names:
                self.fail(f"{entry}.{key}", f"must name at least one {kind.grant_noun}")
            if group and names:
                grants.append(Grant(group, names, self.narrowing(entry, values, kind.grant_conditions)))
        return tuple(grants)

    def deprovision(self, where: str, data: Any, kind: TargetKind) -> Deprovision:
        data = self.keys(where, data, DEPROVISION_KEYS)
        words = (kind.disable_words[0], "delete")  # the kind's own word; "disable" is understood too

        def action(key: str) -> str:
            value = data.get(key)
            if value in (*kind.disable_words, *DEPROVISION_ACTIONS):
                return "delete" if value == "delete" else "disable"
            default = words[1] if kind.deprovision_defaults[key == "hard_delete"] == "delete" else words[0]
            return "delete" if self.choice(f"{where}.{key}", value, words, default) == "delete" else "disable"

        caps = kind.capabilities

        def revoke(key: str, offered: bool) -> bool:
            wanted = self.flag(f"{where}.{key}", data.get(key), offered)
            if wanted and not offered:
                self.fail(f"{where}.{key}", f"a {kind.name} target cannot revoke; leave it out or set it to false")
            return wanted and offered

        return Deprovision(
            action=action("action"),
            hard_delete=action("hard_delete"),
            revoke_sessions=revoke("revoke_sessions", caps.revoke_sessions),
            revoke_refresh_tokens=revoke("revoke_refresh_tokens", caps.revoke_refresh_tokens),
        )

    def reconcile(self, where: str, data: Any) -> ReconcilePolicy:
        data = self.keys(where, data, RECONCILE_KEYS)
        remediate = self.string_list(f"{where}.remediate", data.get("remediate", list(SAFE_BY_DEFAULT)))
        for i, name in enumerate(remediate):
            if name not in DRIFT_CLASSES:
                self.fail(f"{where}.remediate[{i}]", f"must be one of {', '.join(DRIFT_CLASSES)}, got {name!r}")
            elif name in NEVER_AUTO_FIXED:
                self.fail(f"{where}.remediate[{i}]", f"{name} drift is never repaired automatically")
        return ReconcilePolicy(
            remediate=remediate,
            stale_after_days=int(self.number(f"{where}.stale_after_days", data.get("stale_after_days"), 90, 1, 3650)),
            max_deprovisions=int(self.number(f"{where}.max_deprovisions", data.get("max_deprovisions"), 25, 0, 10**7)),
            max_deprovision_share=self.number(
                f"{where}.max_deprovision_share", data.get("max_deprovision_share"), 0.05, 0.0, 1.0
            ),
        )

    def guard(self, where: str, data: Any) -> GuardPolicy:
        """The guard's own limits (defaults: :class:`GuardPolicy`), not the reconcile section's: the
        live path holds leavers, which costs more than holding a nightly run's repairs."""
        data = self.keys(where, data, GUARD_KEYS)
        d = GuardPolicy()

        def count(key: str, default: int, low: int = 0) -> int:
            return int(self.number(f"{where}.{key}", data.get(key), default, low, 10**7))

        def share(key: str, default: float) -> float:
            return self.number(f"{where}.{key}", data.get(key), default, 0.0, 1.0)

        return GuardPolicy(
            window_minutes=count("window_minutes", d.window_minutes, 1),
            max_deprovisions=count("max_deprovisions", d.max_deprovisions),
            max_deprovision_share=share("max_deprovision_share", d.max_deprovision_share),
            max_attribute_changes=count("max_attribute_changes", d.max_attribute_changes),
            max_attribute_change_share=share("max_attribute_change_share", d.max_attribute_change_share),
            min_changes_for_share=count("min_changes_for_share", d.min_changes_for_share, 1),
            configured=frozenset(str(k) for k in data),
        )

    # -- risk ------------------------------------------------------------------------------------------

    def risk(self, data: Any) -> RiskPolicy:
        data = self.keys("risk", data, RISK_KEYS)
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
                entry = self.keys(where, item, RISK_RULE_KEYS)
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
        flag = self.simple_key(
            "risk.mfa_flag", data.get("mfa_flag", default.mfa_flag), default.mfa_flag, "app_metadata key"
        )
        return RiskPolicy(rules, restore_on, flag)
