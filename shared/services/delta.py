"""Catching up with Graph: the delta links read forward, group changes turned into user work.

Every source only says which identity may have changed; this is how group changes (and a lost
notification) reach the worker. Group membership counts directly or through any group nested in a
mapped one, so the groups watched are the mapped groups and every group nested inside them (kept in
the state table, worked out again whenever a delta page shows a nesting change).

A group notification reads the groups delta forward and, when it names few users
(:data:`shared.services.fanout.INLINE_USERS`), converges them here through the worker
(:func:`shared.services.fanout.converge_here`); more are queued. Only one invocation reads the
groups delta at a time, and nobody waits for it: a group change that finds
the read under way leaves a re-run request (a state row) and completes, and the reader reads
forward again after it lets go, for at most :data:`MAX_GROUP_ROUNDS` rounds, then queues a
follow-up. Every reader clears the request before it reads and looks for one after it lets go, so
a request is always seen by a read that starts after it (see :meth:`DeltaService._groups`). A
reader that dies holding the lease leaves the request standing for the next reader: its own item
is delivered again, and the timer's pass never coalesces: it waits out the dead reader's lease
(it lapses after a minute) and reads the groups delta forward itself.

Delta links are stored only after their users are handled (converged here or queued): a crash
replays, never skips.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from shared.clock import SYSTEM, Clock
from shared.core.ports import AuditStore, DeltaSource, GroupDeltaPage, LeaseStore, StateStore, WorkQueue
from shared.core.work import WorkItem
from shared.errors import DeltaExpired, LeaseBusy
from shared.mapping.model import SyncMapping
from shared.services.fanout import INLINE_USERS, Converge, converge_here
from shared.services.worker import Outcome
from shared.stores.audit import AuditRow
from shared.stores.leases import LEASE_TTL_S
from shared.telemetry import correlated

log = logging.getLogger("entra_sync.delta")

GROUPS_DELTA_LEASE: Final = "job:groups-delta"
USERS_DELTA_LEASE: Final = "job:users-delta"
RESOURCES: Final = ("users", "groups")
WATCHED_GROUPS: Final = ("groups", "watched")  # state row: the mapped groups and the groups nested in them
WATCHED_CACHE_S: Final = 60.0
# State row: a group change arrived while the groups delta was being read; whoever holds the read
# reads forward again. Present or absent is all it says.
GROUPS_RERUN: Final = ("groups", "rerun")
# Reads of the groups delta one invocation makes before it hands what is still asked for to a
# queued follow-up: under a stream of group changes one invocation must not loop for ever.
MAX_GROUP_ROUNDS: Final = 3


@dataclass
class _Tally:
    """What one catch-up did, over its resources and rounds."""

    enqueued: int = 0
    converged: list[Outcome] = field(default_factory=list)
    rounds: int = 0  # groups-delta reads
    coalesced: bool = False  # handed to the read under way, read nothing itself
    follow_up: bool = False


class DeltaService:
    def __init__(
        self,
        *,
        source: DeltaSource,
        mapping: SyncMapping,
        state: StateStore,
        leases: LeaseStore,
        queue: WorkQueue,
        audit: AuditStore,
        lease_wait_s: float = 3.0,
        converge: Converge | None = None,
        reader_wait_s: float = LEASE_TTL_S + 5.0,
        clock: Clock = SYSTEM,
    ):
        """``converge``: how one user item is converged in this invocation (the worker's
        ``sync_user``); without it every user is queued."""
        self.source = source
        self.mapping = mapping
        self.state = state
        self.leases = leases
        self.queue = queue
        self.audit = audit
        self.lease_wait_s = lease_wait_s
        self.converge = converge
        self.reader_wait_s = reader_wait_s  # how long the timer's pass waits for the groups-delta read
        self.clock = clock
        self._watched: frozenset[str] | None = None
        self._watched_at = 0.0

    async def sync_group(self, item: WorkItem) -> Outcome:
        watched = await self.watched_groups()
        if item.id not in watched:
            watched = await self.watched_groups(fresh=True)  # nested moments ago, by another instance?
        if item.id not in watched:
            detail = "group is not in the mapping's scope or roles, nor nested in a group that is"
            await self._audit(item, "group_change", "skipped", detail=detail)
            return Outcome(item, "ignored")
        return await self.catch_up(item, resources=("groups",))

    async def watched_groups(self, *, fresh: bool = False) -> frozenset[str]:
        """The groups whose membership matters: the mapping's scope and role groups, and every group
        nested inside them (a member of a nested group is a member of the mapped one). Stored in the
        state table, kept here for ``WATCHED_CACHE_S``; ``fresh`` reads the stored set again."""
        mapped = self.mapping.relevant_groups
        if not mapped:
            return frozenset()
        if not fresh and self._watched is not None and time.monotonic() - self._watched_at < WATCHED_CACHE_S:
            return self._watched
        stored = await self.state.get(*WATCHED_GROUPS)
        if stored is None or set(stored.get("mapped", ())) != mapped:
            return await self.rewatch()
        return self._keep_watched(frozenset(str(g) for g in stored.get("groups", ())))

    async def rewatch(self) -> frozenset[str]:
        """Work the watched groups out again from Graph (after a nesting change) and store them."""
        mapped = self.mapping.relevant_groups
        groups = set(mapped)
        for group_id in sorted(mapped):
            groups |= await self.source.nested_groups(group_id)
        await self.state.put(*WATCHED_GROUPS, {"mapped": sorted(mapped), "groups": sorted(groups)})
        return self._keep_watched(frozenset(groups))

    def _keep_watched(self, groups: frozenset[str]) -> frozenset[str]:
        self._watched, self._watched_at = groups, time.monotonic()
        return groups

    async def catch_up(self, item: WorkItem, resources: Iterable[str] | None = None) -> Outcome:
        """Read the stored delta links forward and hand over every user whose data or relevant
        membership changed. ``resources``: by default the one the item names (``users``,
        ``groups``), or both. Links are stored only after their users are handled."""
        if resources is None:
            resources = (item.id,) if item.id in RESOURCES else RESOURCES
        tally = _Tally()
        for resource in resources:
            if resource == "groups":
                await self._groups(item, tally)
                continue
            async with self.leases.held(USERS_DELTA_LEASE, wait_s=self.reader_wait_s):  # only passes read it
                users, link = await self._read(item, resource)
                await self._hand_over(item, users, "delta", tally)
                await self.state.put("delta", resource, {"link": link})
        if tally.coalesced and tally.rounds == 0 and tally.enqueued == 0:
            detail = "the groups delta was being read: asked the reader to read forward again"
            await self._audit(item, "delta_catch_up", "coalesced", detail=detail)
            return Outcome(item, "coalesced")
        detail = f"{len(tally.converged)} users converged here, {tally.enqueued} enqueued"
        if tally.rounds:
            detail += f"; groups delta read {tally.rounds} times"
        elif tally.coalesced:
            detail += "; the groups delta was being read: asked the reader to read forward again"
        if tally.follow_up:
            detail += "; a re-run was still asked for: a follow-up is queued"
        await self._audit(item, "delta_catch_up", "ok", detail=detail)
        return Outcome(item, "fanned_out", enqueued=tally.enqueued, parts=tally.converged)

    async def _groups(self, item: WorkItem, tally: _Tally) -> None:
        """Read the groups delta forward, one reader at a time, nobody waiting for it.

        A reader takes the lease without waiting, clears the re-run request, reads, hands the users
        over, stores the link, lets go, and only then looks for a request. Whoever finds the lease
        taken puts the request and tries the lease once more: if it gets it, it reads itself;
        if not, the holder it found has not let go yet, so the holder's look after letting go
        comes after the request and sees it, unless a read that starts later cleared it first.
        Either way a read that starts after the request covers the change behind it; the look
        comes after letting go so a request put just after the last round is not missed.
        """
        source = "group" if item.kind == "group" or item.source == "group" else "delta"
        # The timer's pass (and a lifecycle catch-up) is the safety net: it reads itself, waiting out
        # a reader that was killed holding the lease (nobody else would read its request).
        patient = item.kind == "delta" and item.source != "group"
        asked = False  # a request is known to be standing: a reader who has the lease will see it
        while True:
            async with contextlib.AsyncExitStack() as held:
                try:
                    wait_s = self.reader_wait_s if patient else 0
                    await held.enter_async_context(self.leases.held(GROUPS_DELTA_LEASE, wait_s=wait_s))
                except LeaseBusy:
                    if patient:
                        raise
                    if asked:
                        tally.coalesced = True
                        return
                    await self.state.put(*GROUPS_RERUN, {"by": item.correlation_id})
                    asked = True
                    continue
                await self.state.delete(*GROUPS_RERUN)  # before the read: a request from now on is seen below
                users, link = await self._read(item, "groups")
                await self._hand_over(item, users, source, tally)
                await self.state.put("delta", "groups", {"link": link})
                tally.rounds += 1
            if await self.state.get(*GROUPS_RERUN) is None:
                return
            asked, source = True, "group"  # only group changes ask for a re-run
            if tally.rounds >= MAX_GROUP_ROUNDS:
                follow = WorkItem("delta", "groups", "group", item.source_ref or item.kind, item.correlation_id)
                await self.queue.send([follow])
                tally.follow_up = True
                return

    async def _read(self, item: WorkItem, resource: str) -> tuple[set[str], str]:
        """The users changed since the stored link, and the link to store once they are handled. No
        usable link (none yet, or expired): a full round, which names everyone who could matter."""
        stored = await self.state.get("delta", resource)
        if stored is None:
            return await self._read_from(resource, None)
        try:
            return await self._read_from(resource, str(stored["link"]))
        except DeltaExpired:
            correlated(log, item.correlation_id).warning("%s delta link expired; full pass", resource)
            return await self._read_from(resource, None)

    async def _read_from(self, resource: str, link: str | None) -> tuple[set[str], str]:
        if resource == "groups":
            page = await self.source.groups_delta(link)
            return await self._users_from_group_changes(page), page.delta_link
        return await self.source.users_delta(link)

    async def backfill(self, correlation_id: str | None = None) -> int:
        """Initial load: enqueue every user once (a full users-delta round), then keep the round's
        delta link so catch-ups continue from here."""
        item = WorkItem("delta", "users", "backfill", "backfill", correlation_id or uuid.uuid4().hex)
        async with self.leases.held(USERS_DELTA_LEASE, wait_s=self.lease_wait_s * 3):
            users, link = await self.source.users_delta(None)
            items = [WorkItem("user", uid, "backfill", "backfill", item.correlation_id) for uid in sorted(users)]
            await self.queue.send(items)
            await self.state.put("delta", "users", {"link": link})
        await self._audit(item, "backfill", "ok", detail=f"{len(items)} users enqueued")
        return len(items)

    async def _users_from_group_changes(self, page: GroupDeltaPage) -> set[str]:
        """Users whose membership of a watched group changed, directly or through a nested group
        that was added or removed; a nesting change also works the watched groups out again."""
        watched = await self.watched_groups()
        users: set[str] = set()
        nesting_changed = bool(page.deleted_groups & watched)
        for bucket in (page.added, page.removed):
            for group_id, members in bucket.items():
                if group_id not in watched:
                    continue
                for member in members:
                    if member in page.nested_groups:
                        nesting_changed = True
                        users |= await self.source.transitive_user_members(member)
                    else:
                        users.add(member)
        if nesting_changed:
            await self.rewatch()
        return users

    async def _hand_over(self, item: WorkItem, users: Iterable[str], source: str, tally: _Tally) -> None:
        """Give the users to the worker: a group change's few here and now, the rest through the
        queue (``source`` "group" for a group change, "delta" for a pass over the links)."""
        ref = item.source_ref or item.kind
        items = [WorkItem("user", uid, source, ref, item.correlation_id) for uid in sorted(users)]
        if source == "group" and self.converge is not None and len(items) <= INLINE_USERS:
            items = await self._converge_here(item, items, tally)
        if items:
            await self.queue.send(items)
            tally.enqueued += len(items)

    async def _converge_here(self, item: WorkItem, items: list[WorkItem], tally: _Tally) -> list[WorkItem]:
        """Converge ``items`` through the worker; returns those to queue (:func:`converge_here`)."""
        assert self.converge is not None
        done, left = await converge_here(item, items, self.converge, self.clock)
        tally.converged.extend(done)
        return left

    async def _audit(self, item: WorkItem, action: str, outcome: str, detail: str = "") -> None:
        await self.audit.write(AuditRow.for_item(item, "", action, outcome, detail=detail))
