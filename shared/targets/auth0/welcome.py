"""A joiner's welcome, sent once: Auth0's password-change ticket delivered to them, or Auth0's
verification email.

Exactly once per account (per re-enable too, where the section asks for one), across replays,
retries, concurrent attempts and a kill, by two records:

* In Auth0, the account itself: a create stamps ``app_metadata.entra_welcome: "pending"`` and the
  welcome's end stamps ``"sent"``. A worker killed between the create and the welcome leaves
  ``pending``, which the planner sees as a mapped value to converge (the next item, a retry or
  the nightly reconciliation), so the welcome is not lost; an account that never carried the key (an
  old one, a linked one) is never welcomed.
* In Table Storage (the state store), a claim per account, as the security notifications keep
  theirs (:mod:`shared.services.notify`): *claim* ``sending`` (insert-only, or an ETag-guarded
  take-over of a ``failed`` claim or of a ``sending`` claim older than :data:`CLAIM_TTL_S`),
  *send*, *record* ``sent``. A second attempt meets the claim: ``sent`` -> nothing is sent, only
  the account's stamp is finished; a fresh ``sending`` -> it tries later.

The crash window: a kill after Auth0 (or the courier) took the welcome and before ``sent`` was
recorded leaves a ``sending`` claim, which a retry takes over after :data:`CLAIM_TTL_S` and sends
again: one HTTP round trip wide, and a second welcome there is the chosen failure (a joiner who
cannot sign in on day one costs more than a duplicate email). Outside it, exactly once.

The ticket URL is a credential: it goes to the courier and nowhere else (no log line, audit row
or claim holds it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from shared.clock import Clock
from shared.core.ports import AuditStore, StateStore
from shared.core.work import current_item
from shared.errors import PermanentError, TransientError
from shared.stores.audit import AuditRow
from shared.stores.keys import utcnow
from shared.targets.auth0.policy import Welcome

log = logging.getLogger("entra_sync.auth0.welcome")

CLAIMS: Final = "auth0_welcome"
CLAIM_TTL_S: Final = 120.0  # above the Auth0 client's timeout and a courier's: a live sender keeps its claim


@runtime_checkable
class Courier(Protocol):
    """Delivers a message to one person (a mailbox through Graph ``sendMail``, ...). ``key`` is the
    same for every attempt at one message, for a courier that can refuse a duplicate itself."""

    async def deliver(self, key: str, to: str, subject: str, text: str) -> None: ...


@dataclass(frozen=True)
class Sends:
    """The Auth0 calls a welcome makes (the adapter's, through its rate gate)."""

    password_ticket: Callable[[str, Welcome], Awaitable[str]]  # user id -> the ticket URL
    verification_email: Callable[[str], Awaitable[None]]


class WelcomeDesk:
    def __init__(
        self,
        target: str,
        source: str,
        state: StateStore,
        audit: AuditStore | None,
        courier: Courier | None,
        clock: Clock,
    ):
        self.target = target
        self.source = source
        self.state = state
        self.audit = audit
        self.courier = courier
        self.clock = clock

    async def welcome(
        self, user: dict[str, Any], owner: str, welcome: Welcome, sends: Sends, occasion: str = "joiner"
    ) -> str:
        """Send ``user`` their welcome unless it went out already; ``"sent"`` or ``"already_sent"``.
        ``occasion`` names the claim: ``joiner`` once per account, ``enable:<n>`` once per re-enable."""
        user_id = str(user["user_id"])
        name = f"{self.target}:{user_id}:{occasion}"
        version = await self._claim(name)
        if version is None:
            await self._record(user_id, owner, "skipped", f"{_what(welcome)} went out before; not sent again")
            return "already_sent"
        try:
            detail = await self._send(user, welcome, sends, name)
        except Exception:
            await self._mark(name, version, "failed")
            raise
        await self._mark(name, version, "sent")
        await self._record(user_id, owner, "ok", detail)
        return "sent"

    async def _send(self, user: dict[str, Any], welcome: Welcome, sends: Sends, key: str) -> str:
        user_id, email = str(user["user_id"]), str(user.get("email") or "")
        if welcome.send == "verification_email":
            await sends.verification_email(user_id)
            return "Auth0 sent its verification email to the joiner"
        if self.courier is None:
            raise PermanentError(
                f"{self.target}: the welcome is a password-change ticket, but no courier is configured to deliver it"
            )
        if not email:
            raise PermanentError(f"{self.target}: {user_id} has no email to deliver the welcome ticket to")
        ticket = await sends.password_ticket(user_id, welcome)
        days = max(1, round(welcome.ttl_s / 86_400))
        text = (
            f"Welcome! Your account is ready. Choose your password here (the link works for {days} day(s)):\n{ticket}"
        )
        await self.courier.deliver(key, email, "Your new account", text)
        return f"password-change ticket (valid {welcome.ttl_s} s) delivered to the joiner's email"

    async def _claim(self, name: str) -> str | None:
        """The claim's version, or None when the welcome went out already."""
        doc, version = await self.state.read(CLAIMS, name)
        attempts = 1
        if doc is not None:
            state = doc.get("state")
            if state == "sent":
                return None
            if state == "sending" and float(doc.get("claimed", 0)) > self.clock.now() - CLAIM_TTL_S:
                raise TransientError(f"another attempt is sending the welcome of {name}")
            attempts = int(doc.get("attempts", 1)) + 1
            log.info("taking over the %s welcome claim of %s (attempt %s)", state, name, attempts)
        claim = {"state": "sending", "claimed": self.clock.now(), "attempts": attempts, "at": utcnow()}
        taken = await self.state.put_if(CLAIMS, name, claim, version)
        if taken is None:
            raise TransientError(f"another attempt claimed the welcome of {name}")
        return taken

    async def _mark(self, name: str, version: str, state: str) -> None:
        """Best effort: a lost ``sent`` is the crash window of the module docs; a lost ``failed``
        only makes the retry wait for the claim's age."""
        try:
            record = {"state": state, "claimed": self.clock.now(), "at": utcnow()}
            await self.state.put_if(CLAIMS, name, record, version)
        except Exception as exc:
            log.warning("could not record the welcome claim %s as %s: %s", name, state, type(exc).__name__)

    async def _record(self, user_id: str, owner: str, outcome: str, detail: str) -> None:
        if self.audit is None:
            return
        item = current_item()  # the joiner's work item: its correlation id ties the welcome to the create
        if item is not None and item.id == owner:
            row = AuditRow.for_item(item, self.target, "welcome", outcome, user_id, detail=detail)
        else:
            row = AuditRow(f"welcome:{user_id}", "welcome", user_id, owner, self.target, user_id, "welcome", outcome,
                           detail=detail, identity_source=self.source)  # fmt: skip
        await self.audit.write(row)


def _what(welcome: Welcome) -> str:
    return "the verification email" if welcome.send == "verification_email" else "the password-change ticket"
