"""Mass changes are held for approval on every path, not only at night.

Like Entra provisioning's accidental-deletion threshold, but for every way a change arrives
(notifications, delta, reconciliation repairs, backfill): before the worker applies a plan, the
guard counts what it would do over a sliding window, per target:

* ``deprovision``: a leaver's deprovisioning starts (block or delete);
* ``attribute:<path>``: one target attribute changed or cleared.

When a count passes the mapping's ``guard`` thresholds (its own, see :class:`GuardPolicy`: a number,
or a share of the managed accounts once at least ``min_changes_for_share`` are counted), the guard
opens a hold *episode*: that change and every later one of the same kind is held (never dropped: the
identity is kept in the state table), one alert goes to the operators naming how many are held and
the command that releases them, and ``entra-sync approve <episode>`` queues the held identities
again, approved, and lets that kind through for the rest of the window. A held leaver keeps their
access until then, which is why the limits are looser than the nightly circuit breaker's.

Where an episode is kept (the state table): ``guard:<target>`` / ``<subject>`` is the episode
(status ``held`` or ``approved``), ``guard-episode`` / ``<episode>`` finds it by id, and
``guard-held:<episode>`` holds one row per held identity: :meth:`MassChangeGuard.held_episodes`
reads them with their counts, for ``status``.

Counting is shared by all instances through the state table without a write per change: each
instance keeps its own per-minute counts and stores them every :data:`FLUSH_EVERY` changes or
:data:`REFRESH_S` seconds, and reads every instance's counts for the window at the same pace. Once
a count is past :data:`EXACT_ABOVE` of its limit, every change is stored and the window re-read
before it is let through, so a limit is exceeded by no more than the changes in flight at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from shared.clock import Clock
from shared.core.model import ActionKind
from shared.core.ports import Alerts, AuditStore, LinkStore, StateStore, WorkQueue
from shared.core.work import WorkItem, item_source
from shared.errors import PermanentError, TransientError
from shared.mapping.model import GuardPolicy, TargetSection
from shared.stores.audit import AuditRow
from shared.stores.keys import utcnow

log = logging.getLogger("entra_sync.guard")

FLUSH_EVERY: Final = 20  # changes counted here before they are stored
REFRESH_S: Final = 5.0  # the window's totals are read again after this long (in the background)
STALE_S: Final = 30.0  # totals older than this (or never read) are read before a change is let through
EXACT_ABOVE: Final = 0.5  # past this share of a limit, every change is stored and checked first
MANAGED_REFRESH_S: Final = 600.0  # how often the managed accounts are counted again
DEPROVISION: Final = "deprovision"
TRIP_TRIES: Final = 3  # reads and conditional writes of an episode row before the item retries later
# The keys that decide when live leavers are held: a file that leaves any out gets a start-up warning.
DEPROVISION_LIMITS: Final = ("max_deprovisions", "max_deprovision_share", "min_changes_for_share")


@dataclass(frozen=True)
class Hold:
    episode: str
    subject: str
    reason: str


def subjects_of(plan: Any) -> list[str]:
    """What in a plan the guard counts: a deprovision that starts, each attribute that changes."""
    out: list[str] = []
    if any(a.kind is ActionKind.START_DEPROVISION for a in plan.actions):
        out.append(DEPROVISION)
    for action in plan.actions:
        if action.kind is ActionKind.UPDATE:
            out.extend(f"attribute:{path}" for path in sorted(action.diff))
    return out


def thresholds(policy: GuardPolicy, subject: str) -> tuple[int, float, str]:
    """The count and share limits of a subject, and what its changes are in a message."""
    if subject == DEPROVISION:
        return policy.max_deprovisions, policy.max_deprovision_share, "accounts would be blocked or deleted"
    path = subject.split(":", 1)[1]
    return policy.max_attribute_changes, policy.max_attribute_change_share, f"accounts would have {path} changed"


def exceeded(policy: GuardPolicy, subject: str, count: int, managed: int) -> str:
    """Why ``count`` changes of ``subject`` within the window would be held ("" when they would not),
    among ``managed`` accounts."""
    most, share, what = thresholds(policy, subject)
    minutes = policy.window_minutes
    if count > most:
        return f"{count} {what} within {minutes} minutes; the limit is {most}"
    if managed and count >= policy.min_changes_for_share and count / managed > share:
        return (
            f"{count} {what} within {minutes} minutes, {count / managed:.1%} of {managed} managed accounts; "
            f"the limit is {share:.1%}"
        )
    return ""


def _minute(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y%m%d%H%M")


def new_episode_id(now: float) -> str:
    """Same form as a reconciliation run id, so ``entra-sync approve <id>`` takes either."""
    return f"{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class MassChangeGuard:
    def __init__(
        self,
        *,
        state: StateStore,
        links: LinkStore,
        audit: AuditStore,
        queue: WorkQueue,
        policy: GuardPolicy,
        alerts: Alerts,
        clock: Clock,
        target: str = "auth0",
        instance: str | None = None,
    ):
        self.state = state
        self.links = links
        self.audit = audit
        self.queue = queue
        self.policy = policy
        self.alerts = alerts
        self.clock = clock
        self.target = target
        self.instance = instance or uuid.uuid4().hex[:12]
        self._lock = asyncio.Lock()
        self._pending: dict[str, dict[str, int]] = {}  # minute -> subject -> counted here, not yet stored
        self._stored: dict[str, dict[str, int]] = {}  # minute -> subject -> this instance's stored counts
        self._totals: dict[str, int] = {}  # subject -> every instance's stored counts in the window
        self._totals_at = -1e18
        self._managed = 0
        self._managed_at = -1e18
        self._recount: asyncio.Task[None] | None = None  # a background count of the managed accounts
        self._syncing: asyncio.Task[None] | None = None  # a background store and read of the counts
        self._flushing: list[dict[str, dict[str, int]]] = []  # pending counts being stored just now
        # subject -> (its episode row or None, when read): read again after REFRESH_S, or at once
        # near a limit, so a change far from any limit costs no state read.
        self._episodes: dict[str, tuple[dict[str, Any] | None, float]] = {}

    @property
    def _counts_kind(self) -> str:
        return f"guard-count:{self.target}"

    @property
    def _episodes_kind(self) -> str:
        return f"guard:{self.target}"

    # -- deciding ----------------------------------------------------------------------------------

    async def check(self, item: WorkItem, plan: Any) -> Hold | None:
        """None to go ahead (the changes are counted), or the hold the item now waits in."""
        subjects = [s for s in subjects_of(plan) if not _approved(item, s)]
        if not subjects:
            return None
        async with self._lock:
            now = self.clock.now()
            for subject in subjects:
                episode = await self._episode(subject, now)
                if episode is not None and episode["status"] == "held":
                    episode = await self._episode(subject, now, fresh=True)  # approved since it was read?
                if episode is not None and episode["status"] == "held":
                    return await self._hold(item, subject, episode)
            # The share rule needs the managed accounts only from min_changes_for_share changes on (a
            # little before, for exact counting): below that, no leaver waits for the links to be counted.
            share_near = any(self._count(s) + 1 >= self.policy.min_changes_for_share * EXACT_ABOVE for s in subjects)
            managed = await self._managed_accounts(now) if share_near else self._warm(now)
            if now - self._totals_at > STALE_S:
                await self._sync(now)  # never read, or long ago: what the other instances counted is unknown
            elif now - self._totals_at > REFRESH_S:
                self._sync_soon(now)  # far from every limit: no change waits for it (near one, see below)
            for subject in subjects:
                limit = self._limit(subject, managed)
                if self._count(subject) + 1 > limit * EXACT_ABOVE:
                    await self._sync(now)  # near the limit: count exactly, across instances
                    episode = await self._episode(subject, now, fresh=True)  # and see every instance's hold
                    if episode is not None and episode["status"] == "held":
                        return await self._hold(item, subject, episode)
                if await self._episode_open(subject, now):
                    continue  # approved: let through for the rest of the window
                reason = self._exceeded(subject, self._count(subject) + 1, managed)
                if reason:  # count the managed accounts afresh before holding anything on a share
                    managed = await self._managed_accounts(now, fresh=True)
                    reason = self._exceeded(subject, self._count(subject) + 1, managed)
                if reason:
                    return await self._trip(item, subject, reason, now)
            minute = _minute(now)
            for subject in subjects:
                bucket = self._pending.setdefault(minute, {})
                bucket[subject] = bucket.get(subject, 0) + 1
            if sum(n for b in self._pending.values() for n in b.values()) >= FLUSH_EVERY:
                self._sync_soon(now)
        return None

    def _count(self, subject: str) -> int:
        unstored = (*self._pending.values(), *(b for flushing in self._flushing for b in flushing.values()))
        return self._totals.get(subject, 0) + sum(b.get(subject, 0) for b in unstored)

    def _limit(self, subject: str, managed: int) -> float:
        """The count at which the share or number rule would trip (for choosing exact counting)."""
        most, share, _ = thresholds(self.policy, subject)
        by_share = max(self.policy.min_changes_for_share, share * managed) if managed else float(most)
        return min(float(most), by_share)

    def _exceeded(self, subject: str, count: int, managed: int) -> str:
        return exceeded(self.policy, subject, count, managed)

    # -- counting across instances -------------------------------------------------------------------

    async def _sync(self, now: float) -> None:
        """Store this instance's new counts, forget what left the window, read every instance's:
        in the caller's path (near a limit, where the count must be exact), after the background
        one under way, if any."""
        running = self._current_sync()
        if running is not None:
            await asyncio.shield(running)
        await self._flush(now)

    def _sync_soon(self, now: float) -> None:
        """:meth:`_sync` in the background (one at a time): far from every limit a change does not
        wait for the counts' round trips, and neither does any other change behind the lock."""
        if self._current_sync() is None:
            self._syncing = asyncio.create_task(self._flush_quietly(now), name=f"guard-sync:{self.target}")

    def _current_sync(self) -> asyncio.Task[None] | None:
        task = self._syncing
        if task is not None and (task.done() or task.get_loop() is not asyncio.get_running_loop()):
            task = self._syncing = None
        return task

    async def _flush_quietly(self, now: float) -> None:
        try:
            await self._flush(now)
        except Exception as exc:  # the counts stay here (pending) and the next sync stores them
            log.warning("guard %s: could not store or read the counts: %s", self.target, type(exc).__name__)

    async def _flush(self, now: float) -> None:
        oldest = _minute(now - self.policy.window_minutes * 60)
        pending, self._pending = self._pending, {}
        self._flushing.append(pending)  # still counted (by _count) while stored
        stored_now: set[str] = set()
        try:
            for minute, counts in pending.items():
                stored = dict(self._stored.get(minute, {}))
                for subject, n in counts.items():
                    stored[subject] = stored.get(subject, 0) + n
                await self.state.put(self._counts_kind, f"{minute}:{self.instance}", {"counts": stored})
                self._stored[minute] = stored
                stored_now.add(minute)
            totals: dict[str, int] = {}
            for name, value in (await self.state.list(self._counts_kind)).items():
                minute = name.split(":", 1)[0]
                if minute < oldest:
                    await self.state.delete(self._counts_kind, name)  # any instance may sweep old minutes
                    self._stored.pop(minute, None)
                    continue
                for subject, n in dict(value.get("counts", {})).items():
                    totals[subject] = totals.get(subject, 0) + int(n)
            self._totals, self._totals_at = totals, now
        except BaseException:
            for minute, counts in pending.items():  # nothing counted is lost: stored ones join the
                into = self._totals if minute in stored_now else self._pending.setdefault(minute, {})
                for subject, n in counts.items():  # totals read last, the rest waits to be stored
                    into[subject] = into.get(subject, 0) + n
            raise
        finally:
            self._flushing.remove(pending)

    async def _managed_accounts(self, now: float, *, fresh: bool = False) -> int:
        """The managed accounts (the target's links). Counted here when never counted yet or asked
        ``fresh`` (before a hold on a share); a count older than :data:`MANAGED_REFRESH_S` is
        counted again in the background while the old one serves. Counting reads every link, and it
        runs inside the guard's lock, where every other deprovision would wait for it."""
        recount = self._current_recount()
        if not fresh and recount is not None and self._managed_at < 0:
            await asyncio.shield(recount)  # the warm-up count under way
        if fresh or self._managed_at < 0:
            self._managed, self._managed_at = await self.links.count(), now
        elif now - self._managed_at > MANAGED_REFRESH_S:
            self._start_recount(now)
        return self._managed

    def _warm(self, now: float) -> int:
        """0: the share rule is far off. A count is started in the background if there is none yet,
        so the first change near the share rule finds one."""
        if self._managed_at < 0:
            self._start_recount(now)
        return 0

    def _current_recount(self) -> asyncio.Task[None] | None:
        """The background count under way in this event loop (one left by another loop is dropped)."""
        task = self._recount
        if task is not None and (task.done() or task.get_loop() is not asyncio.get_running_loop()):
            task = self._recount = None
        return task

    def _start_recount(self, now: float) -> None:
        if self._current_recount() is None:
            self._recount = asyncio.create_task(self._recount_now(now), name=f"guard-managed:{self.target}")

    async def _recount_now(self, now: float) -> None:
        try:
            self._managed, self._managed_at = await self.links.count(), now
        except Exception as exc:  # the older count (or a count in the path, if none) serves instead
            log.warning("guard %s: could not count the managed accounts: %s", self.target, type(exc).__name__)

    # -- episodes ----------------------------------------------------------------------------------------

    async def _episode(self, subject: str, now: float, *, fresh: bool = False) -> dict[str, Any] | None:
        """The subject's episode as stored, read again when ``fresh`` or after :data:`REFRESH_S`."""
        cached = self._episodes.get(subject)
        if fresh or cached is None or now - cached[1] > REFRESH_S:
            cached = (await self.state.get(self._episodes_kind, subject), now)
            self._episodes[subject] = cached
        episode = cached[0]
        if episode is None:
            return None
        if episode["status"] == "approved" and float(episode.get("approved_until", 0)) <= now:
            return None  # its window has passed: a new mass change opens a new episode
        return episode

    async def _episode_open(self, subject: str, now: float) -> bool:
        episode = await self._episode(subject, now)
        return episode is not None and episode["status"] == "approved"

    async def _trip(self, item: WorkItem, subject: str, reason: str, now: float) -> Hold:
        episode: dict[str, Any] = {
            "episode": new_episode_id(now),
            "target": self.target,
            "subject": subject,
            "status": "held",
            "since": utcnow(),
            "reason": reason,
        }
        # Instances that trip at the same moment open one episode between them: the write goes
        # over the version read, the first lands and the others join it. Two episodes would hold
        # leavers in one that an approval of the other never releases.
        for _ in range(TRIP_TRIES):
            current, version = await self.state.read(self._episodes_kind, subject)
            if current is not None and current["status"] == "held":
                self._episodes[subject] = (current, now)
                return await self._hold(item, subject, current)  # another instance tripped first
            if await self.state.put_if(self._episodes_kind, subject, episode, version):
                break
        else:
            raise TransientError(f"the {subject} episode of {self.target} kept changing while it was opened")
        self._episodes[subject] = (episode, now)
        await self.state.put("guard-episode", episode["episode"], {"target": self.target, "subject": subject})
        await self.alerts.send(
            f"guard:{episode['episode']}",
            _alert_text(self.target, subject, reason, str(episode["episode"])),
            source=item.source,
            correlation_id=item.correlation_id,
        )
        return await self._hold(item, subject, episode)

    async def _hold(self, item: WorkItem, subject: str, episode: dict[str, Any]) -> Hold:
        await self.state.put(
            f"guard-held:{episode['episode']}",
            item.id,
            {"correlation_id": item.correlation_id, "source": item.source, "at": utcnow()},
        )
        reason = (
            f"held with the mass change {episode['episode']} ({episode['reason']}); "
            f"released by: entra-sync approve {episode['episode']}"
        )
        return Hold(str(episode["episode"]), subject, reason)

    # -- what is held ------------------------------------------------------------------------------------

    async def held(self, episode_id: str) -> int:
        """How many identities wait in an episode: its ``guard-held:<episode>`` rows, one per identity
        (an identity held twice counts once), as every instance wrote them."""
        return len(await self.state.list(f"guard-held:{episode_id}"))

    async def held_episodes(self) -> list[dict[str, Any]]:
        """This target's episodes still held, each with ``held``: how many identities wait in it."""
        episodes = [e for e in (await self.state.list(self._episodes_kind)).values() if e.get("status") == "held"]
        return [{**e, "held": await self.held(str(e["episode"]))} for e in episodes]

    # -- approving ---------------------------------------------------------------------------------------

    async def episode(self, episode_id: str) -> dict[str, Any] | None:
        where = await self.state.get("guard-episode", episode_id)
        if where is None:
            return None
        episode = await self.state.get(f"guard:{where['target']}", str(where["subject"]))
        return episode if episode is not None and episode.get("episode") == episode_id else None

    async def approve(self, episode_id: str, approver: str) -> int:
        """Queue the held identities again, approved, and let this kind of change through for the
        rest of the window. Returns how many were queued."""
        episode = await self.episode(episode_id)
        if episode is None:
            raise PermanentError(f"no held mass change {episode_id}")
        if episode["status"] != "held":
            raise PermanentError(f"mass change {episode_id} is {episode['status']}, not held: nothing to approve")
        held = await self.state.list(f"guard-held:{episode_id}")
        items = [
            WorkItem("user", entra_id, "approval", episode_id, str(row.get("correlation_id") or uuid.uuid4().hex),
                     approved=f"guard:{episode_id}", identity_source=item_source(self.links.source))
            for entra_id, row in sorted(held.items())
        ]  # fmt: skip
        if items:
            await self.queue.send(items)
        now = self.clock.now()
        episode.update(
            status="approved", approved_by=approver, approved_at=utcnow(),
            approved_until=now + self.policy.window_minutes * 60,
        )  # fmt: skip
        await self.state.put(f"guard:{episode['target']}", str(episode["subject"]), episode)
        await self.audit.write(
            AuditRow(episode_id, "approval", episode_id, "guard", str(episode["target"]), "", "approve", "ok",
                     detail=f"{len(items)} held identities queued, approved by {approver} ({episode['reason']})")
        )  # fmt: skip
        log.info("mass change %s approved by %s: %d identities queued", episode_id, approver, len(items))
        return len(items)


def unwritten_limits(section: TargetSection, version: int) -> str:
    """A warning for start-up when the limits that hold a target's live leavers are defaults the
    mapping file does not write down (always so for a version 1 file written before the guard
    existed), naming the limits in force, the ones left at their default and where to set them;
    "" when the file sets them all."""
    p = section.guard
    unset = [k for k in DEPROVISION_LIMITS if k not in p.configured]
    if not unset:
        return ""
    where = f"{section.where}guard"
    one = len(unset) == 1
    them = "it" if one else "them"
    if len(unset) == len(DEPROVISION_LIMITS):
        origin = "this version 1 mapping file does not set them" if version == 1 else f"{where} does not set them"
        origin = f"defaults: {origin}"
    else:
        origin = f"{_listed(unset)} {'is the default' if one else 'are defaults'}: {where} does not set {them}"
    return (
        f"{section.name}: live leavers are held for approval past {p.max_deprovisions} deprovisions in "
        f"{p.window_minutes} minutes, or past {p.max_deprovision_share:.0%} of the managed accounts once "
        f"{p.min_changes_for_share} are counted ({origin}). Set {where}.{_listed(unset)} "
        f"in the mapping file to choose {them} (see mapping.example.yaml)"
    )


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _alert_text(target: str, subject: str, reason: str, episode: str) -> str:
    """The one alert of an episode: what tripped, how many are held now, and the command that
    releases them. Sent when the first change is held; later ones join the episode quietly."""
    if subject == DEPROVISION:
        held = f"1 leaver is held, still active in {target}; every later leaver of {target} is held too"
    else:
        held = f"1 change of {subject.split(':', 1)[1]} is held; every later one is held too"
    return (
        f"mass change held for {target}: {reason}. {held}, none dropped, until an operator releases them. "
        f"Review, then run: entra-sync approve {episode}"
    )


def _approved(item: WorkItem, subject: str) -> bool:
    """An approved mass change lets its items through; a reconciliation run's items passed the
    nightly circuit breaker for deprovisions (which judged them), not for attribute changes."""
    if item.approved.startswith("guard:"):
        return True
    return item.approved.startswith("reconcile:") and subject == DEPROVISION
