"""The in-memory Alerts (sandbox/memory_stores.py) against the Alerts contract: a webhook that is
down is the memory alerts' ``fail_with``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from sandbox.memory_stores import MemoryAlerts, MemoryAudit
from shared.errors import TransientError
from tests.contracts.alerts_contract import AlertsContract, Opener, Operators


class TestMemoryAlerts(AlertsContract):
    @pytest.fixture
    def operators(self) -> Opener:
        @asynccontextmanager
        async def in_memory(configured: bool = True) -> AsyncIterator[Operators]:
            audit = MemoryAudit()
            alerts = MemoryAlerts(audit, configured=configured)

            def down() -> None:
                alerts.fail_with = TransientError("notification webhook answered 500")

            def up() -> None:
                alerts.fail_with = None

            yield Operators(alerts, audit, lambda: list(alerts.delivered), down, up)

        return in_memory
