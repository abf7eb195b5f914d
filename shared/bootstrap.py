"""The composition root: settings and mapping in, ready services out.

``function_app.py`` calls :func:`init` once at start-up: a settings or mapping problem stops the app
there, naming the setting or the mapping entry. Functions reach their collaborators through
:func:`services`, which builds each SDK client and adapter on first use and keeps it for the life of
the worker process (one event loop). Tests call :func:`init` with their own settings (sandbox URLs,
Azurite) and may override any named part.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceExistsError

from shared import names
from shared.clock import SYSTEM, Clock
from shared.mapping.model import SyncMapping, load_mapping
from shared.redact import install_log_redaction
from shared.services.alerts import Alerts
from shared.services.guard import MassChangeGuard
from shared.services.notify import Notifier
from shared.services.reconcile import Reconciler
from shared.services.worker import Ports, SyncService
from shared.settings import Settings
from shared.sources.graph.client import graph_client
from shared.sources.graph.source import GraphSource
from shared.sources.graph.subscriptions import SubscriptionManager
from shared.stores.audit import AuditStore
from shared.stores.clients import blob_service, queue_service, table_service
from shared.stores.keys import ensure_tables
from shared.stores.leases import LeaseStore
from shared.stores.links import LinkStore
from shared.stores.queue import WorkQueue
from shared.stores.state import StateStore
from shared.targets.auth0.bulk import ImportBackfill
from shared.targets.auth0.client import auth0_client
from shared.targets.auth0.ratelimit import RateGate
from shared.targets.auth0.target import Auth0Target


@dataclass
class Services:
    settings: Settings
    mapping: SyncMapping
    overrides: dict[str, Any] = field(default_factory=dict)
    _built: dict[str, Any] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _storage_ready: bool = False

    def _get(self, name: str, factory: Any) -> Any:
        if name in self.overrides:
            return self.overrides[name]
        with self._lock:
            if name not in self._built:
                self._built[name] = factory()
            return self._built[name]

    async def aclose(self) -> None:
        """Close the clients this object built (not overrides, which belong to the caller)."""
        with self._lock:
            built, self._built = self._built, {}
            self._storage_ready = False
        for obj in built.values():
            close = getattr(obj, "close", None)
            if close is not None and not isinstance(
                obj, SyncService | SubscriptionManager | Reconciler | ImportBackfill
            ):
                result = close()
                if asyncio.iscoroutine(result):
                    await result

    # -- SDK clients -------------------------------------------------------------------------------

    @property
    def graph(self) -> Any:
        return self._get("graph", lambda: graph_client(self.settings))

    @property
    def auth0(self) -> Any:
        return self._get("auth0", lambda: auth0_client(self.settings, gate=self.auth0_gate))

    @property
    def auth0_gate(self) -> RateGate:
        """One rate-limit gate per process for every Auth0 call."""
        return self._get("auth0_gate", RateGate)  # type: ignore[no-any-return]

    @property
    def tables(self) -> Any:
        return self._get("tables", lambda: table_service(self.settings))

    @property
    def queues(self) -> Any:
        return self._get("queues", lambda: queue_service(self.settings))

    @property
    def blobs(self) -> Any:
        return self._get("blobs", lambda: blob_service(self.settings))

    def table(self, name: str) -> Any:
        return self._get(f"table:{name}", lambda: self.tables.get_table_client(name))

    async def ensure_storage(self) -> None:
        """Create the tables and queues if missing (the Bicep creates them in Azure; Azurite starts empty)."""
        if self._storage_ready:
            return
        await ensure_tables(self.tables)
        for queue in names.QUEUES:
            client = self.queues.get_queue_client(queue)
            async with client:
                with contextlib.suppress(ResourceExistsError):
                    await client.create_queue()
        self._storage_ready = True

    # -- adapters and services ----------------------------------------------------------------------

    @property
    def links(self) -> LinkStore:
        return self._get("links", lambda: LinkStore(self.table(names.LINKS_TABLE)))  # type: ignore[no-any-return]

    @property
    def clock(self) -> Clock:
        """Time for leases and waits (tests override it to move time instead of sleeping)."""
        return self._get("clock", lambda: SYSTEM)  # type: ignore[no-any-return]

    @property
    def leases(self) -> LeaseStore:
        return self._get(  # type: ignore[no-any-return]
            "leases", lambda: LeaseStore(self.table(names.LOCKS_TABLE), clock=self.clock)
        )

    @property
    def audit(self) -> AuditStore:
        return self._get("audit", lambda: AuditStore(self.table(names.AUDIT_TABLE)))  # type: ignore[no-any-return]

    @property
    def state(self) -> StateStore:
        return self._get("state", lambda: StateStore(self.table(names.STATE_TABLE)))  # type: ignore[no-any-return]

    @property
    def work_queue(self) -> WorkQueue:
        return self._get("work_queue", lambda: WorkQueue(self.queues))  # type: ignore[no-any-return]

    @property
    def source(self) -> GraphSource:
        return self._get("source", lambda: GraphSource(self.graph, self.mapping))  # type: ignore[no-any-return]

    @property
    def target(self) -> Auth0Target:
        return self._get("target", lambda: Auth0Target(self.auth0, self.auth0_gate))  # type: ignore[no-any-return]

    @property
    def ports(self) -> Ports:
        return self._get(  # type: ignore[no-any-return]
            "ports",
            lambda: Ports(
                source=self.source,
                target=self.target,
                links=self.links,
                leases=self.leases,
                audit=self.audit,
                state=self.state,
                queue=self.work_queue,
                mapping=self.mapping,
                guard=self.guard,
            ),
        )

    @property
    def guard(self) -> MassChangeGuard:
        """Mass changes held for approval on the way in (one per process: it counts for the window)."""
        return self._get(  # type: ignore[no-any-return]
            "guard",
            lambda: MassChangeGuard(
                state=self.state,
                links=self.links,
                audit=self.audit,
                queue=self.work_queue,
                policy=self.mapping.guard,
                alerts=self.alerts,
                clock=self.clock,
            ),
        )

    @property
    def sync(self) -> SyncService:
        return self._get("sync", lambda: SyncService(self.ports))  # type: ignore[no-any-return]

    @property
    def bulk(self) -> ImportBackfill:
        return self._get("bulk", lambda: ImportBackfill(self.ports))  # type: ignore[no-any-return]

    @property
    def reports(self) -> Any:
        from shared.services.report import ReportStore

        return self._get("reports", lambda: ReportStore(self.blobs))

    @property
    def reconciler(self) -> Reconciler:
        return self._get(  # type: ignore[no-any-return]
            "reconciler",
            lambda: Reconciler(
                source=self.source,
                target=self.target,
                links=self.links,
                state=self.state,
                queue=self.work_queue,
                audit=self.audit,
                mapping=self.mapping,
                reports=self.reports,
                alert=self.alerts.send,
            ),
        )

    @property
    def notifier(self) -> Notifier:
        """The Slack/Teams webhook (``NOTIFY_WEBHOOK_URL``): one message per incident."""
        return self._get(  # type: ignore[no-any-return]
            "notifier", lambda: Notifier(self.table(names.STATE_TABLE), self.settings.notify_webhook_url)
        )

    @property
    def alerts(self) -> Alerts:
        return self._get("alerts", lambda: Alerts(self.notifier, self.audit))  # type: ignore[no-any-return]

    @property
    def subscriptions(self) -> SubscriptionManager:
        return self._get(  # type: ignore[no-any-return]
            "subscriptions",
            lambda: SubscriptionManager(
                self.source,
                self.state,
                self.work_queue,
                notification_url=self.settings.graph_notification_url,
                lifecycle_url=self.settings.graph_lifecycle_url,
                client_state=self.settings.graph_client_state.reveal(),
            ),
        )


_current: Services | None = None
_init_lock = threading.Lock()


def init(settings: Settings | None = None, mapping: SyncMapping | None = None, **overrides: Any) -> Services:
    """Read settings and the mapping file (unless given) and make them the process's services."""
    global _current
    install_log_redaction()
    settings = settings if settings is not None else Settings.from_env()
    mapping = mapping if mapping is not None else load_mapping(settings.mapping_file)
    with _init_lock:
        _current = Services(settings, mapping, dict(overrides))
        return _current


def services() -> Services:
    with _init_lock:
        current = _current
    return current if current is not None else init()
