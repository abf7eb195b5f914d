"""Per-target health: a circuit breaker shared by every instance. It protects a target from us,
not us from progress: a target in trouble is called no more than a probe at a time, and its shares
wait for it without spending their attempts, so an outage of any length loses nothing.

The states, kept in the health store (:class:`~shared.core.ports.HealthRecord`, one per target):

* **closed**: calls go. ``threshold`` transient failures in a row open it. Failures are counted
  once per state: a call carries the ``generation`` it started under (its :class:`Ticket`), and a
  call that ends after the breaker opened or closed (it was in flight) changes nothing.
* **open** (quarantined) until ``open_until``: nothing is called; the worker re-schedules each
  share for the end of the cool-down without spending an attempt. The cool-down starts at
  ``cooldown_s`` and doubles each time a probe fails, up to ``max_cooldown_s`` (minutes, not the
  hours of Entra's own quarantine), so a target that comes back is found within that.
* **half-open**, after ``open_until``: one instance claims the probe with a conditional write; its
  call goes and every other share waits (:data:`PROBE_WAIT_S`). A success closes the breaker, a
  failure opens it again. A claim lapses after :data:`PROBE_HOLD_S`, so a prober that died does
  not wedge the target; a probe that learned nothing (a rate limit, a busy lease, a refusal that is
  not an outage) gives its claim back.

What may be trusted, and for how long: a process keeps the record it read for ``cache_s`` (on its
clock) and writes only on a transition (open, claim, close, the rate gate's closing, given up). Another
instance's opening is therefore seen up to ``cache_s`` late (the calls in that window may go, and
their failures extend nothing); a claim, an opening and a close are always decided on a fresh read
and written over the version read, so exactly one instance makes each. The consecutive failures
that open a closed breaker are counted in each process (no write per failure).

The record also holds the target's rate gate (``gate_until``, read and closed through
:meth:`gate_until` and :meth:`close_gate` by :class:`shared.services.ratelimit.RateGate`) and an
operator's ``paused`` flag, honoured here like a quarantine that does not end by itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from shared.clock import Clock
from shared.core.ports import HealthRecord, HealthStore

THRESHOLD: Final = 5
COOLDOWN_S: Final = 30.0
MAX_COOLDOWN_S: Final = 300.0
CACHE_S: Final = 2.0
# A probe's claim lapses after this: longer than a target call may take (the clients' timeouts)
# and the lease's fence margin, so it lapses only for a prober that died.
PROBE_HOLD_S: Final = 60.0
PROBE_WAIT_S: Final = 15.0  # a share that meets another instance's probe looks again this much later
PAUSED_WAIT_S: Final = 300.0  # a paused target's shares look again this much later
GATE_SLACK_S: Final = 0.5  # a rate gate's closing this close to the known one is not written again
_WRITE_TRIES: Final = 4


@dataclass(frozen=True)
class Ticket:
    """Leave to call a target: under which generation of its record, and whether as the probe."""

    generation: int
    probe: bool = False


@dataclass(frozen=True)
class Admission:
    """Whether a share may call its target now: a ticket, or how long to wait and why."""

    ticket: Ticket | None
    wait_s: float = 0.0
    why: str = ""


class Health:
    """One target's breaker, as this process sees and changes the shared record."""

    def __init__(
        self,
        target: str,
        store: HealthStore,
        clock: Clock,
        *,
        threshold: int = THRESHOLD,
        cooldown_s: float = COOLDOWN_S,
        max_cooldown_s: float = MAX_COOLDOWN_S,
        cache_s: float = CACHE_S,
    ):
        self.target = target
        self.store = store
        self.clock = clock
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.cache_s = cache_s
        self.record = HealthRecord()  # as last read or written here
        self.failures = 0  # consecutive, in this process, under the record's generation
        self.last_error = ""
        self._version: str | None = None
        self._read_at = -math.inf

    # -- reading -----------------------------------------------------------------------------------

    async def view(self) -> HealthRecord:
        """The record, read again when the one held is older than ``cache_s``."""
        age = self.clock.now() - self._read_at
        if not 0 <= age < self.cache_s:
            await self._refresh()
        return self.record

    def quarantine_s(self) -> float:
        """Seconds the breaker stays open as this process last saw it (no I/O); 0 when it is not."""
        if self.record.open_until == 0:
            return 0.0
        return max(0.0, self.record.open_until - self.clock.now())

    async def admit(self) -> Admission:
        """Whether a share may call the target now. In the half-open state this claims the probe."""
        now = self.clock.now()
        verdict = _verdict(await self.view(), now)
        if verdict is not None:
            return verdict

        def claim(r: HealthRecord) -> HealthRecord | None:
            if _verdict(r, now) is not None:
                return None
            return dataclasses.replace(r, probe_until=now + PROBE_HOLD_S)

        claimed = await self._change(claim)
        if claimed is not None:
            return Admission(Ticket(claimed.generation, probe=True))
        verdict = _verdict(self.record, now)
        return verdict if verdict is not None else Admission(None, PROBE_WAIT_S, "is being probed by another call")

    # -- a call's end ------------------------------------------------------------------------------

    async def failed(self, ticket: Ticket | None, error: str) -> HealthRecord | None:
        """A call under ``ticket`` failed the way an outage does. Counted only when the breaker is
        still in the state the call started in; a probe's failure opens it again at once. The record
        this failure opened (for the one instance whose write did it: it tells the operators), or None."""
        self.last_error = error
        if ticket is None or ticket.generation != self.record.generation:
            return None  # started before the breaker opened or closed: in flight, not evidence of now
        if not ticket.probe:
            self.failures += 1
            if self.failures < self.threshold:
                return None
            self.failures = 0
        now = self.clock.now()

        def open_(r: HealthRecord) -> HealthRecord | None:
            if r.generation != ticket.generation:
                return None  # another instance changed the state first
            cooldown = min(self.cooldown_s * 2**r.trips, self.max_cooldown_s)
            return dataclasses.replace(
                r, generation=r.generation + 1, open_until=now + cooldown, trips=r.trips + 1, probe_until=0.0,
                reason=error[:500],
            )  # fmt: skip

        return await self._change(open_)

    async def succeeded(self, ticket: Ticket | None) -> None:
        """A call under ``ticket`` succeeded: a probe's success closes the breaker."""
        self.failures = 0
        if ticket is None or ticket.generation != self.record.generation or not ticket.probe:
            return

        def close(r: HealthRecord) -> HealthRecord | None:
            if r.generation != ticket.generation:
                return None
            return dataclasses.replace(
                r, generation=r.generation + 1, open_until=0.0, trips=0, probe_until=0.0, reason=""
            )

        await self._change(close)

    async def release(self, ticket: Ticket | None) -> None:
        """A probe learned nothing about the target (it waited, or was refused for its own reasons):
        give its claim back so the next share may probe."""
        if ticket is None or not ticket.probe or ticket.generation != self.record.generation:
            return

        def give_back(r: HealthRecord) -> HealthRecord | None:
            return dataclasses.replace(r, probe_until=0.0) if r.generation == ticket.generation else None

        await self._change(give_back)

    # -- the rate gate's share of the record -------------------------------------------------------

    async def gate_until(self) -> float:
        return (await self.view()).gate_until

    async def close_gate(self, until: float) -> None:
        """Close the target's rate gate until ``until`` for every instance (written only when it
        closes later than the record already says)."""
        if until <= self.record.gate_until + GATE_SLACK_S:
            return

        def close(r: HealthRecord) -> HealthRecord | None:
            return dataclasses.replace(r, gate_until=until) if until > r.gate_until + GATE_SLACK_S else None

        await self._change(close)

    # -- an operator -------------------------------------------------------------------------------

    async def set_paused(self, paused: bool, by: str, at: str) -> HealthRecord | None:
        """Pause (or resume) the target for every instance: its shares wait on the queue, nothing
        is called and no attempt is spent. The record as written, or None when it kept changing."""

        def switch(r: HealthRecord) -> HealthRecord:
            return dataclasses.replace(r, paused=paused, paused_by=by if paused else "", paused_at=at if paused else "")

        return await self._change(switch)

    # -- storage -----------------------------------------------------------------------------------

    async def _refresh(self) -> None:
        record, version = await self.store.read(self.target)
        self._hold(record, version)

    def _hold(self, record: HealthRecord, version: str | None) -> None:
        if record.generation != self.record.generation:
            self.failures = 0  # counted under a state that is over
        self.record, self._version, self._read_at = record, version, self.clock.now()

    async def _change(self, change: Callable[[HealthRecord], HealthRecord | None]) -> HealthRecord | None:
        """``change`` applied to a fresh read and written over its version, read again and tried
        again when another instance wrote first (a few times: then it is theirs to decide). The
        record written, or None when ``change`` declined."""
        await self._refresh()
        for _ in range(_WRITE_TRIES):
            new = change(self.record)
            if new is None:
                return None
            version = await self.store.write(self.target, new, self._version)
            if version is not None:
                self._hold(new, version)
                return new
            await self._refresh()
        return None


def _verdict(record: HealthRecord, now: float) -> Admission | None:
    """What the record says a share may do now, or None when the probe is free to claim."""
    if record.paused:
        return Admission(None, PAUSED_WAIT_S, "is paused by an operator")
    if record.open_until == 0:
        return Admission(Ticket(record.generation))
    if now < record.open_until:
        return Admission(None, record.open_until - now, f"is quarantined ({record.reason})")
    if record.probe_until > now:
        return Admission(None, min(record.probe_until - now, PROBE_WAIT_S), "is being probed by another call")
    return None
