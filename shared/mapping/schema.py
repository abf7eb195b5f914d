"""A JSON Schema (draft 2020-12) of a version 2 mapping file, for editors: the YAML language server
completes and checks a file that names it (``# yaml-language-server: $schema=...``).

It is made from what the loader checks with: the key sets of :mod:`shared.mapping.load` and each
registered kind's own keys (its section's options, its matching keys, its word for grants, its
matchers and deprovision words), so a key the loader accepts is one the schema offers and an
unknown key is refused by both. What only the loader can judge (a Graph property's name, a group's
existence, a regular expression) it leaves to the loader, whose messages name the entry.

    python -m shared.mapping.schema > mapping.schema.json   # the committed copy; a test compares them
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, Final

from shared.alerting.schema import alerts_schema
from shared.core.work import SOURCE_NAME, TARGET_NAME
from shared.mapping.load import (
    ATTRIBUTE_KEYS,
    CONDITION_KEYS,
    DEPROVISION_KEYS,
    GRANT_KEYS,
    GUARD_KEYS,
    MATCHING_KEYS,
    RECONCILE_KEYS,
    RISK_KEYS,
    RISK_RULE_KEYS,
    SCOPE_KEYS,
    SECTION_KEYS,
    SOURCE_KEYS,
    V2_SECTIONS,
)
from shared.mapping.model import CONDITION_OPERATORS, RISK_LEVELS, USER_TYPES
from shared.sources.registry import KINDS as SOURCE_KINDS
from shared.sources.registry import SourceKind
from shared.targets.registry import KINDS, TargetKind

SCHEMA_ID: Final = "https://entra-sync.example/mapping.schema.json"
TEXT: Final = {"type": "string", "minLength": 1}
GROUP: Final = {"type": "string", "minLength": 1, "description": "a group: its object id in Entra ID"}


def closed(properties: Mapping[str, Any], keys: frozenset[str] | set[str], **extra: Any) -> dict[str, Any]:
    """An object with exactly ``keys`` (each described by ``properties``, anything else by {})."""
    return {
        "type": "object",
        "properties": {key: properties.get(key, {}) for key in sorted(keys)},
        "additionalProperties": False,
        **extra,
    }


def scope() -> dict[str, Any]:
    condition = closed(
        {"attribute": TEXT, "operator": {"enum": list(CONDITION_OPERATORS)}, "value": {}},
        CONDITION_KEYS,
        required=["attribute", "operator"],
    )
    return closed(
        {
            "user_types": {"type": "array", "items": {"enum": list(USER_TYPES)}, "minItems": 1},
            "groups": {"type": "array", "items": GROUP},
            "conditions": {"type": "array", "items": condition},
        },
        SCOPE_KEYS,
    )


def target_section(kind: TargetKind) -> dict[str, Any]:
    """A target section of ``kind``: the shared keys, its grants key and its own options."""
    count = {"type": "integer", "minimum": 0}
    share = {"type": "number", "minimum": 0, "maximum": 1}
    actions = {"enum": sorted({*kind.disable_words, "disable", "delete"})}
    attribute = closed(
        {"source": TEXT, "target": TEXT, "transforms": {"type": "array"}}, ATTRIBUTE_KEYS, required=["target"]
    )
    narrowing = {"anyOf": [TEXT, {"type": "array", "items": TEXT}]}
    grant = closed(
        {
            "group": GROUP,
            kind.grants_key: {"type": "array", "items": TEXT, "minItems": 1},
            "note": {"type": "string"},
            **dict.fromkeys(kind.grant_conditions, narrowing),
        },
        GRANT_KEYS | {kind.grants_key} | set(kind.grant_conditions),
        required=["group", kind.grants_key],
    )
    deprovision = {
        "action": actions,
        "hard_delete": actions,
        "revoke_sessions": {"type": "boolean"},
        "revoke_refresh_tokens": {"type": "boolean"},
    }
    reconcile = {
        "remediate": {"type": "array", "items": TEXT},
        "stale_after_days": count,
        "max_deprovisions": count,
        "max_deprovision_share": share,
    }
    parts: dict[str, Any] = {
        "kind": {"const": kind.name},
        "source": {"type": "string", "pattern": SOURCE_NAME.pattern, "description": "the source that feeds it"},
        "note": {"type": "string"},
        "attributes": {"type": "array", "items": attribute, "minItems": 1},
        kind.grants_key: {"type": "array", "items": grant, "description": f"groups and the {kind.grant_noun}s"},
        "matching": closed(
            {"precedence": {"type": "array", "items": {"enum": ["link", *kind.matchers]}, "uniqueItems": True}},
            MATCHING_KEYS | kind.matching_keys,
        ),
        "deprovision": closed(deprovision, DEPROVISION_KEYS),
        "reconcile": closed(reconcile, RECONCILE_KEYS),
        "guard": closed(
            {k: share if k.startswith("max_") and k.endswith("_share") else count for k in GUARD_KEYS}, GUARD_KEYS
        ),
        "scope": scope(),
    }
    return closed(
        parts,
        SECTION_KEYS | {kind.grants_key} | kind.option_keys,
        required=["attributes"],
        description=f"a {kind.title} target (its own keys: {', '.join(sorted(kind.option_keys)) or 'none'})",
    )


def source_section(kind: SourceKind) -> dict[str, Any]:
    return closed(
        {"kind": {"const": kind.name}, "note": {"type": "string"}},
        SOURCE_KEYS | kind.option_keys,
        description=f"a {kind.title} source",
    )


def mapping_schema(
    kinds: Mapping[str, TargetKind] = KINDS, source_kinds: Mapping[str, SourceKind] = SOURCE_KINDS
) -> dict[str, Any]:
    """The schema of a version 2 file with these kinds (the registered ones by default)."""
    target_name = TARGET_NAME.pattern.removeprefix("^").removesuffix("$")
    targets = {
        "type": "object",
        "minProperties": 1,
        "propertyNames": {"pattern": f"^{target_name}$"},
        # A target's name starts with its kind: the section is that kind's.
        "patternProperties": {f"^{name}(:.*)?$": target_section(kind) for name, kind in sorted(kinds.items())},
        "additionalProperties": False,
    }
    sources = {
        "type": "object",
        "minProperties": 1,
        "propertyNames": {"pattern": f"^{SOURCE_NAME.pattern}$"},
        "additionalProperties": {"anyOf": [source_section(k) for _, k in sorted(source_kinds.items())]},
    }
    rule = closed(
        {"level": {"enum": list(RISK_LEVELS)}, "event_type": TEXT, "actions": {"type": "array", "items": TEXT}},
        RISK_RULE_KEYS,
    )
    risk = closed(
        {"rules": {"type": "array", "items": rule}, "restore_on": {}, "mfa_flag": {}},
        RISK_KEYS,
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "entra-sync mapping file, version 2",
        **closed(
            {
                "version": {"const": 2},
                "sources": sources,
                "scope": scope(),
                "targets": targets,
                "risk": risk,
                "alerts": alerts_schema(),
            },
            V2_SECTIONS,
            required=["version", "targets"],
        ),
    }


def main() -> int:
    json.dump(mapping_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
