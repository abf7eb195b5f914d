"""Auth0's rate limits, read from its ``x-ratelimit-*`` headers into the target's rate gate
(:class:`shared.services.ratelimit.RateGate`).

Auth0 answers every limited call with ``x-ratelimit-limit`` (the bucket's size), ``-remaining`` and
``-reset`` (epoch seconds, when the bucket is full again). The bucket refills call by call, so a
spent one serves the next call after ``(reset - now) / limit`` seconds, not at the reset: a spent
budget (on any answer, before a 429 is met) closes the gate for that long and spaces this
process's calls at that rate (:func:`observe`); a 429 does the same and doubles the spacing, so
instances that together called too fast back off until their sum fits (:func:`throttled`). Half
the budget back lifts the spacing. A 429's ``Retry-After``, when Auth0 sends one, is honoured too.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.services.ratelimit import RateGate, retry_after


async def observe(gate: RateGate, headers: Mapping[str, str]) -> None:
    limit, remaining, reset = budget(headers)
    if remaining is None:
        return
    if remaining <= 0 and reset is not None:
        per_call_s, window_s = _refill(limit, reset, gate.clock.now())
        await gate.spent(per_call_s, max_spacing_s=window_s)
    elif limit and remaining >= limit / 2:
        gate.relax()


async def throttled(gate: RateGate, headers: Mapping[str, str]) -> None:
    limit, _, reset = budget(headers)
    now = gate.clock.now()
    lower = {k.lower(): v for k, v in headers.items()}
    wait = retry_after(lower.get("retry-after"), now)
    if wait is not None:
        await gate.close(now + wait)  # the server's word on when a call may go
    if reset is None:
        await gate.spent(1.0 if wait is None else 0.0, refused=True)
        return
    per_call_s, window_s = _refill(limit, reset, now)
    await gate.spent(per_call_s, refused=True, max_spacing_s=window_s)


def _refill(limit: int | None, reset: float, now: float) -> tuple[float, float]:
    """(seconds per call, seconds to refill the whole bucket) when the bucket is empty: it is full
    again at ``reset`` (whole seconds, so up to a second late), ``limit`` calls later."""
    window_s = max(reset - now, 1.0)
    return window_s / max(limit or 1, 1), window_s


def budget(headers: Mapping[str, str]) -> tuple[int | None, int | None, float | None]:
    """(limit, remaining, reset epoch) from the ``x-ratelimit-*`` headers, each None when absent."""
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
