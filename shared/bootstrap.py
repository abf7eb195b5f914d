"""The composition root: settings and the mapping in, every adapter and service built, in one place.

``function_app.py`` calls :func:`init` once at start-up: a settings or mapping problem stops the app
there, naming the setting or the mapping entry. :func:`build` constructs everything in dependency
order (no network call happens while building: the SDK clients connect on first use, inside the
worker's event loop): the storage clients and stores, the source (Entra ID through Graph), one
provisioning job per target the mapping names (its adapter from its kind in the registry, its
links, guard, and health with its rate gate, shared by every instance), and the services, with
the handler table that routes each work item to its service. Functions reach it through :func:`app`.

Tests call :func:`init` with their own settings (sandbox URLs, Azurite) and may pass the few
things a test must control: a clock, the target kinds (an in-memory target), a client for a target
(by the target's name), adapters to put in place of the built ones, or no report store.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceExistsError

from shared import names
from shared.clock import SYSTEM, Clock
from shared.core.ports import Target
from shared.mapping.load import load_mapping
from shared.mapping.model import SyncMapping, TargetSection
from shared.redact import install_log_redaction
from shared.services.alerts import Alerts
from shared.services.backfill import CONCURRENCY as BACKFILL_CONCURRENCY
from shared.services.backfill import Backfill
from shared.services.delta import DeltaService
from shared.services.dispatch import Dispatcher
from shared.services.guard import MassChangeGuard, unwritten_limits
from shared.services.health import Health
from shared.services.notify import Notifier
from shared.services.ratelimit import RateGate
from shared.services.reconcile import Reconciler
from shared.services.report import ReportStore
from shared.services.risk.monitor import RiskMonitor
from shared.services.risk.response import RiskResponse
from shared.services.waits import Waits
from shared.services.worker import TargetJob, Worker
from shared.settings import Settings
from shared.sources.graph.client import graph_client
from shared.sources.graph.risk_feed import Pacer, RiskFeed
from shared.sources.graph.source import GraphSource
from shared.sources.graph.subscriptions import SubscriptionManager
from shared.stores.audit import AuditStore
from shared.stores.clients import blob_service, queue_service, table_service
from shared.stores.health import HealthStore
from shared.stores.keys import ensure_tables
from shared.stores.leases import LeaseStore
from shared.stores.links import LinkStore
from shared.stores.queue import WorkQueue
from shared.stores.state import StateStore
from shared.targets.auth0.bulk import ImportBackfill
from shared.targets.registry import KINDS, TargetKind, check_settings

log = logging.getLogger("entra_sync.bootstrap")

MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount (a test keeps them equal)


@dataclass
class BuildContext:
    """What a target kind's ``build`` may use: the settings, the clock, the state store, each
    target's breaker and rate gate, and :meth:`client` for the clients it builds itself."""

    settings: Settings
    clock: Clock
    clients: Mapping[str, Any] = field(default_factory=dict)  # by target name: a client a test gives
    state: StateStore | None = None
    closers: list[Any] = field(default_factory=list)
    health_store: HealthStore | None = None
    healths: dict[str, Health] = field(default_factory=dict)

    def health(self, target: str) -> Health:
        """The target's breaker over the shared health store (one per target in this process)."""
        assert self.health_store is not None  # build() gives the context its store
        if target not in self.healths:
            self.healths[target] = Health(target, self.health_store, self.clock)
        return self.healths[target]

    def rate_gate(self, target: str) -> RateGate:
        """The target's rate gate: its own budget, closed for every instance through its health
        record (a context without a health store, as some tests build, keeps it in the process)."""
        shared = self.health(target) if self.health_store is not None else None
        return RateGate(self.clock, shared, name=target)

    def client(self, target: str, make: Callable[[], Any]) -> Any:
        """The client ``target`` talks through: the one given for it by name, or ``make()``, which
        the app then closes when it closes."""
        given = self.clients.get(target)
        if given is not None:
            return given
        client = make()
        self.closers.append(client)
        return client


@dataclass
class App:
    """Everything the functions and the CLI use, built once."""

    settings: Settings
    mapping: SyncMapping
    clock: Clock
    tables: Any
    queues: Any
    blobs: Any
    state: StateStore
    leases: LeaseStore
    audit: AuditStore
    queue: WorkQueue
    waits: Waits
    reports: ReportStore | None
    notifier: Notifier
    alerts: Alerts
    source: GraphSource
    jobs: dict[str, TargetJob]
    worker: Worker
    delta: DeltaService
    reconcilers: dict[str, Reconciler]
    subscriptions: SubscriptionManager
    risk_monitor: RiskMonitor
    risk: RiskResponse
    dispatcher: Dispatcher
    closers: list[Any] = field(default_factory=list)
    _storage_ready: bool = False

    def job(self, name: str = "") -> TargetJob:
        """A target's job by name; without a name, the only target (an error where there are several)."""
        if name:
            return self.jobs[name]
        if len(self.jobs) != 1:
            raise KeyError(f"the mapping names {len(self.jobs)} targets: say which ({', '.join(self.jobs)})")
        return next(iter(self.jobs.values()))

    def table(self, name: str) -> Any:
        return self.tables.get_table_client(name)

    def backfill(self, name: str, concurrency: int = BACKFILL_CONCURRENCY) -> Backfill:
        """One target's backfill in this run (``entra-sync backfill --target <name>``)."""
        return Backfill(source=self.source, worker=self.worker, job=self.jobs[name], concurrency=concurrency)

    def import_backfill(self, name: str = "auth0") -> ImportBackfill:
        """The import-job backfill of an Auth0 target (``entra-sync backfill --import-jobs``)."""
        job = self.jobs.get(name)
        if job is None or job.section.kind != "auth0":
            raise KeyError(f"--import-jobs needs an Auth0 target ({name} is not one the mapping names)")
        return ImportBackfill(
            source=self.source, job=job, state=self.state, leases=self.leases, queue=self.queue, audit=self.audit
        )

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

    async def aclose(self) -> None:
        """Close the clients this app built."""
        closers, self.closers = self.closers, []
        self._storage_ready = False
        for obj in closers:
            close = getattr(obj, "close", None) or getattr(obj, "aclose", None)
            if close is not None:
                result = close()
                if hasattr(result, "__await__"):
                    await result


def build(
    settings: Settings,
    mapping: SyncMapping,
    *,
    clock: Clock = SYSTEM,
    kinds: Mapping[str, TargetKind] = KINDS,
    clients: Mapping[str, Any] | None = None,
    targets: Mapping[str, Target] | None = None,
    reports: bool = True,
    graph: Any = None,
) -> App:
    """Every adapter and service from ``settings`` and ``mapping``. ``clients``: a client a target's
    kind is to use instead of building one (by target name); ``targets``: adapters to use instead
    of the built ones (by target name); ``graph``: a Graph client; ``reports=False``: no report store."""
    check_settings(settings, mapping.targets.values(), kinds)
    context = BuildContext(settings, clock, dict(clients or {}))
    tables, queues, blobs = table_service(settings), queue_service(settings), blob_service(settings)
    closers: list[Any] = [tables, queues, blobs]
    graph_sdk = graph if graph is not None else graph_client(settings)
    state = StateStore(tables.get_table_client(names.STATE_TABLE))
    context.state = state
    context.health_store = HealthStore(state)
    leases = LeaseStore(tables.get_table_client(names.LOCKS_TABLE), clock=clock)
    audit = AuditStore(tables.get_table_client(names.AUDIT_TABLE))
    queue = WorkQueue(queues)
    waits = Waits(queue, audit)
    notifier = Notifier(tables.get_table_client(names.STATE_TABLE), settings.notify_webhook_url)
    closers.append(notifier)
    alerts = Alerts(notifier, audit)
    source = GraphSource(graph_sdk, mapping)
    links_table = tables.get_table_client(names.LINKS_TABLE)
    jobs: dict[str, TargetJob] = {}
    for name, section in mapping.targets.items():
        if warning := unwritten_limits(section, mapping.version):
            log.warning("%s", warning)  # a guard that may hold leavers is never a surprise
        target = (targets or {}).get(name) or kinds[section.kind].build(section, context)
        links = LinkStore(links_table, name, source.name)
        jobs[name] = _job(section, target, links, state, audit, queue, alerts, clock, context.health(name))
    closers.extend(context.closers)
    report_store = ReportStore(blobs) if reports else None
    worker = Worker(
        source=source, jobs=jobs, leases=leases, audit=audit, queue=queue, waits=waits, alerts=alerts, clock=clock
    )
    delta = DeltaService(
        source=source, mapping=mapping, state=state, leases=leases, queue=queue, audit=audit,
        converge=worker.sync_user,  # a group change's few users converge in its own invocation
    )  # fmt: skip
    reconcilers = {
        name: Reconciler(
            source=source,
            job=job,
            state=state,
            queue=queue,
            audit=audit,
            mapping=mapping,
            reports=report_store,
            alert=alerts.send,
        )
        for name, job in jobs.items()
    }
    subscriptions = SubscriptionManager(
        source, state, queue,
        notification_url=settings.graph_notification_url, lifecycle_url=settings.graph_lifecycle_url,
        client_state=settings.graph_client_state.reveal(),
    )  # fmt: skip
    monitor = RiskMonitor(
        feed=RiskFeed(source, Pacer()), policy=mapping.risk, state=state, leases=leases, queue=queue, audit=audit
    )
    risk = RiskResponse(
        source=source, jobs=jobs, leases=leases, state=state, audit=audit, notifier=notifier, policy=mapping.risk
    )
    dispatcher = Dispatcher(
        {
            "user": worker.sync_user,
            "group": delta.sync_group,
            "delta": delta.catch_up,
            "subscription": subscriptions.handle_lifecycle,
            "risk": risk.handle,
        },
        waits=waits, audit=audit, alerts=alerts, max_dequeue_count=MAX_DEQUEUE_COUNT,
    )  # fmt: skip
    return App(
        settings=settings, mapping=mapping, clock=clock, tables=tables, queues=queues, blobs=blobs, state=state,
        leases=leases, audit=audit, queue=queue, waits=waits, reports=report_store, notifier=notifier,
        alerts=alerts, source=source, jobs=jobs, worker=worker, delta=delta, reconcilers=reconcilers,
        subscriptions=subscriptions, risk_monitor=monitor, risk=risk, dispatcher=dispatcher, closers=closers,
    )  # fmt: skip


def _job(
    section: TargetSection,
    target: Target,
    links: LinkStore,
    state: StateStore,
    audit: AuditStore,
    queue: WorkQueue,
    alerts: Alerts,
    clock: Clock,
    health: Health,
) -> TargetJob:
    guard = MassChangeGuard(
        state=state, links=links, audit=audit, queue=queue, policy=section.guard, alerts=alerts, clock=clock,
        target=section.name,
    )  # fmt: skip
    return TargetJob(section, target, links, guard, health)


_current: App | None = None
_lock = threading.Lock()


def init(
    settings: Settings | None = None,
    mapping: SyncMapping | None = None,
    *,
    kinds: Mapping[str, TargetKind] = KINDS,
    **options: Any,
) -> App:
    """Read the settings and the mapping file (unless given), build, and make it the process's app."""
    global _current
    install_log_redaction()
    settings = settings if settings is not None else Settings.from_env()
    mapping = mapping if mapping is not None else load_mapping(settings.mapping_file, kinds=kinds)
    built = build(settings, mapping, kinds=kinds, **options)
    with _lock:
        _current = built
        return built


def app() -> App:
    with _lock:
        current = _current
    return current if current is not None else init()
