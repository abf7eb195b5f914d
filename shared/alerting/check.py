"""Checking the mapping's ``alerts:`` section with the loader's :class:`~shared.mapping.check.Checker`
(every problem at once, each naming its entry)::

    alerts:
      links: {report: "https://ops.example/reports/{run_id}", audit: "https://ops.example/audit/{identity}"}
      channels:
        secops: {kind: slack, url_setting: ALERTS_SLACK_URL}
        it-ops: {kind: teams, url_setting: ALERTS_TEAMS_URL}
        mail: {kind: email, mailbox: entra-sync@contoso.com, to: [secops@contoso.com]}
        itsm: {kind: servicenow, url_setting: ALERTS_SNOW_URL, user_setting: ALERTS_SNOW_USER,
               password_setting: ALERTS_SNOW_PASSWORD}
      routes:
        - {kinds: [risk], min_severity: medium, channels: [secops, mail]}
        - {kinds: [held, failed_run, poison, quarantine], channels: [it-ops]}
        - {kinds: [findings], channels: [itsm], tickets: identity}
      digest: {window_minutes: 10, burst: 3}
      events: {url_setting: EVENTS_URL, secret_setting: EVENTS_SIGNING_KEY, max_attempts: 8}
"""

from __future__ import annotations

import re
from typing import Any, Final

from shared.alerting.config import (
    CHANNEL_KINDS,
    EVENT_KINDS,
    SECRET_SETTING,
    SEVERITIES,
    TICKET_SCOPES,
    AlertsConfig,
    Channel,
    Digest,
    EventFeed,
    Links,
    Route,
)
from shared.mapping.check import Checker

ALERTS_KEYS: Final = frozenset({"channels", "routes", "digest", "links", "events", "note"})
CHANNEL_KEYS: Final = frozenset({"kind", "note"})  # and the kind's own (shared.alerting.config.CHANNEL_KINDS)
ROUTE_KEYS: Final = frozenset({"kinds", "channels", "min_severity", "tickets", "note"})
DIGEST_KEYS: Final = frozenset({"window_minutes", "burst"})
LINK_KEYS: Final = frozenset({"report", "audit"})
EVENTS_KEYS: Final = frozenset({"kind", "url_setting", "secret_setting", "max_attempts"})
EVENT_SINKS: Final = ("http", "event_grid")  # a signed HTTP endpoint, or an Event Grid custom topic
CHANNEL_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PLACEHOLDERS: Final = frozenset({"run_id", "identity", "correlation_id"})


def channel_keys(kind: str) -> frozenset[str]:
    spec = CHANNEL_KINDS[kind]
    return CHANNEL_KEYS | set(spec.secrets) | set(spec.optional_secrets) | set(spec.options)


def check_alerts(check: Checker, data: Any) -> AlertsConfig | None:
    """The section, or None where the file has none (``NOTIFY_WEBHOOK_URL`` alone then tells the
    operators, as before there were channels)."""
    if data is None:
        return None
    data = check.keys("alerts", data, ALERTS_KEYS)
    channels = _channels(check, data.get("channels") or {})
    routes = _routes(check, data.get("routes") or [], channels)
    return AlertsConfig(
        channels=channels,
        routes=routes,
        digest=_digest(check, data.get("digest") or {}),
        links=_links(check, data.get("links") or {}),
        events=_events(check, data.get("events")),
    )


def _setting(check: Checker, where: str, value: Any) -> str | None:
    if not isinstance(value, str) or not SECRET_SETTING.fullmatch(value):
        check.fail(
            where, f"names the app setting that holds the secret (ALERTS_<NAME> or EVENTS_<NAME>), got {value!r}"
        )
        return None
    return value


def _channels(check: Checker, data: Any) -> dict[str, Channel]:
    if not isinstance(data, dict):
        check.fail("alerts.channels", f"must be a mapping of channel name to its section, got {type(data).__name__}")
        return {}
    out: dict[str, Channel] = {}
    for name, section in data.items():
        where = f"alerts.channels.{name}"
        if not isinstance(name, str) or not CHANNEL_NAME.fullmatch(name):
            check.fail(where, "a channel name is lower-case letters, digits and dashes, such as secops")
            continue
        if not isinstance(section, dict):
            check.fail(where, f"must be a mapping, got {type(section).__name__}")
            continue
        kind = str(section.get("kind"))
        if kind not in CHANNEL_KINDS:
            check.fail(f"{where}.kind", f"must be one of {', '.join(CHANNEL_KINDS)}, got {section.get('kind')!r}")
            continue
        spec = CHANNEL_KINDS[kind]
        check.keys(where, section, channel_keys(kind))
        settings: dict[str, str] = {}
        for key in (*spec.secrets, *spec.optional_secrets):
            if key not in section:
                if key in spec.secrets:
                    check.fail(f"{where}.{key}", f"is required for a {kind} channel")
                continue
            if (setting := _setting(check, f"{where}.{key}", section[key])) is not None:
                settings[key] = setting
        for key in spec.required:
            if key not in section:
                check.fail(f"{where}.{key}", f"is required for a {kind} channel")
        options = {key: section[key] for key in spec.options if key in section}
        if kind == "email":
            options = _email(check, where, options)
        for key in ("table", "project", "issue_type", "done_transition"):
            if key in options and check.text(f"{where}.{key}", options[key]) is None:
                options.pop(key)
        out[name] = Channel(name, kind, settings, options)
    return out


def _email(check: Checker, where: str, options: dict[str, Any]) -> dict[str, Any]:
    mailbox, to = options.get("mailbox"), options.get("to")
    if mailbox is not None and (not isinstance(mailbox, str) or not EMAIL.fullmatch(mailbox)):
        check.fail(f"{where}.mailbox", f"must be the sending mailbox's address, got {mailbox!r}")
    if to is not None:
        listed = check.string_list(f"{where}.to", to)
        for i, address in enumerate(listed):
            if not EMAIL.fullmatch(address):
                check.fail(f"{where}.to[{i}]", f"must be an email address (a distribution list's), got {address!r}")
        if not listed and isinstance(to, list):
            check.fail(f"{where}.to", "must name at least one recipient")
        return {"mailbox": mailbox, "to": listed}
    return options


def _routes(check: Checker, data: Any, channels: dict[str, Channel]) -> tuple[Route, ...]:
    if not isinstance(data, list):
        check.fail("alerts.routes", f"must be a list of {{kinds, channels}}, got {type(data).__name__}")
        return ()
    out = []
    for i, item in enumerate(data):
        where = f"alerts.routes[{i}]"
        item = check.keys(where, item, ROUTE_KEYS)
        kinds = check.string_list(f"{where}.kinds", item.get("kinds"))
        for j, kind in enumerate(kinds):
            if kind not in EVENT_KINDS:
                check.fail(f"{where}.kinds[{j}]", f"must be one of {', '.join(EVENT_KINDS)}, got {kind!r}")
        if not kinds:
            check.fail(f"{where}.kinds", f"must name at least one of {', '.join(EVENT_KINDS)}")
        names = check.string_list(f"{where}.channels", item.get("channels"))
        if not names:
            check.fail(f"{where}.channels", "must name at least one channel of alerts.channels")
        for j, name in enumerate(names):
            channel = channels.get(name)
            if channel is None:
                check.fail(f"{where}.channels[{j}]", f"{name!r} is not a channel of alerts.channels")
            elif channel.tickets and set(kinds) - {"findings"}:
                check.fail(
                    f"{where}.channels[{j}]",
                    f"{name} opens tickets, which only findings do: route findings alone to it",
                )
        severity = check.choice(f"{where}.min_severity", item.get("min_severity"), SEVERITIES, "low")
        tickets = check.choice(f"{where}.tickets", item.get("tickets"), TICKET_SCOPES, "class")
        out.append(Route(kinds, names, severity, tickets, name=f"routes[{i}]"))
    return tuple(out)


def _digest(check: Checker, data: Any) -> Digest:
    data = check.keys("alerts.digest", data, DIGEST_KEYS)
    minutes = check.number("alerts.digest.window_minutes", data.get("window_minutes"), 10, 1, 1440)
    burst = check.number("alerts.digest.burst", data.get("burst"), 3, 0, 100)
    if burst != int(burst):
        check.fail("alerts.digest.burst", f"must be a whole number, got {burst!r}")
    return Digest(window_s=minutes * 60.0, burst=int(burst))


def _links(check: Checker, data: Any) -> Links:
    data = check.keys("alerts.links", data, LINK_KEYS)
    out: dict[str, str] = {}
    for key in LINK_KEYS & set(data):
        value = check.text(f"alerts.links.{key}", data[key])
        if value is None:
            continue
        if not value.startswith("https://"):
            check.fail(f"alerts.links.{key}", f"must be an https URL template, got {value!r}")
            continue
        unknown = set(re.findall(r"{([^}]*)}", value)) - PLACEHOLDERS
        if unknown:
            check.fail(
                f"alerts.links.{key}",
                f"knows the placeholders {', '.join(sorted(PLACEHOLDERS))}, not {', '.join(sorted(unknown))}",
            )
            continue
        out[key] = value
    return Links(**out)


def _events(check: Checker, data: Any) -> EventFeed | None:
    if data is None:
        return None
    data = check.keys("alerts.events", data, EVENTS_KEYS)
    kind = check.choice("alerts.events.kind", data.get("kind"), EVENT_SINKS, "http")
    url = _setting(check, "alerts.events.url_setting", data.get("url_setting"))
    secret = _setting(check, "alerts.events.secret_setting", data.get("secret_setting"))
    attempts = check.number("alerts.events.max_attempts", data.get("max_attempts"), 8, 1, 50)
    if url is None or secret is None:
        return None
    return EventFeed(url, secret, int(attempts), kind)
