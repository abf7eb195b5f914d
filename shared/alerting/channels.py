"""The channels an alert is sent through, built from the ``alerts:`` section and the settings.

A channel's ``send`` delivers one alert or raises :class:`~shared.errors.TransientError` (the
router marks that channel's claim failed, and the next attempt sends it). Secrets (a webhook URL
embeds its own; a signing key) are :class:`~shared.settings.Secret` and never reach a message, a
log line or an audit row: a failure names the channel, the status code or the exception type.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

import httpx
from kiota_abstractions.api_error import APIError
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody

from shared.alerting import cards
from shared.alerting.alert import Alert
from shared.alerting.config import Channel
from shared.alerting.signing import signed_headers
from shared.errors import TransientError
from shared.settings import Secret, Settings, SettingsError
from shared.stores.keys import utcnow

SEND_TIMEOUT_S: Final = 10.0
LEGACY: Final = "notify"  # the implicit channel of NOTIFY_WEBHOOK_URL


class Sender(Protocol):
    name: str

    async def send(self, alert: Alert) -> None: ...


class WebhookSender:
    """Slack, Teams Workflows, a generic JSON webhook, or the plain ``NOTIFY_WEBHOOK_URL`` text."""

    def __init__(
        self,
        name: str,
        kind: str,
        url: Secret,
        http: httpx.AsyncClient,
        signing_key: Secret | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.name, self.kind, self.url, self.http = name, kind, url, http
        self.signing_key = signing_key
        self.clock = clock

    def payload(self, alert: Alert) -> dict[str, Any]:
        if self.kind == "slack":
            return cards.slack_message(alert)
        if self.kind == "teams":
            return cards.teams_message(alert)
        if self.kind == "webhook":
            return cards.webhook_payload(alert, utcnow())
        return {"text": cards.plain_text(alert)}

    async def send(self, alert: Alert) -> None:
        body = json.dumps(self.payload(alert), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.signing_key is not None:
            headers |= signed_headers(self.signing_key.reveal().encode(), int(self.clock()), body)
        try:
            response = await self.http.post(self.url.reveal(), content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"the {self.name} channel is unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise TransientError(f"the {self.name} channel answered {response.status_code}")


class Mailbox:
    """Graph ``sendMail`` from one mailbox (application permission ``Mail.Send``, restricted to that
    mailbox by an application access policy: see the README). A refusal or an unreachable Graph is
    a :class:`TransientError` naming ``name`` and the status, never the message."""

    def __init__(self, name: str, mailbox: str, graph: Any):
        self.name, self.mailbox, self.graph = name, mailbox, graph

    async def send_mail(self, to: tuple[str, ...], subject: str, content: str, *, html: bool) -> None:
        message = Message(
            subject=subject,
            body=ItemBody(content_type=BodyType.Html if html else BodyType.Text, content=content),
            to_recipients=[Recipient(email_address=EmailAddress(address=a)) for a in to],
        )
        request = SendMailPostRequestBody(message=message, save_to_sent_items=False)
        try:
            await self.graph.users.by_user_id(self.mailbox).send_mail.post(request)
        except APIError as exc:
            raise TransientError(f"{self.name} (Graph sendMail) answered {exc.response_status_code}") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"{self.name} (Graph sendMail) is unreachable ({type(exc).__name__})") from None


class EmailSender:
    """An alert as HTML email to the channel's recipients (a distribution list per route)."""

    def __init__(self, name: str, mailbox: str, to: tuple[str, ...], graph: Any):
        self.name, self.to = name, to
        self.mail = Mailbox(f"the {name} channel", mailbox, graph)

    async def send(self, alert: Alert) -> None:
        subject, html = cards.email(alert)
        await self.mail.send_mail(self.to, subject, html, html=True)


class GraphCourier:
    """A :class:`shared.targets.auth0.welcome.Courier` (a joiner's welcome) through Graph
    ``sendMail`` from one mailbox, as plain text. Duplicates are kept away by the welcome desk's own
    claim, so ``key`` is not needed here."""

    def __init__(self, mailbox: str, graph: Any):
        self.mail = Mailbox("the welcome courier", mailbox, graph)

    async def deliver(self, key: str, to: str, subject: str, text: str) -> None:
        await self.mail.send_mail((to,), subject, text, html=False)


def setting_secret(settings: Settings, setting: str, why: str, *, url: bool = False) -> Secret:
    """The secret in app setting ``setting`` (a Key Vault reference in Azure, resolved by the
    platform); ``url``: it must be an https URL (plain http only on loopback)."""
    problem = settings.named_secret_problem(setting, why, url=url)
    if problem is not None:
        raise SettingsError([problem])
    return settings.named_secrets[setting]


def build_sender(
    channel: Channel, settings: Settings, http: httpx.AsyncClient, graph: Callable[[], Any]
) -> Sender | None:
    """The sender of a message channel (None for a ticket channel: :mod:`shared.alerting.tickets`)."""
    why = f"the mapping's alerts channel {channel.name} names it"
    if channel.kind == "email":
        return EmailSender(channel.name, str(channel.options["mailbox"]), tuple(channel.options["to"]), graph())  # type: ignore[arg-type]
    if channel.tickets:
        return None
    url = setting_secret(settings, channel.settings["url_setting"], why, url=True)
    key = channel.settings.get("secret_setting")
    return WebhookSender(channel.name, channel.kind, url, http, setting_secret(settings, key, why) if key else None)
