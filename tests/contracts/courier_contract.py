"""The contract every :class:`shared.targets.auth0.welcome.Courier` passes (the in-memory one; a
mail channel, such as Graph ``sendMail``, subclasses it with its own ``couriers`` fixture): what the
welcome desk relies on when it hands a joiner their ticket."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest

from shared.errors import TransientError
from shared.targets.auth0.welcome import Courier


@dataclass
class Couriers:
    courier: Courier
    mailbox: Callable[[str], list[tuple[str, str]]]  # address -> (subject, text) of what reached it
    down: Callable[[], None]  # the mail service stops accepting messages


Opener = Callable[[], AbstractAsyncContextManager[Couriers]]


def run(couriers: Opener, body: Callable[[Couriers], Awaitable[None]]) -> None:
    async def scenario() -> None:
        async with couriers() as c:
            await body(c)

    asyncio.run(scenario())


class CourierContract:
    @pytest.fixture
    def couriers(self) -> Opener:
        raise NotImplementedError("a CourierContract subclass opens its courier in a `couriers` fixture")

    def test_a_message_reaches_its_one_recipient_with_its_subject_and_text(self, couriers: Opener) -> None:
        async def body(c: Couriers) -> None:
            assert isinstance(c.courier, Courier)
            await c.courier.deliver("welcome:auth0|1", "ada@example.com", "Your new account", "Choose a password: x")
            assert c.mailbox("ada@example.com") == [("Your new account", "Choose a password: x")]
            assert c.mailbox("grace@example.com") == []

        run(couriers, body)

    def test_a_message_the_service_refuses_raises_a_transient_error_and_reaches_nobody(self, couriers: Opener) -> None:
        async def body(c: Couriers) -> None:
            c.down()
            with pytest.raises(TransientError):
                await c.courier.deliver("welcome:auth0|1", "ada@example.com", "Your new account", "text")
            assert c.mailbox("ada@example.com") == []

        run(couriers, body)
