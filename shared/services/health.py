"""Per-target health: a circuit breaker, so a target that is down never delays another.

After ``threshold`` consecutive transient failures a target is *quarantined* for a cool-down that
doubles each time it trips again (up to ``max_cooldown_s``): the worker sends it nothing and
re-schedules its part of each work item for the end of the cool-down. The first call after it is a
probe: a success closes the breaker, a failure opens it again at once. Kept per process: each
instance finds out for itself, within ``threshold`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from shared.clock import Clock

THRESHOLD: Final = 5
COOLDOWN_S: Final = 30.0
MAX_COOLDOWN_S: Final = 300.0


@dataclass
class Health:
    clock: Clock
    threshold: int = THRESHOLD
    cooldown_s: float = COOLDOWN_S
    max_cooldown_s: float = MAX_COOLDOWN_S
    failures: int = 0  # consecutive
    trips: int = 0
    open_until: float = 0.0
    last_error: str = field(default="")

    def wait_s(self) -> float:
        """Seconds until the target may be called again; 0 when it may be now."""
        return max(0.0, self.open_until - self.clock.now())

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        if self.failures >= self.threshold:
            cooldown = min(self.cooldown_s * 2**self.trips, self.max_cooldown_s)
            self.open_until = self.clock.now() + cooldown
            self.trips += 1

    def succeeded(self) -> None:
        self.failures = self.trips = 0
        self.open_until = 0.0

    @property
    def quarantined(self) -> bool:
        return self.wait_s() > 0
