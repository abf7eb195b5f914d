"""Catching up with Graph: the delta links read forward, group changes turned into user work.

Every source only says which identity may have changed; this is how group changes (and a lost
notification) become work items for the worker. Group membership counts directly or through any
group nested in a mapped one, so the groups watched are the mapped groups and every group nested
inside them (kept in the state table, worked out again whenever a delta page shows a nesting
change). Delta links are stored only after their items are queued: a crash replays, never skips.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Final

from shared.core.ports import AuditStore, LeaseStore, StateStore, WorkQueue
from shared.core.work import WorkItem
from shared.mapping.model import SyncMapping
from shared.services.worker import Outcome
from shared.sources.graph.source import DeltaExpired, GraphSource, GroupDeltaPage
from shared.stores.audit import AuditRow
from shared.telemetry import correlated

log = logging.getLogger("entra_sync.delta")

GROUPS_DELTA_LEASE: Final = "job:groups-delta"
USERS_DELTA_LEASE: Final = "job:users-delta"
WATCHED_GROUPS: Final = ("groups", "watched")  # state row: the mapped groups and the groups nested in them
WATCHED_CACHE_S: Final = 60.0


class DeltaService:
    def __init__(
        self,
        *,
        source: GraphSource,
        mapping: SyncMapping,
        state: StateStore,
        leases: LeaseStore,
        queue: WorkQueue,
        audit: AuditStore,
        lease_wait_s: float = 3.0,
    ):
        self.source = source
        self.mapping = mapping
        self.state = state
        self.leases = leases
        self.queue = queue
        self.audit = audit
        self.lease_wait_s = lease_wait_s
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

    async def catch_up(self, item: WorkItem, resources: Iterable[str] = ("users", "groups")) -> Outcome:
        """Read the stored delta links forward and enqueue every user whose data or relevant
        membership changed. Links are stored only after their items are enqueued."""
        enqueued = 0
        for resource in resources:
            lease_key = GROUPS_DELTA_LEASE if resource == "groups" else USERS_DELTA_LEASE
            async with self.leases.held(lease_key, wait_s=self.lease_wait_s * 3):
                enqueued += await self._catch_up(item, resource)
        await self._audit(item, "delta_catch_up", "ok", detail=f"{enqueued} users enqueued")
        return Outcome(item, "fanned_out", enqueued=enqueued)

    async def _catch_up(self, item: WorkItem, resource: str) -> int:
        stored = await self.state.get("delta", resource)
        if stored is None:
            return await self._full_pass(item, resource)
        try:
            if resource == "groups":
                page = await self.source.groups_delta(stored["link"])
                users = await self._users_from_group_changes(page)
                link = page.delta_link
            else:
                users, link = await self.source.users_delta(stored["link"])
        except DeltaExpired:
            correlated(log, item.correlation_id).warning("%s delta link expired; full pass", resource)
            return await self._full_pass(item, resource)
        await self._enqueue(item, users)
        await self.state.put("delta", resource, {"link": link})
        return len(users)

    async def _full_pass(self, item: WorkItem, resource: str) -> int:
        """No usable cursor: a full delta round enqueues everyone who could matter and yields a
        fresh link to continue from."""
        if resource == "groups":
            page = await self.source.groups_delta(None)
            users = await self._users_from_group_changes(page)
            link = page.delta_link
        else:
            users, link = await self.source.users_delta(None)
        await self._enqueue(item, users)
        await self.state.put("delta", resource, {"link": link})
        return len(users)

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

    async def _enqueue(self, item: WorkItem, users: Iterable[str]) -> None:
        items = [
            WorkItem("user", uid, "delta", item.source_ref or item.kind, item.correlation_id) for uid in sorted(users)
        ]
        if items:
            await self.queue.send(items)

    async def _audit(self, item: WorkItem, action: str, outcome: str, detail: str = "") -> None:
        await self.audit.write(AuditRow.for_item(item, "", action, outcome, detail=detail))
