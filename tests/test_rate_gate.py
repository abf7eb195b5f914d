"""The Auth0 rate gate paces a process from the rate-limit headers, before and after a 429."""

from __future__ import annotations

import asyncio

import pytest

from shared.errors import RateLimited
from shared.targets.auth0.ratelimit import RateGate


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": str(reset)}


def test_a_spent_budget_closes_the_gate_until_the_reset() -> None:
    clock = Clock()
    gate = RateGate(clock)
    gate.observe(headers(50, 3, clock.now + 2))
    assert gate.open_at == 0.0
    gate.observe(headers(50, 0, clock.now + 2))
    assert gate.open_at == clock.now + 2
    with pytest.raises(RateLimited, match=r"next call may go in 2\.0 s"):
        asyncio.run(gate.wait(max_wait_s=1.0))


def test_after_a_429_calls_are_spaced_at_the_limits_rate_then_the_spacing_lifts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    waited: list[float] = []

    async def sleep(seconds: float) -> None:  # time passes only on the fake clock
        waited.append(seconds)

    monkeypatch.setattr("shared.targets.auth0.ratelimit.asyncio.sleep", sleep)
    gate = RateGate(clock)
    gate.throttled(headers(2, 0, clock.now + 1))  # free plan: 2 per second
    assert gate.spacing_s == pytest.approx(0.5)
    clock.now += 1
    slots = []
    for _ in range(4):
        asyncio.run(gate.wait(max_wait_s=10))
        slots.append(gate.next_slot)
    assert slots == pytest.approx([clock.now + 0.5, clock.now + 1.0, clock.now + 1.5, clock.now + 2.0])
    assert waited == pytest.approx([0.5, 1.0, 1.5])  # the first call goes at once, the rest in turn
    gate.observe(headers(2, 1, clock.now + 1))  # half the budget back: no more spacing
    assert gate.spacing_s == 0.0


def test_without_rate_limit_headers_nothing_changes() -> None:
    gate = RateGate(Clock())
    gate.observe({"content-type": "application/json"})
    assert (gate.open_at, gate.spacing_s) == (0.0, 0.0)
