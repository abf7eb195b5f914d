"""Outbound traffic of the Graph emulator: the subscription validation handshake and batched
change-notification delivery from a background thread.

Only loopback URLs are ever contacted (the emulator refuses any other notification URL when a
subscription is created).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

log = logging.getLogger("sandbox.graph")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and (parts.hostname or "") in LOOPBACK_HOSTS


def with_query(url: str, name: str, value: str) -> str:
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{name}={quote(value, safe='')}"


def validation_token() -> str:
    # Graph's tokens are free text with spaces and colons, which tests that receivers decode them.
    return f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"


def handshake(url: str, timeout_s: float) -> str | None:
    """POST ``url?validationToken=...``; ``None`` on success, else why it failed."""
    token = validation_token()
    try:
        response = httpx.post(
            with_query(url, "validationToken", token),
            content=b"",
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        return f"the endpoint could not be reached ({type(exc).__name__})"
    if response.status_code != 200:
        return f"the endpoint answered {response.status_code}"
    if response.text != token:
        return "the endpoint did not answer with the validation token"
    return None


@dataclass
class Delivery:
    """One notification item waiting to go to ``url``."""

    url: str
    item: dict[str, Any]


@dataclass
class DeliveryStats:
    queued: int = 0
    dropped: int = 0  # lost on purpose (the seeded drop rate)
    delivered: int = 0  # items in batches the receiver accepted with 2xx
    failed: int = 0  # items in batches that never got a 2xx
    batches: int = 0
    attempts: int = 0
    dropped_items: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10_000))

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "dropped": self.dropped,
            "delivered": self.delivered,
            "failed": self.failed,
            "batches": self.batches,
            "attempts": self.attempts,
        }


class Notifier:
    """A queue drained by one thread: items for the same URL go out together in one POST.

    ``flush_s`` is how long the thread waits after the first queued item for more to join the
    batch. Non-2xx answers and transport errors are retried ``retries`` times with a short
    doubling backoff. ``should_drop`` decides (seeded) whether an item is lost before sending.
    """

    def __init__(self, should_drop: Callable[[], bool]) -> None:
        self._should_drop = should_drop
        self._cond = threading.Condition()
        self._queue: list[Delivery] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._busy = False
        self.stats = DeliveryStats()
        self.drop_rate = 0.0
        self.flush_s = 0.02
        self.retries = 3
        self.backoff_s = 0.05
        self.timeout_s = 3.0
        self.max_batch = 100

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        known = {"drop_rate", "flush_s", "retries", "backoff_s", "timeout_s", "max_batch"}
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"unknown notification settings {sorted(unknown)} (known: {sorted(known)})")
        with self._cond:
            if "drop_rate" in settings:
                rate = float(settings["drop_rate"])
                if not 0.0 <= rate <= 1.0:
                    raise ValueError("drop_rate must be within 0..1")
                self.drop_rate = rate
            for name in ("flush_s", "backoff_s", "timeout_s"):
                if name in settings:
                    setattr(self, name, max(0.0, float(settings[name])))
            if "retries" in settings:
                self.retries = max(0, int(settings["retries"]))
            if "max_batch" in settings:
                self.max_batch = max(1, int(settings["max_batch"]))
            return self.settings()

    def settings(self) -> dict[str, Any]:
        return {
            "drop_rate": self.drop_rate,
            "flush_s": self.flush_s,
            "retries": self.retries,
            "backoff_s": self.backoff_s,
            "timeout_s": self.timeout_s,
            "max_batch": self.max_batch,
        }

    def reset(self) -> None:
        """Forget queued items and counters; the drop rate goes back to 0 (like the base's faults)."""
        with self._cond:
            self._queue.clear()
            self.stats = DeliveryStats()
            self.drop_rate = 0.0

    def enqueue(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        with self._cond:
            for delivery in deliveries:
                self.stats.queued += 1
                if self.drop_rate > 0 and self._should_drop():
                    self.stats.dropped += 1
                    self.stats.dropped_items.append(delivery.item)
                    continue
                self._queue.append(delivery)
            self._cond.notify_all()

    def idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued has been sent (or given up); True when idle."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # -- thread --------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="graph-notifier", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        with httpx.Client() as client:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping:
                        self._cond.wait()
                    if self._stopping:
                        return
                    self._busy = True
                    flush_s = self.flush_s
                if flush_s > 0:
                    time.sleep(flush_s)  # let a burst of changes join one batch
                with self._cond:
                    pending, self._queue = self._queue, []
                    max_batch = self.max_batch
                try:
                    for url, items in _group_by_url(pending):
                        for start in range(0, len(items), max_batch):
                            self._send(client, url, items[start : start + max_batch])
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()

    def _send(self, client: httpx.Client, url: str, items: list[dict[str, Any]]) -> None:
        with self._cond:
            retries, backoff, timeout = self.retries, self.backoff_s, self.timeout_s
        for attempt in range(retries + 1):
            if self._stopping:
                return
            with self._cond:
                self.stats.attempts += 1
            try:
                response = client.post(url, json={"value": items}, timeout=timeout)
                ok = 200 <= response.status_code < 300
            except httpx.HTTPError as exc:
                log.debug("notification to %s failed: %r", url, exc)
                ok = False
            if ok:
                with self._cond:
                    self.stats.delivered += len(items)
                    self.stats.batches += 1
                return
            if attempt < retries:
                time.sleep(backoff * (2**attempt))
        with self._cond:
            self.stats.failed += len(items)


def _group_by_url(pending: list[Delivery]) -> list[tuple[str, list[dict[str, Any]]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for delivery in pending:
        grouped.setdefault(delivery.url, []).append(delivery.item)
    return list(grouped.items())
