"""A Slack/Teams incoming-webhook stand-in on loopback, for tests and the demo.

``POST /hooks/{name}`` with a JSON body that has a ``text`` string is recorded and answered 200
``ok`` (Slack's answer); anything else is a 400 ``invalid_payload``. Failures are injected with
the shared fault rules on the route name ``webhook.post`` (for example
``receiver.faults.configure([FaultRule("webhook.post", status=500, count=1)])``), and every request
lands in ``receiver.log`` with its timestamp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sandbox.server import Emulator, HttpError, Request, Response


@dataclass(frozen=True)
class ReceivedMessage:
    at: float  # epoch seconds when it was recorded
    hook: str
    text: str
    body: dict[str, Any]


class WebhookReceiver(Emulator):
    name = "webhook"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, fault_seed: int = 0):
        super().__init__(host, port, fault_seed)
        self._messages: list[ReceivedMessage] = []
        self.add_route("POST", r"/hooks/(?P<hook>[A-Za-z0-9_-]+)", "webhook.post", self._post)

    def url(self, hook: str = "security") -> str:
        """The incoming-webhook URL to configure as ``NOTIFY_WEBHOOK_URL``."""
        return f"{self.origin}/hooks/{hook}"

    def _post(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"].strip():
            raise HttpError(400, "invalid_payload", "invalid_payload")
        with self.lock:
            self._messages.append(ReceivedMessage(time.time(), request.params["hook"], body["text"], body))
        return Response.text("ok")

    def messages(self) -> list[ReceivedMessage]:
        with self.lock:
            return list(self._messages)

    def texts(self) -> list[str]:
        return [m.text for m in self.messages()]

    def reset(self) -> None:
        with self.lock:
            self._messages.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"messages": len(self._messages)}
