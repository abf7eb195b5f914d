"""A target's rate gate paces its calls from what the target said (Auth0's rate-limit headers, a
429's Retry-After), before and after a 429, and shares a closing with every instance."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import pytest

from sandbox.memory_stores import MemoryAudit, MemoryHealth, MemoryQueue
from shared.core.work import WorkItem
from shared.errors import LeaseBusy, LeaseLost, RateLimited, TryLater
from shared.services.health import Health
from shared.services.ratelimit import RateGate, retry_after
from shared.services.waits import Waits
from shared.targets.auth0.ratelimit import observe, throttled
from tests.support import RecordingClock


def headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": str(reset)}


def test_a_spent_budget_closes_the_gate_until_the_reset() -> None:
    clock = RecordingClock()
    gate = RateGate(clock)
    asyncio.run(observe(gate, headers(50, 3, clock.now() + 2)))
    assert gate.open_at == 0.0
    asyncio.run(observe(gate, headers(50, 0, clock.now() + 2)))
    assert gate.open_at == clock.now() + 2
    with pytest.raises(RateLimited, match=r"next call may go in 2\.0 s"):
        asyncio.run(gate.wait(max_wait_s=1.0))


def test_after_a_429_calls_are_spaced_at_the_limits_rate_then_the_spacing_lifts() -> None:
    clock = RecordingClock()
    gate = RateGate(clock)
    asyncio.run(throttled(gate, headers(2, 0, clock.now() + 1)))  # free plan: 2 per second
    assert gate.spacing_s == pytest.approx(0.5)
    clock.advance(1)
    start = clock.now()
    for _ in range(4):
        asyncio.run(gate.wait(max_wait_s=10))
    assert gate.next_slot == pytest.approx(start + 2.0)
    assert clock.slept == pytest.approx([0.5, 0.5, 0.5])  # the first call goes at once, the rest in turn
    asyncio.run(observe(gate, headers(2, 1, clock.now() + 1)))  # half the budget back: no more spacing
    assert gate.spacing_s == 0.0


def test_without_rate_limit_headers_nothing_changes() -> None:
    gate = RateGate(RecordingClock())
    asyncio.run(observe(gate, {"content-type": "application/json"}))
    assert (gate.open_at, gate.spacing_s) == (0.0, 0.0)


def test_retry_after_reads_delta_seconds_and_http_dates_and_ignores_the_rest() -> None:
    now = 1_700_000_000.0
    assert retry_after("4", now) == 4.0
    assert retry_after(formatdate(now + 90, usegmt=True), now) == pytest.approx(90.0)
    assert retry_after(formatdate(now - 90, usegmt=True), now) == 0.0  # a date gone by: now
    assert retry_after("86400", now) == 3600.0  # believed up to an hour
    assert retry_after("soon", now) is None and retry_after(None, now) is None and retry_after("", now) is None


def test_a_429_closes_the_gate_for_every_instance_sharing_the_targets_record() -> None:
    clock = RecordingClock()
    store = MemoryHealth()
    here = RateGate(clock, Health("scim:crm", store, clock), name="scim:crm")
    there = RateGate(clock, Health("scim:crm", store, clock), name="scim:crm")  # another instance
    elsewhere = RateGate(clock, Health("scim:hr", store, clock), name="scim:hr")  # another target

    async def scenario() -> None:
        await elsewhere.wait(0)  # the other instances have read the record before the 429
        await there.wait(0)
        await here.throttled(clock.now() + 4)
        clock.advance(2.5)  # past the cache: the other instance reads the closing
        with pytest.raises(RateLimited, match=r"scim:crm rate limit: the next call may go in 1\.5 s"):
            await there.wait(0)
        await elsewhere.wait(0)  # another target's budget is its own
        clock.advance(1.5)
        await there.wait(0)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("wait", "reread"),
    [
        (RateLimited("Auth0 rate limit", retry_after_s=3.0), False),  # nothing of its own in flight
        (LeaseBusy("another worker holds the identity"), False),
        (LeaseLost("the lease lapsed during a write"), True),  # a write of its own may land late
    ],
    ids=["rate-limited", "busy", "lease-lost"],
)
def test_only_a_share_whose_lease_lapsed_is_marked_to_read_its_target_on_the_next_try(
    wait: TryLater, reread: bool
) -> None:
    queue, audit = MemoryQueue(), MemoryAudit()
    share = WorkItem("user", "5f1c6a3e-9d2b-4c8e-8a1f-2b3c4d5e6f70", "notification", target="auth0")
    assert asyncio.run(Waits(queue, audit).defer(share, wait, "auth0")) is not None
    (message,) = queue.messages
    assert (message.item.deferrals, message.item.reread) == (1, reread)  # as the message carries it
    assert WorkItem.from_json(message.item.to_json()) == message.item
    assert '"reread"' not in share.to_json()  # items without it keep the message format they had
