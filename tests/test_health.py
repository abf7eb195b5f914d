"""The breaker's states as two instances share them (one health store): failures counted once per
state, one probe at a time, closed by a success. Through the service the worker uses; the worker
and the queue functions are exercised in tests/integration/test_target_health.py."""

from __future__ import annotations

import asyncio

from sandbox.memory_stores import MemoryHealth
from shared.services.health import CACHE_S, COOLDOWN_S, MAX_COOLDOWN_S, THRESHOLD, Health
from tests.support import FakeClock


def test_calls_in_flight_when_the_breaker_opened_do_not_extend_it() -> None:
    clock = FakeClock(1_000.0)
    health = Health("auth0", MemoryHealth(), clock)

    async def scenario() -> None:
        tickets = [(await health.admit()).ticket for _ in range(THRESHOLD + 15)]  # twenty under way
        for ticket in tickets:
            await health.failed(ticket, "TransientError: 503")
        assert health.quarantine_s() == COOLDOWN_S  # opened once, by the first THRESHOLD

    asyncio.run(scenario())


def test_one_instance_probes_at_a_time_a_failure_doubles_the_cool_down_and_a_success_closes_it() -> None:
    clock, store = FakeClock(1_000.0), MemoryHealth()
    here, there = Health("auth0", store, clock), Health("auth0", store, clock)

    async def scenario() -> None:
        for _ in range(THRESHOLD):
            await here.failed((await here.admit()).ticket, "TransientError: 503")
        clock.advance(CACHE_S)
        waiting = await there.admit()  # the other instance sees the quarantine
        assert waiting.ticket is None and waiting.wait_s == COOLDOWN_S - CACHE_S
        clock.advance(COOLDOWN_S)
        probe = await here.admit()
        behind = await there.admit()
        assert probe.ticket is not None and probe.ticket.probe
        assert behind.ticket is None and "probed" in behind.why  # exactly one call goes
        await here.failed(probe.ticket, "TransientError: 503 again")
        assert here.quarantine_s() == 2 * COOLDOWN_S
        for _ in range(10):  # a long outage: the cool-down stops growing at minutes
            clock.advance(here.quarantine_s())
            await here.failed((await here.admit()).ticket, "TransientError: 503")
        assert here.quarantine_s() == MAX_COOLDOWN_S
        clock.advance(MAX_COOLDOWN_S)
        probe = await there.admit()
        assert probe.ticket is not None and probe.ticket.probe
        await there.succeeded(probe.ticket)
        clock.advance(CACHE_S)
        after = await here.admit()
        assert after.ticket is not None and not after.ticket.probe and here.quarantine_s() == 0

    asyncio.run(scenario())


def test_a_probe_that_learned_nothing_gives_its_claim_back() -> None:
    clock = FakeClock(1_000.0)
    health = Health("scim:crm", MemoryHealth(), clock)

    async def scenario() -> None:
        for _ in range(THRESHOLD):
            await health.failed((await health.admit()).ticket, "TransientError: 503")
        clock.advance(COOLDOWN_S)
        probe = await health.admit()
        assert probe.ticket is not None and probe.ticket.probe
        await health.release(probe.ticket)  # it met a rate limit, say
        again = await health.admit()
        assert again.ticket is not None and again.ticket.probe

    asyncio.run(scenario())
