"""The welcome desk's claim: one welcome per account across attempts, a live sender never doubled,
a dead sender's claim taken over after its age, a failed send released for the retry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sandbox.courier import MemoryCourier
from sandbox.memory_stores import MemoryAudit, MemoryState
from shared.errors import PermanentError, TransientError
from shared.targets.auth0.policy import Welcome
from shared.targets.auth0.welcome import CLAIM_TTL_S, CLAIMS, Sends, WelcomeDesk
from tests.support import FakeClock

TICKET = Welcome("password_change_ticket", "https://app.example/hi", 3600)
USER = {"user_id": "auth0|oid-1", "email": "ada@example.com"}


class Tenant:
    def __init__(self, fail: bool = False) -> None:
        self.tickets: list[str] = []
        self.fail = fail

    async def ticket(self, user_id: str, welcome: Welcome) -> str:
        if self.fail:
            raise TransientError("Auth0 answered 503")
        self.tickets.append(user_id)
        return f"https://tenant.example/lo/reset?ticket=secret-{len(self.tickets)}"

    async def verification(self, user_id: str) -> None:
        self.tickets.append(f"verify:{user_id}")

    def sends(self) -> Sends:
        return Sends(self.ticket, self.verification)


def desk(state: MemoryState, courier: MemoryCourier | None, clock: FakeClock, audit: Any = None) -> WelcomeDesk:
    return WelcomeDesk("auth0", "entra", state, audit, courier, clock)


def test_a_welcome_goes_out_once_and_a_second_attempt_only_records_that_it_went_out_before() -> None:
    state, courier, clock, audit, tenant = MemoryState(), MemoryCourier(), FakeClock(), MemoryAudit(), Tenant()
    first = asyncio.run(desk(state, courier, clock, audit).welcome(USER, "oid-1", TICKET, tenant.sends()))
    again = asyncio.run(desk(state, courier, clock, audit).welcome(USER, "oid-1", TICKET, tenant.sends()))
    assert (first, again) == ("sent", "already_sent")
    assert tenant.tickets == ["auth0|oid-1"]
    assert [(letter.to, "secret-1" in letter.text) for letter in courier.letters] == [("ada@example.com", True)]
    assert [(r["action"], r["outcome"]) for r in audit.rows] == [("welcome", "ok"), ("welcome", "skipped")]
    assert all("secret" not in str(r) for r in audit.rows)  # the ticket is a credential


def test_a_live_senders_claim_is_waited_for_and_a_dead_ones_is_taken_over_after_its_age() -> None:
    state, courier, clock, tenant = MemoryState(), MemoryCourier(), FakeClock(), Tenant()
    claim = {"state": "sending", "claimed": clock.now(), "attempts": 1}
    asyncio.run(state.put(CLAIMS, "auth0:auth0|oid-1:joiner", claim))
    with pytest.raises(TransientError, match="another attempt is sending"):
        asyncio.run(desk(state, courier, clock).welcome(USER, "oid-1", TICKET, tenant.sends()))
    assert courier.letters == []
    clock.advance(CLAIM_TTL_S + 1)  # its sender died between the claim and the record
    assert asyncio.run(desk(state, courier, clock).welcome(USER, "oid-1", TICKET, tenant.sends())) == "sent"
    assert len(courier.letters) == 1


def test_a_failed_send_releases_the_claim_for_the_retry_and_a_ticket_without_a_courier_is_refused() -> None:
    state, courier, clock = MemoryState(), MemoryCourier(), FakeClock()
    with pytest.raises(TransientError):
        asyncio.run(desk(state, courier, clock).welcome(USER, "oid-1", TICKET, Tenant(fail=True).sends()))
    tenant = Tenant()
    assert asyncio.run(desk(state, courier, clock).welcome(USER, "oid-1", TICKET, tenant.sends())) == "sent"
    with pytest.raises(PermanentError, match="no courier"):
        asyncio.run(desk(MemoryState(), None, clock).welcome(USER, "oid-1", TICKET, tenant.sends()))
    verify = Welcome("verification_email")
    assert asyncio.run(desk(MemoryState(), None, clock).welcome(USER, "oid-1", verify, tenant.sends())) == "sent"
    assert tenant.tickets == ["auth0|oid-1", "verify:auth0|oid-1"]
