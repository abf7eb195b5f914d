"""The alert router from the settings and the mapping: the composition root's one call.

Every app setting the ``alerts:`` section names is read and checked before anything is sent, and
every problem is reported at once (:class:`~shared.settings.SettingsError`), as for every other
setting. Email sends through a Graph client the composition root's ``client`` gives (by the name
``alerts:graph``: a test's, or one built from the Graph settings).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from shared.alerting.channels import LEGACY, SEND_TIMEOUT_S, Sender, WebhookSender, build_sender, setting_secret
from shared.alerting.config import AlertsConfig, Channel
from shared.alerting.feed import EventFeed, EventGridSink, EventSink, Sink
from shared.alerting.router import AlertRouter
from shared.alerting.tickets import TicketBook
from shared.alerting.trackers import Jira, ServiceNow, Tracker
from shared.clock import SYSTEM, Clock
from shared.core.ports import StateStore
from shared.services.notify import Notifier
from shared.settings import Secret, Settings, require
from shared.sources.graph.client import graph_client
from shared.stores.audit import AuditStore

# Event Grid topic endpoints in Azure's clouds (public, China, US Government).
EVENT_GRID_HOSTS: Final = (".eventgrid.azure.net", ".eventgrid.azure.cn", ".eventgrid.usgovcloudapi.net")


def check_alert_settings(settings: Settings, config: AlertsConfig | None) -> None:
    """Every secret the section names is set (and each URL an https one): all problems at once."""
    if config is None:
        return
    url_keys = {"url_setting"}
    require([
        *(settings.named_secret_problem(setting, f"the mapping's {entry} names it",
                                        url=entry.rsplit(".", 1)[-1] in url_keys)
          for setting, entry in config.settings_named()),
        event_sink_problem(settings, config),
    ])  # fmt: skip


def event_sink_problem(settings: Settings, config: AlertsConfig) -> str | None:
    """An Event Grid topic's endpoint configured as a signed HTTP endpoint: the topic would refuse
    every post (it wants its key, not a signature), so say so at start-up."""
    events = config.events
    url = settings.named_secrets.get(events.url_setting) if events is not None else None
    if events is None or url is None or events.kind != "http":
        return None
    if not (urlsplit(url.reveal()).hostname or "").endswith(EVENT_GRID_HOSTS):
        return None
    return (f"{events.url_setting} is an Event Grid topic endpoint, but the mapping's alerts.events has kind: http "
            "(a signed HTTP endpoint); set kind: event_grid")  # fmt: skip


def tracker(channel: Channel, settings: Settings, http: httpx.AsyncClient) -> Tracker:
    why = f"the mapping's alerts channel {channel.name} names it"

    def secret(key: str) -> Secret:
        return setting_secret(settings, channel.settings[key], why, url=key == "url_setting")

    if channel.kind == "servicenow":
        auth = (secret("user_setting"), secret("password_setting"))
        return ServiceNow(
            channel.name, secret("url_setting"), auth, http, str(channel.options.get("table", "incident"))
        )
    auth = (secret("email_setting"), secret("token_setting"))
    return Jira(
        channel.name, secret("url_setting"), auth, http, str(channel.options["project"]),
        str(channel.options.get("issue_type", "Task")), str(channel.options.get("done_transition", "Done")),
    )  # fmt: skip


def ticket_book(
    settings: Settings, config: AlertsConfig | None, state: StateStore, http: httpx.AsyncClient
) -> TicketBook | None:
    """The ticket book of the ticket channels the ``findings`` routes name (None when none does)."""
    if config is None:
        return None
    trackers: dict[str, Tracker] = {}
    scopes: dict[str, str] = {}
    for route in config.routes:
        for name in route.channels:
            channel = config.channels[name]
            if channel.tickets and "findings" in route.kinds and name not in trackers:
                trackers[name] = tracker(channel, settings, http)
                scopes[name] = route.tickets
    return TicketBook(state, trackers, scopes) if trackers else None


def event_feed(
    settings: Settings,
    config: AlertsConfig | None,
    audit: AuditStore,
    state: StateStore,
    http: httpx.AsyncClient,
    *,
    clock: Clock = SYSTEM,
    alert: Callable[[str, str], Any] | None = None,
) -> EventFeed | None:
    """The event feed the section's ``events`` names (None without one)."""
    if config is None or config.events is None:
        return None
    events = config.events
    why = "the mapping's alerts.events names it"
    url = setting_secret(settings, events.url_setting, why, url=True)
    key = setting_secret(settings, events.secret_setting, why)
    require([event_sink_problem(settings, config)])  # reads the URL setting_secret just read
    sink: Sink = EventGridSink(url, key) if events.kind == "event_grid" else EventSink(url, key, http, clock)
    return EventFeed(audit, state, sink, max_attempts=events.max_attempts, clock=clock, alert=alert)


def alert_router(
    settings: Settings,
    config: AlertsConfig | None,
    notifier: Notifier,
    client: Callable[[str, Callable[[], Any]], Any],
    *,
    clock: Clock = SYSTEM,
) -> AlertRouter:
    check_alert_settings(settings, config)
    http = notifier.http  # one client (the notifier's, which the app closes) for every webhook channel
    senders: dict[str, Sender] = {}
    for channel in config.channels.values() if config is not None else ():
        sender = build_sender(channel, settings, http, lambda: client("alerts:graph", lambda: graph_client(settings)))
        if sender is not None:
            senders[channel.name] = sender
    legacy = None
    if settings.notify_webhook_url is not None:
        legacy = WebhookSender(LEGACY, "text", settings.notify_webhook_url, http)
    return AlertRouter(notifier, config, senders, legacy=legacy, clock=clock)


__all__ = ["SEND_TIMEOUT_S", "alert_router", "check_alert_settings", "event_feed", "ticket_book"]
