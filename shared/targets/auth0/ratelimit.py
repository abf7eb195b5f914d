"""Auth0's rate limits, read from its ``x-ratelimit-*`` headers into the target's rate gate
(:class:`shared.services.ratelimit.RateGate`).

Auth0 answers every limited call with ``x-ratelimit-limit``, ``-remaining`` and ``-reset`` (epoch
seconds). A spent budget closes the gate until the reset before a 429 is met (:func:`observe`, on
every answer); a 429 closes it until the reset (or its ``Retry-After``) and spaces the calls after
it at the limit's rate (:func:`throttled`).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.services.ratelimit import RateGate, retry_after


async def observe(gate: RateGate, headers: Mapping[str, str]) -> None:
    limit, remaining, reset = budget(headers)
    if remaining is None:
        return
    if remaining <= 0 and reset is not None:
        await gate.close(reset)
    elif limit and remaining >= limit / 2:
        gate.relax()


async def throttled(gate: RateGate, headers: Mapping[str, str]) -> None:
    limit, _, _ = budget(headers)
    await gate.throttled(reset_epoch(headers, gate.clock.now()), max(limit or 1, 1))


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


def reset_epoch(headers: Mapping[str, str], now: float) -> float:
    """When a 429 says calls may go again: ``x-ratelimit-reset``, else ``Retry-After``, else in 1 s."""
    _, _, reset = budget(headers)
    if reset is not None:
        return reset
    lower = {k.lower(): v for k, v in headers.items()}
    wait = retry_after(lower.get("retry-after"), now)
    return now + (1.0 if wait is None else wait)
