"""The JSON Schema of the mapping's ``alerts:`` section, made from the key sets the checker reads
(:mod:`shared.alerting.check`), so the two cannot disagree on a key; what only the checker can
judge (a route naming a channel that exists) it leaves to the checker."""

from __future__ import annotations

from typing import Any, Final

from shared.alerting.check import (
    ALERTS_KEYS,
    CHANNEL_NAME,
    DIGEST_KEYS,
    EVENT_SINKS,
    EVENTS_KEYS,
    LINK_KEYS,
    ROUTE_KEYS,
    channel_keys,
)
from shared.alerting.config import CHANNEL_KINDS, EVENT_KINDS, SECRET_SETTING, SEVERITIES, TICKET_SCOPES

SETTING: Final = {
    "type": "string",
    "pattern": f"^{SECRET_SETTING.pattern}$",
    "description": "the app setting that holds it",
}
TEXT: Final = {"type": "string", "minLength": 1}


def _closed(properties: dict[str, Any], keys: frozenset[str], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {key: properties.get(key, {}) for key in sorted(keys)},
        "additionalProperties": False,
        **extra,
    }


def channel(kind: str) -> dict[str, Any]:
    spec = CHANNEL_KINDS[kind]
    props: dict[str, Any] = {"kind": {"const": kind}, "note": {"type": "string"}}
    props |= dict.fromkeys((*spec.secrets, *spec.optional_secrets), SETTING)
    props |= dict.fromkeys(spec.options, TEXT)
    if kind == "email":
        props["to"] = {"type": "array", "items": TEXT, "minItems": 1}
    return _closed(props, channel_keys(kind), required=["kind", *spec.secrets, *spec.required])


def alerts_schema() -> dict[str, Any]:
    route = _closed(
        {
            "kinds": {"type": "array", "items": {"enum": list(EVENT_KINDS)}, "minItems": 1},
            "channels": {"type": "array", "items": TEXT, "minItems": 1},
            "min_severity": {"enum": list(SEVERITIES)},
            "tickets": {"enum": list(TICKET_SCOPES)},
            "note": {"type": "string"},
        },
        ROUTE_KEYS,
        required=["kinds", "channels"],
    )
    return _closed(
        {
            "channels": {
                "type": "object",
                "propertyNames": {"pattern": f"^{CHANNEL_NAME.pattern}$"},
                "additionalProperties": {"oneOf": [channel(kind) for kind in CHANNEL_KINDS]},
            },
            "routes": {"type": "array", "items": route},
            "digest": _closed(
                {
                    "window_minutes": {"type": "number", "minimum": 1, "maximum": 1440},
                    "burst": {"type": "integer", "minimum": 0, "maximum": 100},
                },
                DIGEST_KEYS,
            ),
            "links": _closed({key: {"type": "string", "pattern": "^https://"} for key in LINK_KEYS}, LINK_KEYS),
            "events": _closed(
                {
                    "kind": {"enum": list(EVENT_SINKS)},
                    "url_setting": SETTING,
                    "secret_setting": SETTING,
                    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50},
                },
                EVENTS_KEYS,
                required=["url_setting", "secret_setting"],
            ),
            "note": {"type": "string"},
        },
        ALERTS_KEYS,
        description="where alerts, findings and events go (see README: Alerts and events)",
    )
