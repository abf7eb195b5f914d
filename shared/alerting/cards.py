"""What each channel is sent for an alert: pure functions from an :class:`Alert` to a payload.

Every layout leads with the title and the facts a responder needs first (event, severity, who or
what, correlation id), then the message, then where to look next (the report and the audit trail:
links where ``alerts.links`` gives templates, else the CLI commands). The payloads keep within the
published limits of each format (Slack Block Kit: a header's text 150 characters, a section's 3,000,
a field's 2,000, 10 fields, a button's text 75; Adaptive Cards: the elements Teams Workflows render),
and tests validate them against JSON Schemas written from those specs (tests/alerting/schemas).
"""

from __future__ import annotations

import html
from typing import Any, Final

from shared.alerting.alert import Alert

WEBHOOK_SCHEMA: Final = "https://entra-sync.example/schemas/alert/1"
PLAIN_MAX: Final = 3_500  # Slack truncates long texts; keep a plain message readable
ADAPTIVE_CARD_VERSION: Final = "1.4"  # what Teams Workflows render
_SEVERITY_COLOR: Final = {"high": "Attention", "medium": "Warning", "low": "Default"}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_message(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: Block Kit blocks, and ``text`` as the notification's fallback."""
    fields = [{"type": "mrkdwn", "text": _cut(f"*{name}*\n{value}", 2000)} for name, value in alert.all_facts()[:10]]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(alert.title, 150), "emoji": False}},
        {"type": "section", "fields": fields},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(alert.text, 3000)}},
    ]
    if alert.links:
        blocks.append({
            "type": "actions",
            "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": _cut(label, 75)}, "url": url[:3000],
                 "action_id": f"open-{i}"}
                for i, (label, url) in enumerate(alert.links)
            ],
        })  # fmt: skip
    else:
        commands = "  ·  ".join(f"{label}: `{command}`" for label, command in alert.where_to_look())
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(commands, 3000)}]})
    return {"text": _cut(f"[entra-sync] {alert.title}", 3000), "blocks": blocks}


def adaptive_card(alert: Alert) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": alert.title, "size": "Large", "weight": "Bolder", "wrap": True,
         "color": _SEVERITY_COLOR[alert.severity]},
        {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in alert.all_facts()]},
        {"type": "TextBlock", "text": alert.text, "wrap": True},
    ]  # fmt: skip
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": ADAPTIVE_CARD_VERSION,
        "body": body,
        "fallbackText": f"[entra-sync] {alert.title}",
    }
    if alert.links:
        card["actions"] = [{"type": "Action.OpenUrl", "title": label, "url": url} for label, url in alert.links]
    else:
        body.append({
            "type": "FactSet",
            "facts": [{"title": label, "value": command} for label, command in alert.where_to_look()],
        })  # fmt: skip
    return card


def teams_message(alert: Alert) -> dict[str, Any]:
    """What a Teams Workflows webhook ("Post to a channel when a webhook request is received")
    takes: a message with one Adaptive Card attachment."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": adaptive_card(alert),
            }
        ],
    }


def webhook_payload(alert: Alert, at: str) -> dict[str, Any]:
    """The generic webhook's JSON (documented in the README, "Alerts and events")."""
    return {
        "schema": WEBHOOK_SCHEMA,
        "key": alert.key,
        "kind": alert.kind,
        "severity": alert.severity,
        "title": alert.title,
        "text": alert.text,
        "facts": [{"name": name, "value": value} for name, value in alert.all_facts()],
        "links": [{"label": label, "url": url} for label, url in alert.links],
        "commands": [{"label": label, "command": command} for label, command in alert.where_to_look()],
        "source": alert.source,
        "correlation_id": alert.correlation_id,
        "run_id": alert.run_id,
        "identity": alert.identity,
        "at": at,
    }


def plain_text(alert: Alert) -> str:
    """The plain ``NOTIFY_WEBHOOK_URL`` message, as it always was."""
    return (alert.plain or alert.text)[:PLAIN_MAX]


def email(alert: Alert) -> tuple[str, str]:
    """The subject and HTML body of an alert email."""
    rows = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in alert.all_facts()
    )
    look = alert.links or alert.where_to_look()
    links = "".join(
        f"<li><a href='{html.escape(target)}'>{html.escape(label)}</a></li>" if target.startswith("https://")
        else f"<li>{html.escape(label)}: <code>{html.escape(target)}</code></li>"
        for label, target in look
    )  # fmt: skip
    body = f"<h2>{html.escape(alert.title)}</h2><table>{rows}</table><p>{html.escape(alert.text)}</p><ul>{links}</ul>"
    return _cut(f"[entra-sync] [{alert.severity}] {alert.title}", 255), body
