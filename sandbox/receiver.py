"""A Slack/Teams incoming-webhook stand-in on loopback, for tests and the demo.

``POST /hooks/{name}`` with a JSON body that has a ``text`` string (Slack, with or without Block
Kit ``blocks``; the plain ``NOTIFY_WEBHOOK_URL`` message), a Teams Workflows message (``type:
message`` with an Adaptive Card attachment) or entra-sync's generic alert payload (a ``schema`` and
a ``title``) is recorded with its headers and answered 200 ``ok`` (Slack's answer); anything else
is a 400 ``invalid_payload``. ``text`` is what a person would read first: the Slack text, the
card's first TextBlock, the generic payload's title. Failures are injected with
the shared fault rules on the route name ``webhook.post`` (for example
``receiver.faults.configure([FaultRule("webhook.post", status=500, count=1)])``), and every request
lands in ``receiver.log`` with its timestamp; ``GET /_control/messages`` lists what arrived.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.server import Emulator, HttpError, Request, Response


@dataclass(frozen=True)
class ReceivedMessage:
    at: float  # epoch seconds when it was recorded
    hook: str
    text: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""


def headline(body: Any) -> str:
    """What a person reads first in a webhook body this receiver takes; "" for a body it refuses."""
    if not isinstance(body, dict):
        return ""
    if isinstance(body.get("text"), str) and body["text"].strip():
        return str(body["text"])
    if body.get("type") == "message" and isinstance(body.get("attachments"), list) and body["attachments"]:
        card = body["attachments"][0].get("content") if isinstance(body["attachments"][0], dict) else None
        blocks = card.get("body") if isinstance(card, dict) and card.get("type") == "AdaptiveCard" else None
        first = next((b for b in blocks or [] if isinstance(b, dict) and b.get("type") == "TextBlock"), None)
        return str(first.get("text") or "") if first else ""
    if isinstance(body.get("schema"), str) and isinstance(body.get("title"), str):
        return str(body["title"])
    return ""


class WebhookReceiver(Emulator):
    name = "webhook"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, fault_seed: int = 0):
        super().__init__(host, port, fault_seed)
        self._messages: list[ReceivedMessage] = []
        self.add_route("POST", r"/hooks/(?P<hook>[A-Za-z0-9_-]+)", "webhook.post", self._post)
        self.add_control_route("GET", "/_control/messages", lambda r: Response.json({"messages": self.listed()}))

    def url(self, hook: str = "security") -> str:
        """The incoming-webhook URL to configure as ``NOTIFY_WEBHOOK_URL``."""
        return f"{self.origin}/hooks/{hook}"

    def _post(self, request: Request) -> Response:
        body = request.json()
        text = headline(body)
        if not text:
            raise HttpError(400, "invalid_payload", "invalid_payload")
        message = ReceivedMessage(time.time(), request.params["hook"], text, body, dict(request.headers), request.body)
        with self.lock:
            self._messages.append(message)
        return Response.text("ok")

    def messages(self) -> list[ReceivedMessage]:
        with self.lock:
            return list(self._messages)

    def listed(self) -> list[dict[str, Any]]:
        """Each message as ``GET /_control/messages`` shows it: when, which hook, the headline and the body."""
        return [{"at": m.at, "hook": m.hook, "text": m.text, "body": m.body} for m in self.messages()]

    def texts(self) -> list[str]:
        return [m.text for m in self.messages()]

    def reset(self) -> None:
        with self.lock:
            self._messages.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"messages": len(self._messages)}
