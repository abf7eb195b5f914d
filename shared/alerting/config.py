"""The mapping's ``alerts:`` section as the app reads it (checked by :mod:`shared.alerting.check`).

Secrets never appear here: a channel names the app setting that holds each of its secrets
(``url_setting: ALERTS_SLACK_URL``), read from the settings (a Key Vault reference in Azure) when
the app is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

# What an alert is about; a route names the kinds it takes.
EVENT_KINDS: Final = ("risk", "held", "failed_run", "poison", "quarantine", "findings")
SEVERITIES: Final = ("low", "medium", "high")  # in rising order: a route takes its min_severity and above
TICKET_SCOPES: Final = ("class", "identity")  # one ticket per finding class per run, or per identity

# The app setting a channel secret may live in: ALERTS_* for channels, EVENTS_* for the event feed,
# so a mapping file cannot point a channel at another part of the app's configuration.
SECRET_SETTING: Final = re.compile(r"(ALERTS|EVENTS)_[A-Z0-9_]{1,60}")


@dataclass(frozen=True)
class ChannelKind:
    """What a channel kind needs: the settings holding its secrets (``required`` and ``optional``
    names of ``*_setting`` keys), its plain options and which of them must be given."""

    secrets: tuple[str, ...]
    optional_secrets: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    tickets: bool = False  # takes findings as tickets rather than messages


CHANNEL_KINDS: Final[Mapping[str, ChannelKind]] = {
    "slack": ChannelKind(("url_setting",)),
    "teams": ChannelKind(("url_setting",)),
    "webhook": ChannelKind(("url_setting",), optional_secrets=("secret_setting",)),
    "email": ChannelKind((), options=("mailbox", "to"), required=("mailbox", "to")),
    "servicenow": ChannelKind(("url_setting", "user_setting", "password_setting"), options=("table",), tickets=True),
    "jira": ChannelKind(
        ("url_setting", "email_setting", "token_setting"),
        options=("project", "issue_type", "done_transition"),
        required=("project",),
        tickets=True,
    ),
}


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str
    settings: Mapping[str, str] = field(default_factory=dict)  # "url_setting" -> "ALERTS_SLACK_URL"
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def tickets(self) -> bool:
        return CHANNEL_KINDS[self.kind].tickets


@dataclass(frozen=True)
class Route:
    """Alerts of ``kinds`` at ``min_severity`` or above go to ``channels``; findings to ticket
    channels open one ticket per ``tickets`` (finding class per run, or identity)."""

    kinds: tuple[str, ...]
    channels: tuple[str, ...]
    min_severity: str = "low"
    tickets: str = "class"
    name: str = ""  # routes[<i>], for claims and messages

    def takes(self, kind: str, severity: str) -> bool:
        return kind in self.kinds and SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)


@dataclass(frozen=True)
class Digest:
    """The rate limit of every route: ``burst`` alerts in a window of ``window_s`` go one by one,
    the rest of that window as one digest when the window ends."""

    window_s: float = 600.0
    burst: int = 3


@dataclass(frozen=True)
class Links:
    """Templates of the links every message carries: ``{run_id}``, ``{identity}`` and
    ``{correlation_id}`` are filled in (empty templates: the message names the CLI command)."""

    report: str = ""
    audit: str = ""


@dataclass(frozen=True)
class EventFeed:
    """Where the event feed goes: an HTTP endpoint (``kind: http``: its URL and HMAC signing key in
    settings) or an Event Grid custom topic (``kind: event_grid``: its endpoint and access key), and
    the bound after which an event is dead-lettered."""

    url_setting: str
    secret_setting: str
    max_attempts: int = 8
    kind: str = "http"


@dataclass(frozen=True)
class AlertsConfig:
    channels: Mapping[str, Channel] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    digest: Digest = field(default_factory=Digest)
    links: Links = field(default_factory=Links)
    events: EventFeed | None = None

    def settings_named(self) -> list[tuple[str, str]]:
        """Every app setting the section names: (setting, what it is for)."""
        named = [
            (s, f"alerts.channels.{c.name}.{key}") for c in self.channels.values() for key, s in c.settings.items()
        ]
        if self.events is not None:
            named += [(self.events.url_setting, "alerts.events.url_setting"),
                      (self.events.secret_setting, "alerts.events.secret_setting")]  # fmt: skip
        return named
