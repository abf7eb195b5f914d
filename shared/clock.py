"""Time as the services see it, so tests move it instead of sleeping.

Every component that waits or compares times takes a :class:`Clock`; production passes
:data:`SYSTEM`. Epoch seconds (not a monotonic clock) because lease expiry times are stored and
compared by other instances.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM: Final = SystemClock()
