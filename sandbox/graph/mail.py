"""Graph ``sendMail`` in the Graph emulator: ``POST /users/{id | userPrincipalName}/sendMail``.

As Graph does, a valid request is answered ``202 Accepted`` with no body and the message is kept
(the sandbox's outbox, read at ``GET /_control/mail``). The application access policy that
restricts ``Mail.Send`` to one mailbox is modelled by ``PUT /_control/mail {"allowed": [...]}``: a
mailbox outside it is refused ``403 ErrorAccessDenied``, as Exchange Online refuses it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sandbox.server import Emulator, HttpError, Request, Response


@dataclass(frozen=True)
class SentMail:
    mailbox: str
    subject: str
    body: str
    content_type: str
    to: tuple[str, ...]


def _field(obj: Any, name: str) -> Any:
    if not isinstance(obj, dict):
        return None
    return next((v for k, v in obj.items() if isinstance(k, str) and k.casefold() == name), None)


class Outbox:
    def __init__(self, lock: threading.RLock | threading.Lock):
        self.lock = lock
        self.sent: list[SentMail] = []
        self.allowed: frozenset[str] | None = None  # None: every mailbox may send

    def register(self, emulator: Emulator, prefix: str) -> None:
        emulator.add_route("POST", rf"{prefix}/users/(?P<id>[^/]+)/sendMail", "users.sendMail", self._send)
        emulator.add_control_route("GET", "/_control/mail", lambda r: Response.json({"sent": self.listed()}))
        emulator.add_control_route("PUT", "/_control/mail", self._configure)

    def _send(self, request: Request) -> Response:
        mailbox = request.params["id"].lower()
        body = request.json()
        # Graph reads property names case-insensitively: msgraph-sdk sends "Message", the docs "message".
        message = _field(body, "message")
        if not isinstance(message, dict):
            raise HttpError(400, "ErrorInvalidRequest", "The request body must carry a message.")
        recipients = _field(message, "torecipients") or []
        to = tuple(str(_field(_field(r, "emailaddress"), "address") or "") for r in recipients)
        if not to or not all(to):
            raise HttpError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
        if self.allowed is not None and mailbox not in self.allowed:
            raise HttpError(
                403, "ErrorAccessDenied", "Access to OData is disabled: the access policy denies this mailbox."
            )
        content = _field(message, "body")
        sent = SentMail(mailbox, str(_field(message, "subject") or ""), str(_field(content, "content") or ""),
                        str(_field(content, "contenttype") or "text"), to)  # fmt: skip
        with self.lock:
            self.sent.append(sent)
        return Response.empty(202)

    def _configure(self, request: Request) -> Response:
        allowed = request.control_body().get("allowed")
        with self.lock:
            self.allowed = None if allowed is None else frozenset(str(a).lower() for a in allowed)
        return Response.empty()

    def listed(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"mailbox": m.mailbox, "subject": m.subject, "body": m.body, "contentType": m.content_type,
                     "to": list(m.to)} for m in self.sent]  # fmt: skip

    def reset(self) -> None:
        with self.lock:
            self.sent.clear()
            self.allowed = None
