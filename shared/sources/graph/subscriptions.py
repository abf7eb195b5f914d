"""Graph change-notification subscriptions for users and groups: created, renewed well before
their 41,760-minute limit, reauthorized on request, and remembered in Table Storage so the
webhook accepts notifications only for subscriptions entra-sync made."""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from shared.core.work import WorkItem
from shared.errors import NotFound
from shared.sources.graph.source import SUBSCRIPTION_MAX_MINUTES, GraphSource
from shared.stores.queue import WorkQueue
from shared.stores.state import StateStore

log = logging.getLogger("entra_sync.subscriptions")

RESOURCES: Final = ("users", "groups")
# Renew to just under the limit on every run, so a few missed runs never let one lapse.
RENEW_TO_MINUTES: Final = SUBSCRIPTION_MAX_MINUTES - 60
KNOWN_CACHE_S: Final = 30.0


class SubscriptionManager:
    def __init__(
        self,
        source: GraphSource,
        state: StateStore,
        queue: WorkQueue,
        *,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
    ):
        self.source = source
        self.state = state
        self.queue = queue
        self.notification_url = notification_url
        self.lifecycle_url = lifecycle_url
        self.client_state = client_state
        self._known: frozenset[str] = frozenset()
        self._known_at = 0.0

    async def ensure(self) -> dict[str, dict[str, Any]]:
        """Make sure one users and one groups subscription of ours exist and are fresh."""
        ours: dict[str, list[dict[str, Any]]] = {r: [] for r in RESOURCES}
        for sub in await self.source.list_subscriptions():
            resource = str(sub.get("resource", "")).strip("/").lower()
            if sub.get("notificationUrl") == self.notification_url and resource in ours:
                ours[resource].append(sub)
        result: dict[str, dict[str, Any]] = {}
        for resource in RESOURCES:
            existing = ours[resource]
            for extra in existing[1:]:  # duplicates from an earlier crash: keep one
                await self.source.delete_subscription(str(extra["id"]))
            current: dict[str, Any] | None = None
            if existing:
                try:
                    current = await self.source.renew_subscription(str(existing[0]["id"]), RENEW_TO_MINUTES)
                    action = "renewed"
                except NotFound:
                    current = None
            if current is None:
                current = await self.source.create_subscription(
                    resource, self.notification_url, self.lifecycle_url, self.client_state, RENEW_TO_MINUTES
                )
                action = "created"
            log.info(
                "subscription %s for %s %s until %s", current["id"], resource, action, current["expirationDateTime"]
            )
            await self.state.put("subscription", resource, {**current, "action": action})
            if await self.state.get("delta", resource) is None:
                await self.state.put("delta", resource, {"link": await self.source.latest_delta_link(resource)})
            result[resource] = current
        self._known_at = 0.0
        return result

    async def known_ids(self) -> frozenset[str]:
        """Ids of our subscriptions, cached briefly (the webhook asks on every call)."""
        if time.monotonic() - self._known_at > KNOWN_CACHE_S:
            await self.refresh_known()
        return self._known

    async def refresh_known(self) -> frozenset[str]:
        records = await self.state.list("subscription")
        self._known = frozenset(str(r["id"]) for r in records.values() if r.get("id"))
        self._known_at = time.monotonic()
        return self._known

    async def handle_lifecycle(self, item: WorkItem) -> str:
        """``reauthorizationRequired``: reauthorize (or recreate) and queue a delta catch-up, since
        notifications may have been missed meanwhile."""
        try:
            await self.source.reauthorize_subscription(item.id)
            await self.source.renew_subscription(item.id, RENEW_TO_MINUTES)
            done = "reauthorized"
        except NotFound:
            await self.ensure()
            done = "recreated"
        await self.queue.send([WorkItem("delta", "all", "lifecycle", item.id, item.correlation_id)])
        return done
