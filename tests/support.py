"""Helpers the tests share (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_MAPPING = REPO / "mapping.example.yaml"

CLIENT_STATE = "sandbox-client-state-0123456789"


def sandbox_env(
    *,
    storage: str,
    graph_base_url: str = "http://127.0.0.1:9/v1.0",
    auth0_base_url: str = "http://127.0.0.1:9/api/v2",
    graph_token: str = "sandbox-graph-token",
    auth0_token: str = "sandbox-auth0-token",
    **extra: str,
) -> dict[str, str]:
    """A complete, valid settings environment for the sandbox (defaults point at closed ports)."""
    env = {
        "GRAPH_BASE_URL": graph_base_url,
        "GRAPH_TOKEN": graph_token,
        "GRAPH_CLIENT_STATE": CLIENT_STATE,
        "GRAPH_NOTIFICATION_URL": "http://127.0.0.1:7071/api/graph_webhook",
        "GRAPH_LIFECYCLE_URL": "http://127.0.0.1:7071/api/graph_lifecycle",
        "AUTH0_BASE_URL": auth0_base_url,
        "AUTH0_TOKEN": auth0_token,
        "AzureWebJobsStorage": storage,
        "DELTA_SCHEDULE": "0 */5 * * * *",
        "RECONCILE_SCHEDULE": "0 0 2 * * *",
        "RISK_SCHEDULE": "0 * * * * *",
        "SUBSCRIPTIONS_SCHEDULE": "0 0 */6 * * *",
        "SYNC_MAPPING_FILE": str(EXAMPLE_MAPPING),
    }
    env.update(extra)
    return env


class FakeClock:
    """A :class:`shared.clock.Clock` that moves only when told: ``sleep`` waits until
    :meth:`advance` (or :meth:`run_for`) moves the time past its deadline."""

    def __init__(self, start: float | None = None):
        self._now = time.time() if start is None else start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, wake))
        await wake

    def advance(self, seconds: float) -> None:
        self._now += seconds
        due = [(at, wake) for at, wake in self._sleepers if at <= self._now]
        self._sleepers = [(at, wake) for at, wake in self._sleepers if at > self._now]
        for _, wake in due:
            if not wake.done():
                wake.set_result(None)

    async def run_for(self, seconds: float, step: float = 5.0, settle_s: float = 2.0) -> None:
        """Advance in steps. After each, wait (at most ``settle_s``) until every task it woke has gone
        back to sleep, so periodic work (lease renewals) has done its storage calls."""
        end = self._now + seconds
        while self._now < end:
            sleeping = len(self._sleepers)
            self.advance(min(step, end - self._now))
            deadline = time.monotonic() + settle_s
            while len(self._sleepers) < sleeping and time.monotonic() < deadline:
                await asyncio.sleep(0.002)


class RecordingClock(FakeClock):
    """Sleeping moves the time at once, and each sleep is written down."""

    def __init__(self) -> None:
        super().__init__(1_000.0)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


class PausedClock:
    """Tells the same time as ``base`` but never wakes a sleeper: a worker whose process is starved,
    so its lease renewals never run."""

    def __init__(self, base: FakeClock):
        self.base = base

    def now(self) -> float:
        return self.base.now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.get_running_loop().create_future()
