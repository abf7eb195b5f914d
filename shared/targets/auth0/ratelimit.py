"""Auth0's rate limits, read from its ``x-ratelimit-*`` headers and paced against."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from shared.errors import RateLimited


class RateGate:
    """Shared by every Auth0 call in the process, so concurrent invocations pace together.

    It reads Auth0's ``x-ratelimit-limit/-remaining/-reset`` on every answer (``observe``): when the
    budget is spent it closes until the reset. After a 429 (``throttled``) it also spaces calls at the
    rate the limit implies (limit calls per reset window), so waiting callers do not all retry at the
    reset instant and spend the new budget at once; the spacing is dropped once the budget is healthy
    again. A wait longer than the caller allows becomes a :class:`RateLimited` for the host to retry.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.open_at = 0.0
        self.spacing_s = 0.0
        self.next_slot = 0.0

    def close_until(self, epoch_s: float) -> None:
        self.open_at = max(self.open_at, epoch_s)

    def observe(self, headers: Mapping[str, str]) -> None:
        limit, remaining, reset = _budget(headers)
        if remaining is None:
            return
        if remaining <= 0 and reset is not None:
            self.close_until(reset)
        elif limit and remaining >= limit / 2:
            self.spacing_s = 0.0

    def throttled(self, headers: Mapping[str, str]) -> None:
        reset = _reset_epoch(headers)
        self.close_until(reset)
        limit, _, _ = _budget(headers)
        window = max(reset - self.clock(), 1.0)
        self.spacing_s = max(self.spacing_s, window / max(limit or 1, 1))

    async def wait(self, max_wait_s: float) -> None:
        now = self.clock()
        start = max(now, self.open_at)
        if self.spacing_s:
            start = max(start, self.next_slot)
        delay = start - now
        if delay > max_wait_s:
            raise RateLimited(f"Auth0 rate limit: the next call may go in {delay:.1f} s", retry_after_s=delay)
        if self.spacing_s:
            self.next_slot = start + self.spacing_s
        if delay > 0:
            await asyncio.sleep(delay)


def _budget(headers: Mapping[str, str]) -> tuple[int | None, int | None, float | None]:
    lower = {k.lower(): v for k, v in headers.items()}

    def number(name: str) -> float | None:
        try:
            return float(lower[name])
        except (KeyError, ValueError):
            return None

    limit, remaining, reset = number("x-ratelimit-limit"), number("x-ratelimit-remaining"), number("x-ratelimit-reset")
    return (
        int(limit) if limit is not None else None,
        int(remaining) if remaining is not None else None,
        reset,
    )


def _reset_epoch(headers: Mapping[str, str] | None) -> float:
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    try:
        return float(headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        pass
    try:
        return time.time() + float(headers["retry-after"])
    except (KeyError, ValueError):
        return time.time() + 1.0
