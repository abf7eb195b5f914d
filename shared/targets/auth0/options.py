"""Reading the Auth0 section's per-user policy (``connections``, ``organizations``, ``policy``,
``welcome``, ``mfa_enrollment_ticket``) with the mapping's checker: every problem at once, each
naming its entry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from shared.targets.auth0.policy import (
    FLAGS,
    WELCOME_KINDS,
    ConnectionPick,
    FlagEntry,
    Membership,
    Policy,
    Welcome,
)

if TYPE_CHECKING:
    from shared.mapping.check import Checker

POLICY_KEYS: Final = frozenset({"connections", "organizations", "policy", "welcome", "mfa_enrollment_ticket"})
MAX_TICKET_TTL_S: Final = 30 * 86_400


def read_policy(check: Checker, where: str, values: Mapping[str, Any]) -> Policy:
    connections = tuple(
        ConnectionPick(group, str(entry["connection"]), f"{at}.group")
        for at, entry, group in _entries(check, f"{where}connections", values.get("connections"), {"connection"})
        if check.text(f"{at}.connection", entry.get("connection"))
    )
    organizations = []
    raw_orgs = values.get("organizations")
    for at, entry, group in _entries(check, f"{where}organizations", raw_orgs, {"organization", "roles"}):
        name = check.text(f"{at}.organization", entry.get("organization"))
        roles = check.string_list(f"{at}.roles", entry.get("roles"))
        if name:
            organizations.append(Membership(group, name, roles, f"{at}.group"))
    flags = []
    for at, entry, group in _entries(check, f"{where}policy", values.get("policy"), set(FLAGS)):
        set_here: dict[str, Any] = {}
        if "mfa_required" in entry:
            set_here["mfa_required"] = check.flag(f"{at}.mfa_required", entry["mfa_required"], False)
        if "allowed_connections" in entry:
            set_here["allowed_connections"] = list(
                check.string_list(f"{at}.allowed_connections", entry["allowed_connections"])
            )
        if "step_up" in entry:
            set_here["step_up"] = check.text(f"{at}.step_up", entry["step_up"])
        if not set_here:
            check.fail(at, f"sets no flag (one or more of {', '.join(FLAGS)})")
        flags.append(FlagEntry(group, set_here, f"{at}.group"))
    welcome = _welcome(check, f"{where}welcome", values.get("welcome") or {})
    return Policy(
        connections=connections,
        organizations=tuple(organizations),
        flags=tuple(flags),
        welcome=welcome,
        mfa_enrollment_ticket=check.flag(f"{where}mfa_enrollment_ticket", values.get("mfa_enrollment_ticket"), False),
    )


def _entries(check: Checker, where: str, data: Any, keys: set[str]) -> list[tuple[str, dict[str, Any], str]]:
    """(entry, its values, its group) for each well-formed ``{group, ...}`` entry of a list."""
    if data is None:
        return []
    if not isinstance(data, list):
        check.fail(where, f"must be a list of {{group, {', '.join(sorted(keys))}}}")
        return []
    out = []
    for i, item in enumerate(data):
        at = f"{where}[{i}]"
        entry = check.keys(at, item, {"group", "note", *keys})
        group = check.text(f"{at}.group", entry.get("group")) if isinstance(item, dict) else None
        if group:
            out.append((at, entry, group))
    return out


def _welcome(check: Checker, where: str, data: Any) -> dict[str, Welcome]:
    if not isinstance(data, dict):
        check.fail(where, "must be a mapping of connection name to {send, result_url, ttl_s, again_on_enable}")
        return {}
    out = {}
    d = Welcome()
    for connection, raw in data.items():
        at = f"{where}.{connection}"
        entry = check.keys(at, raw, {"send", "result_url", "ttl_s", "again_on_enable"})
        send = check.choice(f"{at}.send", entry.get("send"), WELCOME_KINDS, "none")
        result_url = entry.get("result_url")
        if result_url is not None:
            result_url = check.text(f"{at}.result_url", result_url)
            if result_url and not result_url.startswith("https://"):
                check.fail(f"{at}.result_url", "must be an https:// URL")
        if send != "password_change_ticket" and ("result_url" in entry or "ttl_s" in entry):
            check.fail(at, "result_url and ttl_s belong to send: password_change_ticket")
        out[str(connection)] = Welcome(
            send=send,
            result_url=result_url,
            ttl_s=int(check.number(f"{at}.ttl_s", entry.get("ttl_s"), d.ttl_s, 60, MAX_TICKET_TTL_S)),
            again_on_enable=check.flag(f"{at}.again_on_enable", entry.get("again_on_enable"), False),
        )
    return out
