"""A target's rate gate: the calls to one target wait while the target has said "not now" (a 429's
``Retry-After``, a vendor's reset header), in this process at once and in every other one through
the target's shared health record. Vendor headers are read in the vendor's package
(:mod:`shared.targets.auth0.ratelimit`); this module knows only times and RFC 6585 / 9110's
``Retry-After``.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final, Protocol

from shared.clock import SYSTEM, Clock
from shared.errors import RateLimited

MAX_RETRY_AFTER_S: Final = 3600.0  # a server's Retry-After is believed up to an hour
# A closing at least this long is written to the shared record; a shorter one (a spent budget's
# next call, a fraction of a second away) is over before another instance would read the record
# (:data:`shared.services.health.CACHE_S`), so it stays in this process and costs no storage write.
SHARED_CLOSING_S: Final = 1.0

# When the waiting of the work under way must end, on the gate's clock (None: no limit but each
# call's own). A share of a work item sets it (:func:`waiting_at_most`), so the waits of all its
# calls and their retries add up to at most that, not a call's limit times the calls it makes.
_WAIT_UNTIL: ContextVar[float | None] = ContextVar("entra_sync_rate_wait_until", default=None)


@contextmanager
def waiting_at_most(seconds: float, now: float) -> Iterator[None]:
    """Within the block (this task and the tasks it starts), rate-limit waits end ``seconds`` after
    ``now``: a wait past that is a :class:`RateLimited` for the worker to wait out on the queue,
    where it holds no worker slot."""
    token = _WAIT_UNTIL.set(now + seconds)
    try:
        yield
    finally:
        _WAIT_UNTIL.reset(token)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or an HTTP-date), at most an hour, or
    None when there is none or it cannot be read."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(0.0, when - now), MAX_RETRY_AFTER_S)


class SharedGate(Protocol):
    """Where a gate's closing is shared with the other instances (the target's :class:`Health`)."""

    async def gate_until(self) -> float: ...

    async def close_gate(self, until: float) -> None: ...


class RateGate:
    """One target's calls, paced. Closed until a time (``close``, after a 429 ``throttled``), for
    every instance when it has a ``shared`` record (read at most as often as that record is
    cached). After a 429 whose limit is known it also spaces calls at the rate the limit implies
    (``limit`` calls per window), so waiting callers do not all go at the reset instant and spend
    the new budget at once. A budget that refills call by call (a token bucket, as Auth0's) is
    paced with ``spent`` instead: closed only until the next call's worth is back, the spacing
    doubled on each refusal. ``relax`` drops the spacing once the budget is healthy again. A wait
    longer than the caller allows becomes a :class:`RateLimited` for the worker to wait out.
    """

    def __init__(self, clock: Clock = SYSTEM, shared: SharedGate | None = None, name: str = "the target"):
        self.clock = clock
        self.shared = shared
        self.name = name
        self.open_at = 0.0
        self.spacing_s = 0.0
        self.next_slot = 0.0

    async def close(self, until: float) -> None:
        """No call before ``until`` (epoch seconds), here at once and for every instance."""
        self.open_at = max(self.open_at, until)
        if self.shared is not None:
            await self.shared.close_gate(until)

    async def throttled(self, until: float, limit: int | None = None) -> None:
        """A 429: closed until ``until``; with the ``limit`` of the window that ends then, calls are
        spaced at its rate afterwards."""
        await self.close(until)
        if limit:
            window = max(until - self.clock.now(), 1.0)
            self.spacing_s = max(self.spacing_s, window / limit)

    async def spent(self, per_call_s: float, *, refused: bool = False, max_spacing_s: float = 60.0) -> None:
        """The target's budget is spent and refills one call every ``per_call_s``: the next call
        goes when one is back, not when the whole budget is (that idles through a refill the
        target would have served: a 50-call bucket at 16/s held every call 3-4 s at a time), and
        this process's calls are spaced at least ``per_call_s`` apart. After a refusal (a 429) the
        spacing doubles, up to ``max_spacing_s``: instances that called too fast together each slow
        down until their sum fits, without knowing how many they are."""
        per_call_s = max(per_call_s, 0.0)
        until = self.clock.now() + per_call_s
        if per_call_s >= SHARED_CLOSING_S:
            await self.close(until)
        else:
            self.open_at = max(self.open_at, until)
        spacing = self.spacing_s * 2 if refused else self.spacing_s
        self.spacing_s = min(max(spacing, per_call_s), max(max_spacing_s, per_call_s))

    def relax(self) -> None:
        self.spacing_s = 0.0

    async def wait(self, max_wait_s: float) -> None:
        """Until the next call may go (on the clock), or :class:`RateLimited` if that is further
        away than ``max_wait_s`` or than the work under way may still wait (:func:`waiting_at_most`)."""
        if self.shared is not None:
            self.open_at = max(self.open_at, await self.shared.gate_until())
        now = self.clock.now()
        until = _WAIT_UNTIL.get()
        if until is not None:
            max_wait_s = min(max_wait_s, max(0.0, until - now))
        start = max(now, self.open_at)
        if self.spacing_s:
            start = max(start, self.next_slot)
        delay = start - now
        if delay > max_wait_s:
            raise RateLimited(f"{self.name} rate limit: the next call may go in {delay:.1f} s", retry_after_s=delay)
        if self.spacing_s:
            self.next_slot = start + self.spacing_s
        if delay > 0:
            await self.clock.sleep(delay)
