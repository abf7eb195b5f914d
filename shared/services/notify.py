"""Security notifications: one message per incident to a Slack or Teams incoming webhook.

The body is ``{"text": "..."}``, which a Slack incoming webhook posts as it is and a Teams
(Office 365 connector) incoming webhook accepts as a minimal card. The webhook URL carries its own
secret, so it is never logged, audited or put in an error message: failures name the status code
or the exception type only.

Exactly one message per incident, across retries and concurrent attempts, through an insert-only
entity per incident key in Table Storage:

1. *claim*: insert ``{state: sending}``. A duplicate insert means another attempt got there first:
   ``sent`` -> nothing to do; ``failed`` or a ``sending`` claim older than :data:`CLAIM_TTL_S` (its
   owner crashed) -> take it over with an ETag-guarded update; a fresh ``sending`` claim -> retry
   later.
2. *send* the message (a non-2xx answer or a transport error marks the claim ``failed`` and raises
   :class:`TransientError`, so the host retries the work item and the next attempt sends it).
3. *record* ``sent``.

A crash between 2 and 3 (the webhook took the message, the record did not happen) leaves a
``sending`` claim that a retry takes over after :data:`CLAIM_TTL_S` and sends again. That window is
one HTTP round trip, and a duplicate alert there is the chosen failure: for a security team a
second copy is better than a lost alert (the alternative, never re-sending a stale claim, would
drop it). Outside that window the message goes out exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.errors import TransientError
from shared.settings import Secret
from shared.stores.keys import encode_key, replace_if_unchanged, utcnow

log = logging.getLogger("entra_sync.notify")

PARTITION: Final = "notify"
CLAIM_TTL_S: Final = 120.0  # well above SEND_TIMEOUT_S: a live sender never loses its claim
SEND_TIMEOUT_S: Final = 10.0
MAX_TEXT: Final = 3_500  # Slack truncates long texts; keep a message readable


@dataclass(frozen=True)
class Delivery:
    status: str  # "sent", "already_sent", "not_configured"
    detail: str = ""


class Notifier:
    def __init__(self, table: TableClient, webhook_url: Secret | None, http: httpx.AsyncClient | None = None):
        self.table = table
        self.webhook_url = webhook_url
        self.http = http or httpx.AsyncClient(timeout=SEND_TIMEOUT_S, follow_redirects=False)
        self.sent = 0

    async def close(self) -> None:
        await self.http.aclose()

    @property
    def configured(self) -> bool:
        return self.webhook_url is not None

    async def send_once(self, key: str, text: str) -> Delivery:
        """Send ``text`` for incident ``key`` unless it was sent already (see the module docs)."""
        if self.webhook_url is None:
            return Delivery("not_configured", "NOTIFY_WEBHOOK_URL is not set: the security team was not told")
        return await self.once(key, lambda: self._post(text))

    async def once(self, key: str, send: Callable[[], Awaitable[None]]) -> Delivery:
        """Run ``send`` for ``key`` unless it ran to the end already, through the claim of the module
        docs: ``send`` raises :class:`TransientError` when what it sends was not taken (the claim is
        then marked failed and the error raised, so the next attempt sends it)."""
        row = encode_key(key)
        etag = await self._claim(row, key)
        if etag is None:
            return Delivery("already_sent")
        try:
            await send()
        except Exception:
            await self._mark(row, etag, "failed")
            raise
        self.sent += 1
        await self._mark(row, etag, "sent")
        return Delivery("sent")

    async def _post(self, text: str) -> None:
        assert self.webhook_url is not None  # send_once checked
        try:
            response = await self.http.post(self.webhook_url.reveal(), json={"text": text[:MAX_TEXT]})
        except httpx.HTTPError as exc:
            raise TransientError(f"notification webhook unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise TransientError(f"notification webhook answered {response.status_code}")

    async def _claim(self, row: str, key: str) -> str | None:
        """The claim's ETag, or ``None`` when the message was sent already."""
        entity: dict[str, Any] = {
            "PartitionKey": PARTITION,
            "RowKey": row,
            "incident": key,
            "state": "sending",
            "claimed": time.time(),
            "attempts": 1,
            "updated_at": utcnow(),
        }
        try:
            meta = await self.table.create_entity(entity)
            return str(meta["etag"])
        except ResourceExistsError:
            pass
        try:
            current = await self.table.get_entity(PARTITION, row)
        except ResourceNotFoundError:
            raise TransientError(f"notification claim for {key} vanished; trying again") from None
        state = current.get("state")
        if state == "sent":
            return None
        if state == "sending" and float(current.get("claimed", 0)) > time.time() - CLAIM_TTL_S:
            raise TransientError(f"another attempt is sending the notification for {key}")
        entity["attempts"] = int(current.get("attempts", 1)) + 1
        etag = await replace_if_unchanged(self.table, entity, current.metadata["etag"])
        if etag is None:
            raise TransientError(f"another attempt took over the notification for {key}")
        log.info("taking over the %s notification claim for %s (attempt %s)", state, key, entity["attempts"])
        return etag

    async def _mark(self, row: str, etag: str, state: str) -> None:
        """Best effort. A ``failed`` mark releases the claim so a retry need not wait for
        :data:`CLAIM_TTL_S`; a lost ``sent`` mark leaves a stale claim, which only matters if the
        same incident is attempted again (the window described in the module docs)."""
        patch = {"PartitionKey": PARTITION, "RowKey": row, "state": state, "updated_at": utcnow()}
        try:
            await self.table.update_entity(
                patch, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except Exception as exc:  # the message's fate is decided; storage trouble must not change it
            log.warning("could not record notification state %s: %s", state, type(exc).__name__)

    async def state_of(self, key: str) -> str | None:
        try:
            entity = await self.table.get_entity(PARTITION, encode_key(key))
        except ResourceNotFoundError:
            return None
        return str(entity.get("state"))
