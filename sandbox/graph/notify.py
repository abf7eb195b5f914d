"""Outbound traffic of the Graph emulator: the subscription validation handshake and batched
change-notification delivery from a background thread.

Delivery can misbehave the way Graph's does, seeded: items lost (``drop_rate``), delivered more than
once (``max_copies``: each item goes out 1 to ``max_copies`` times) and out of order (``hold_max_s``:
each copy is held a random time up to that bound before it may be sent).

Only loopback URLs are ever contacted (the emulator refuses any other notification URL when a
subscription is created).
"""

from __future__ import annotations

import logging
import random
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
MAX_COPIES = 10  # the most deliveries of one item that may be asked for
MAX_HOLD_S = 60.0  # the longest a copy may be held back to reorder it


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
    """One notification item waiting to go to ``url``, not before ``due`` (the notifier's clock)."""

    url: str
    item: dict[str, Any]
    due: float = 0.0


@dataclass
class DeliveryStats:
    queued: int = 0
    dropped: int = 0  # lost on purpose (the seeded drop rate)
    copies: int = 0  # extra deliveries of kept items (the seeded duplication)
    held: int = 0  # deliveries held back a random time (the seeded reordering)
    delivered: int = 0  # items in batches the receiver accepted with 2xx
    failed: int = 0  # items in batches that never got a 2xx
    batches: int = 0
    attempts: int = 0
    dropped_items: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10_000))

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "dropped": self.dropped,
            "copies": self.copies,
            "held": self.held,
            "delivered": self.delivered,
            "failed": self.failed,
            "batches": self.batches,
            "attempts": self.attempts,
        }


class Notifier:
    """A queue drained by one thread: items for the same URL go out together in one POST.

    ``flush_s`` is how long the thread waits after the first due item for more to join the
    batch. Non-2xx answers and transport errors are retried ``retries`` times with a short
    doubling backoff. ``should_drop`` decides (seeded) whether an item is lost before sending.
    Each kept item is then queued 1 to ``max_copies`` times, each copy due after a hold of up to
    ``hold_max_s``; copies go out in the order they fall due, so holds reorder them. The number of
    copies and the holds come from a generator seeded with ``seed`` (``configure`` may reseed it);
    ``clock`` (monotonic seconds) decides when a held copy is due.
    """

    def __init__(
        self, should_drop: Callable[[], bool], *, seed: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._should_drop = should_drop
        self._clock = clock
        self._seed = seed
        self._random = random.Random(seed)
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
        self.max_copies = 1
        self.hold_max_s = 0.0

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        known = set(self.settings())
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
            if "max_copies" in settings:
                copies = int(settings["max_copies"])
                if not 1 <= copies <= MAX_COPIES:
                    raise ValueError(f"max_copies must be within 1..{MAX_COPIES}")
                self.max_copies = copies
            if "hold_max_s" in settings:
                hold = float(settings["hold_max_s"])
                if not 0.0 <= hold <= MAX_HOLD_S:
                    raise ValueError(f"hold_max_s must be within 0..{MAX_HOLD_S:g}")
                self.hold_max_s = hold
            if "seed" in settings:
                self._seed = int(settings["seed"])
                self._random = random.Random(self._seed)
            return self.settings()

    def settings(self) -> dict[str, Any]:
        return {
            "drop_rate": self.drop_rate,
            "flush_s": self.flush_s,
            "retries": self.retries,
            "backoff_s": self.backoff_s,
            "timeout_s": self.timeout_s,
            "max_batch": self.max_batch,
            "max_copies": self.max_copies,
            "hold_max_s": self.hold_max_s,
            "seed": self._seed,
        }

    def reset(self) -> None:
        """Forget queued items and counters; delivery is faithful again (no drops, one copy, no hold),
        like the base's faults, and the generator starts over from its seed."""
        with self._cond:
            self._queue.clear()
            self.stats = DeliveryStats()
            self.drop_rate = 0.0
            self.max_copies = 1
            self.hold_max_s = 0.0
            self._random = random.Random(self._seed)

    def enqueue(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        with self._cond:
            now = self._clock()
            for delivery in deliveries:
                self.stats.queued += 1
                if self.drop_rate > 0 and self._should_drop():
                    self.stats.dropped += 1
                    self.stats.dropped_items.append(delivery.item)
                    continue
                copies = self._random.randint(1, self.max_copies) if self.max_copies > 1 else 1
                self.stats.copies += copies - 1
                for _ in range(copies):
                    hold = self._random.uniform(0.0, self.hold_max_s) if self.hold_max_s > 0 else 0.0
                    self.stats.held += hold > 0
                    self._queue.append(Delivery(delivery.url, delivery.item, now + hold))
            self._cond.notify_all()

    def take_due(self) -> list[Delivery]:
        """Remove and return the queued deliveries that are due now, in the order they fell due."""
        with self._cond:
            now = self._clock()
            due = sorted((d for d in self._queue if d.due <= now), key=lambda d: d.due)
            if due:
                self._queue = [d for d in self._queue if d.due > now]
            return due

    def _next_due_in(self) -> float | None:
        """Seconds until the first queued delivery is due (0 or less: now); None when nothing waits.
        Called holding the condition."""
        if not self._queue:
            return None
        return min(d.due for d in self._queue) - self._clock()

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
                    while not self._stopping:
                        wait_s = self._next_due_in()
                        if wait_s is not None and wait_s <= 0:
                            break
                        # a held copy falls due, or a new item arrives (notify_all wakes the wait)
                        self._cond.wait(None if wait_s is None else min(wait_s, MAX_HOLD_S))
                    if self._stopping:
                        return
                    self._busy = True
                    flush_s = self.flush_s
                if flush_s > 0:
                    time.sleep(flush_s)  # let a burst of changes join one batch
                pending = self.take_due()
                with self._cond:
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
