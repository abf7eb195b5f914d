"""The in-memory courier (sandbox/courier.py) against the Courier contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from sandbox.courier import MemoryCourier
from shared.errors import TransientError
from tests.contracts.courier_contract import CourierContract, Couriers, Opener


class TestMemoryCourier(CourierContract):
    @pytest.fixture
    def couriers(self) -> Opener:
        @asynccontextmanager
        async def in_memory() -> AsyncIterator[Couriers]:
            courier = MemoryCourier()

            def down() -> None:
                courier.fail_with = TransientError("mail service answered 503")

            yield Couriers(courier, lambda to: [(m.subject, m.text) for m in courier.to(to)], down)

        return in_memory
