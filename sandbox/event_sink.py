"""An event feed endpoint on loopback: ``POST /events`` takes one CloudEvents 1.0 event (structured
JSON) signed with entra-sync's HMAC headers, checks the signature in constant time (401 when it is
missing or wrong), keeps the event and answers 204. A receiver dedupes on ``id`` as real consumers
do: ``events()`` lists every delivery, ``unique()`` each id once. Failures are injected with the
shared fault rules on the route name ``events.post``.

``EventGridTopic`` is an Azure Event Grid custom topic with the CloudEvents 1.0 input schema, as
its publish API behaves (learn.microsoft.com, "Publish events to Azure Event Grid custom topics
using access keys"): ``POST /api/events?api-version=2018-01-01`` with the topic key in
``aeg-sas-key`` (401 without it or with another), a JSON array of CloudEvents
(``application/cloudevents-batch+json``; one event as ``application/cloudevents+json``), at most
1 MB a post (413), every event with its required attributes (400), answered 200 with no body.
Failures are injected on the route name ``eventgrid.post``."""

from __future__ import annotations

import hmac
import json
from typing import Any, Final

from sandbox.server import Emulator, HttpError, Request, Response
from shared.alerting.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

DEFAULT_KEY = "events-signing-key-0123456789abcdef"  # the sandbox's signing key (EVENTS_SIGNING_KEY in tests)
REQUIRED = ("specversion", "id", "source", "type")  # CloudEvents 1.0 required context attributes
TOPIC_KEY: Final = "sandbox-event-grid-topic-key-0123456789"  # the sandbox topic's access key
API_VERSION: Final = "2018-01-01"
MAX_POST: Final = 1_048_576  # Event Grid: 1 MB a post (and a single event at most that)


def _cloud_event(event: Any) -> bool:
    return isinstance(event, dict) and all(event.get(k) for k in REQUIRED) and event["specversion"] == "1.0"


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
        if not _cloud_event(event):
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


class EventGridTopic(Emulator):
    """An Event Grid custom topic with the CloudEvents 1.0 input schema (see the module docs);
    ``events()`` lists what it accepted, in order, and ``posts()`` how many posts carried them."""

    name = "eventgrid"

    def __init__(self, key: str = TOPIC_KEY, **kwargs: Any):
        super().__init__(**kwargs)
        self.key = key
        self._events: list[dict[str, Any]] = []
        self._posts = 0
        self.add_route("POST", r"/api/events", "eventgrid.post", self._post)
        self.add_control_route("GET", "/_control/events", lambda r: Response.json({"events": self.events()}))

    def error_response(self, error: HttpError) -> Response:
        return Response.json({"error": {"code": error.code, "message": error.message}}, error.status, error.headers)

    def url(self) -> str:
        """The topic endpoint, as the Bicep's ``endpoint`` output gives it (no api-version)."""
        return f"{self.origin}/api/events"

    def _post(self, request: Request) -> Response:
        if request.arg("api-version") != API_VERSION:
            raise HttpError(400, "BadRequest", f"api-version must be {API_VERSION}")
        if not hmac.compare_digest(request.headers.get("aeg-sas-key", "").encode(), self.key.encode()):
            raise HttpError(401, "Unauthorized", "the request authorization key is not authorized for this topic")
        if len(request.body) > MAX_POST:
            raise HttpError(413, "RequestEntityTooLarge", "the maximum size of a post is 1 MB")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            body = json.loads(request.body)
        except ValueError:
            raise HttpError(400, "BadRequest", "the body is not JSON") from None
        if kind == "application/cloudevents-batch+json" and isinstance(body, list) and body:
            events = body
        elif kind == "application/cloudevents+json":
            events = [body]
        else:
            raise HttpError(400, "BadRequest", "a CloudEvents topic takes application/cloudevents-batch+json")
        if not all(_cloud_event(e) for e in events):
            raise HttpError(400, "BadRequest", "every CloudEvent names specversion 1.0, id, source and type")
        with self.lock:
            self._events.extend(events)
            self._posts += 1
        return Response.empty(200)

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._events)

    def posts(self) -> int:
        with self.lock:
            return self._posts

    def reset(self) -> None:
        with self.lock:
            self._events.clear()
            self._posts = 0
