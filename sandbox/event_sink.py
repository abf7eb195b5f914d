"""An event feed endpoint on loopback: ``POST /events`` takes one CloudEvents 1.0 event (structured
JSON) signed with entra-sync's HMAC headers, checks the signature in constant time (401 when it is
missing or wrong), keeps the event and answers 204. A receiver dedupes on ``id`` as real consumers
do: ``events()`` lists every delivery, ``unique()`` each id once. Failures are injected with the
shared fault rules on the route name ``events.post``."""

from __future__ import annotations

import json
from typing import Any

from sandbox.server import Emulator, HttpError, Request, Response
from shared.alerting.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

DEFAULT_KEY = "events-signing-key-0123456789abcdef"  # the sandbox's signing key (EVENTS_SIGNING_KEY in tests)
REQUIRED = ("specversion", "id", "source", "type")  # CloudEvents 1.0 required context attributes


class EventSink(Emulator):
    name = "events"

    def __init__(self, key: str = DEFAULT_KEY, **kwargs: Any):
        super().__init__(**kwargs)
        self.key = key
        self._events: list[dict[str, Any]] = []
        self.add_route("POST", r"/events", "events.post", self._post)
        self.add_control_route("GET", "/_control/events", lambda r: Response.json({"events": self.events()}))

    def url(self) -> str:
        return f"{self.origin}/events"

    def _post(self, request: Request) -> Response:
        signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
        timestamp = request.headers.get(TIMESTAMP_HEADER.lower(), "")
        if not verify(self.key.encode(), timestamp, request.body, signature):
            raise HttpError(401, "bad_signature", "the signature does not match the body")
        event = json.loads(request.body)
        if not isinstance(event, dict) or any(not event.get(k) for k in REQUIRED) or event["specversion"] != "1.0":
            raise HttpError(400, "not_a_cloudevent", "a CloudEvents 1.0 event names specversion, id, source and type")
        with self.lock:
            self._events.append(event)
        return Response.empty(204)

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._events)

    def unique(self) -> dict[str, dict[str, Any]]:
        return {e["id"]: e for e in self.events()}

    def reset(self) -> None:
        with self.lock:
            self._events.clear()
