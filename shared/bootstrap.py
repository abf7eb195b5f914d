"""The composition root: settings and the mapping in, every adapter and service built, in one place.

``function_app.py`` calls :func:`init` once at start-up: a settings or mapping problem stops the app
there, naming the setting or the mapping entry. :func:`build` constructs everything in dependency
order (no network call happens while building: the SDK clients connect on first use, inside the
worker's event loop): the storage clients and stores, one source per source the mapping names (from
its kind in ``shared.sources.registry``), one provisioning job per target (its adapter from its kind
in ``shared.targets.registry``, its links of the source that feeds it, guard, and health with its
rate gate, shared by every instance), and the services, with the handler table that routes each work
item to its service. What only Entra ID has (change notifications, delta, the risk feed and the risk
response) is built only when the mapping has the ``entra`` source. Functions reach it through
:func:`app`; a source by its name through ``app().sources[name]``.

Tests call :func:`init` with their own settings (sandbox URLs, Azurite) and may pass the few
things a test must control: a clock, the target and source kinds (an in-memory target or source), a
client for a target (by the target's name) or a source (``source:<name>``), adapters to put in place
of the built ones, or no report store.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceExistsError

from shared import names
from shared.alerting.build import alert_router, event_feed, ticket_book
from shared.alerting.feed import EventFeed
from shared.alerting.router import AlertRouter
from shared.clock import SYSTEM, Clock
from shared.core.ports import Source, Target
from shared.core.work import DEFAULT_SOURCE, WorkItem
from shared.mapping.load import load_mapping
from shared.mapping.model import SyncMapping, TargetSection
from shared.observe import OBSERVE, Observe
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
from shared.services.worker import Outcome, TargetJob, Worker
from shared.settings import Settings
from shared.sources.graph.risk_feed import Pacer, RiskFeed
from shared.sources.graph.source import GraphSource
from shared.sources.graph.subscriptions import SubscriptionManager
from shared.sources.registry import KINDS as SOURCE_KINDS
from shared.sources.registry import SourceKind
from shared.sources.registry import check_settings as check_source_settings
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
    """What a source or target kind's ``build`` may use: the settings, the clock, the mapping, the
    state store and the work queue, each target's breaker and rate gate, and :meth:`client` for the
    clients it builds itself."""

    settings: Settings
    clock: Clock
    # By target name, or ``source:<name>`` for a source: a client a test gives.
    clients: Mapping[str, Any] = field(default_factory=dict)
    mapping: SyncMapping | None = None  # the whole file: a source reads mapping.for_source(its name)
    queue: WorkQueue | None = None  # where a source that is pushed to hands over what changed
    audit: AuditStore | None = None  # where it records what it refused or took as a replay
    tables: Any = None  # the app's Table service client: a source that keeps its own rows
    state: StateStore | None = None
    closers: list[Any] = field(default_factory=list)
    health_store: HealthStore | None = None
    healths: dict[str, Health] = field(default_factory=dict)
    courier: Any = None  # delivers a message to one person (the Auth0 welcome ticket)

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

    def client(self, name: str, make: Callable[[], Any]) -> Any:
        """The client a target (by its name) or a source (``source:<name>``) talks through: the one
        given for it, or ``make()``, which the app then closes when it closes."""
        given = self.clients.get(name)
        if given is not None:
            return given
        client = make()
        self.closers.append(client)
        return client


class NoEntraSource(LookupError):
    """Something only the ``entra`` source has was asked of an app whose mapping has no such source."""


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
    sources: dict[str, Source]  # by the name the mapping gives each
    jobs: dict[str, TargetJob]
    worker: Worker
    reconcilers: dict[str, Reconciler]
    dispatcher: Dispatcher
    # Entra ID's own (built only when the mapping has the ``entra`` source, else None): its source,
    # the catch-up over Graph delta, the change notification subscriptions, the risk feed and the
    # risk response (which acts on the targets ``entra`` feeds).
    source: GraphSource | None = None
    delta: DeltaService | None = None
    subscriptions: SubscriptionManager | None = None
    risk_monitor: RiskMonitor | None = None
    risk: RiskResponse | None = None
    router: AlertRouter | None = None  # where alerts, digests and risk notifications go (set by build)
    events: EventFeed | None = None  # the feed of effective changes, when the mapping names its endpoint
    closers: list[Any] = field(default_factory=list)
    observe: Observe = OBSERVE  # spans and metrics (shared.observe); the dispatcher reports to it
    _storage_ready: bool = False

    def job(self, name: str = "") -> TargetJob:
        """A target's job by name; without a name, the only target (an error where there are several)."""
        if name:
            return self.jobs[name]
        if len(self.jobs) != 1:
            raise KeyError(f"the mapping names {len(self.jobs)} targets: say which ({', '.join(self.jobs)})")
        return next(iter(self.jobs.values()))

    def entra(self) -> tuple[GraphSource, DeltaService, SubscriptionManager, RiskMonitor, RiskResponse]:
        """Entra ID's own parts, for what only Entra ID has (a timer, the Graph webhooks, the CLI's
        delta pass); :class:`NoEntraSource` when the mapping names no ``entra`` source."""
        if self.source is None or self.delta is None or self.subscriptions is None or self.risk_monitor is None:
            raise NoEntraSource(f"the mapping file {self.mapping.source} names no {DEFAULT_SOURCE} source")
        assert self.risk is not None  # built with the others
        return self.source, self.delta, self.subscriptions, self.risk_monitor, self.risk

    def table(self, name: str) -> Any:
        return self.tables.get_table_client(name)

    def backfill(self, name: str, concurrency: int = BACKFILL_CONCURRENCY) -> Backfill:
        """One target's backfill in this run (``entra-sync backfill --target <name>``), from its source."""
        job = self.jobs[name]
        return Backfill(source=self.sources[job.section.source], worker=self.worker, job=job, concurrency=concurrency)

    def import_backfill(self, name: str = "auth0") -> ImportBackfill:
        """The import-job backfill of an Auth0 target (``entra-sync backfill --import-jobs``)."""
        job = self.jobs.get(name)
        if job is None or job.section.kind != "auth0":
            raise KeyError(f"--import-jobs needs an Auth0 target ({name} is not one the mapping names)")
        if self.source is None or job.section.source != DEFAULT_SOURCE:
            raise KeyError(f"--import-jobs reads Entra ID: {name} is fed by the source {job.section.source}")
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
    source_kinds: Mapping[str, SourceKind] = SOURCE_KINDS,
    clients: Mapping[str, Any] | None = None,
    targets: Mapping[str, Target] | None = None,
    sources: Mapping[str, Source] | None = None,
    reports: bool = True,
    graph: Any = None,
    observe: Observe = OBSERVE,
    courier: Any = None,
) -> App:
    """Every adapter and service from ``settings`` and ``mapping``. ``clients``: a client a target's
    or source's kind is to use instead of building one (by target name, ``source:<name>``);
    ``targets`` and ``sources``: adapters to use instead of the built ones (by name); ``graph``: a
    Graph client (the ``entra`` source's); ``reports=False``: no report store; ``observe``: the
    instruments the app's spans and metrics go to (a test's, with an in-memory reader); ``courier``:
    what delivers an Auth0 welcome's password-change ticket to the joiner."""
    check_source_settings(settings, mapping.sources.values(), source_kinds)
    check_settings(settings, mapping.targets.values(), kinds)
    given = dict(clients or {})
    if graph is not None:
        given.setdefault(f"source:{DEFAULT_SOURCE}", graph)
    context = BuildContext(settings, clock, given, mapping, courier=courier)
    tables, queues, blobs = table_service(settings), queue_service(settings), blob_service(settings)
    closers: list[Any] = [tables, queues, blobs]
    state = StateStore(tables.get_table_client(names.STATE_TABLE))
    context.state = state
    context.health_store = HealthStore(state)
    leases = LeaseStore(tables.get_table_client(names.LOCKS_TABLE), clock=clock)
    audit = AuditStore(tables.get_table_client(names.AUDIT_TABLE))
    queue = WorkQueue(queues)
    context.queue, context.audit, context.tables = queue, audit, tables
    waits = Waits(queue, audit)
    notifier = Notifier(tables.get_table_client(names.STATE_TABLE), settings.notify_webhook_url)
    closers.append(notifier)
    router = alert_router(settings, mapping.alerts, notifier, context.client, clock=clock)
    alerts = Alerts(router, audit)
    tickets = ticket_book(settings, mapping.alerts, state, notifier.http)
    events = event_feed(settings, mapping.alerts, audit, state, notifier.http, clock=clock, alert=alerts.send)
    if events is not None:
        closers.append(events.sink)  # an Event Grid topic's SDK client
    built: dict[str, Source] = {
        name: (sources or {}).get(name) or source_kinds[section.kind].build(section, context)
        for name, section in mapping.sources.items()
    }
    links_table = tables.get_table_client(names.LINKS_TABLE)
    jobs: dict[str, TargetJob] = {}
    for name, section in mapping.targets.items():
        if warning := unwritten_limits(section, mapping.version):
            log.warning("%s", warning)  # a guard that may hold leavers is never a surprise
        target = (targets or {}).get(name) or kinds[section.kind].build(section, context)
        links = LinkStore(links_table, name, section.source)
        jobs[name] = _job(section, target, links, state, audit, queue, alerts, clock, context.health(name))
    closers.extend(context.closers)
    report_store = ReportStore(blobs) if reports else None
    worker = Worker(
        sources=built, jobs=jobs, leases=leases, audit=audit, queue=queue, waits=waits, alerts=alerts, clock=clock
    )
    reconcilers = {
        name: Reconciler(
            source=built[job.section.source],
            job=job,
            state=state,
            queue=queue,
            audit=audit,
            mapping=mapping.for_source(job.section.source),
            reports=report_store,
            alert=alerts.send,
            after_run=tickets.after_run if tickets is not None else None,
        )
        for name, job in jobs.items()
    }
    app = App(
        settings=settings, mapping=mapping, clock=clock, tables=tables, queues=queues, blobs=blobs, state=state,
        leases=leases, audit=audit, queue=queue, waits=waits, reports=report_store, notifier=notifier,
        alerts=alerts, sources=built, jobs=jobs, worker=worker, reconcilers=reconcilers, closers=closers,
        dispatcher=Dispatcher(
            {"user": worker.sync_user, "group": worker.sync_members},
            waits=waits, audit=audit, alerts=alerts, max_dequeue_count=MAX_DEQUEUE_COUNT,
        ),
        observe=observe,
    )  # fmt: skip
    app.dispatcher.observers.append(observe.finished)  # every finished work item: its metrics
    app.router, app.events = router, events
    entra = built.get(DEFAULT_SOURCE)
    if isinstance(entra, GraphSource):
        _entra_side(app, entra)
    return app


def _entra_side(app: App, source: GraphSource) -> None:
    """What only Entra ID has: the catch-up over Graph delta (group changes too), the change
    notification subscriptions, the risk feed and the risk response, on the targets it feeds; and
    the dispatcher's handlers for the work items only they make."""
    settings, mapping, fed = app.settings, app.mapping.for_source(DEFAULT_SOURCE), app.mapping.fed_by(DEFAULT_SOURCE)
    # Checked by the entra kind before anything was built (``check_source_settings``).
    assert settings.graph_client_state and settings.graph_notification_url and settings.graph_lifecycle_url
    app.source = source
    app.delta = DeltaService(
        source=source, mapping=mapping, state=app.state, leases=app.leases, queue=app.queue, audit=app.audit,
        converge=app.worker.sync_user,  # a group change's few users converge in its own invocation
        clock=app.clock,
    )  # fmt: skip
    app.subscriptions = SubscriptionManager(
        source, app.state, app.queue,
        notification_url=settings.graph_notification_url, lifecycle_url=settings.graph_lifecycle_url,
        client_state=settings.graph_client_state.reveal(),
    )  # fmt: skip
    app.risk_monitor = RiskMonitor(
        feed=RiskFeed(source, Pacer()), policy=mapping.risk, state=app.state, leases=app.leases, queue=app.queue,
        audit=app.audit,
    )  # fmt: skip
    app.risk = RiskResponse(
        source=source, jobs={name: app.jobs[name] for name in fed}, leases=app.leases, state=app.state,
        audit=app.audit, alerts=app.router, policy=mapping.risk,
    )  # fmt: skip
    app.dispatcher.handlers.update(
        {
            "group": _group_items(app.worker, app.delta),
            "delta": app.delta.catch_up,
            "subscription": app.subscriptions.handle_lifecycle,
            "risk": app.risk.handle,
        }
    )


def _group_items(worker: Worker, delta: DeltaService) -> Callable[[WorkItem], Awaitable[Outcome]]:
    """Who handles a ``group`` item: a pushing source's names its users (the worker converges them),
    a Graph notification's names only the group (the groups delta is read forward)."""

    async def handle(item: WorkItem) -> Outcome:
        if item.users or item.identity_source:
            return await worker.sync_members(item)
        return await delta.sync_group(item)

    return handle


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
    source_kinds: Mapping[str, SourceKind] = SOURCE_KINDS,
    **options: Any,
) -> App:
    """Read the settings and the mapping file (unless given), build, and make it the process's app."""
    global _current
    install_log_redaction()
    settings = settings if settings is not None else Settings.from_env()
    if mapping is None:
        mapping = load_mapping(settings.mapping_file, kinds=kinds, source_kinds=source_kinds)
    built = build(settings, mapping, kinds=kinds, source_kinds=source_kinds, **options)
    with _lock:
        _current = built
        return built


def freeze_start_up() -> None:
    """Take what start-up built out of the collector's full passes, once the app is composed.

    The modules the app imports (the Graph SDK's thousands of classes, pydantic's and scim2's
    schemas, the Azure SDKs) are some 125,000 objects that live as long as the process. A full
    collection walked them all: 60-100 ms on these machines, about every 25 s at 100 requests a
    second, with the process answering nothing meanwhile, which made 1-2% of the inbound endpoint's
    answers slow (BENCHMARKS.md section 8). Frozen (:func:`gc.freeze`), they are never walked
    again, and a full collection takes what requests left (under 10 ms). Collected first, so no
    garbage of start-up is kept; objects made later are collected as before."""
    gc.collect()
    gc.freeze()


def app() -> App:
    with _lock:
        current = _current
    return current if current is not None else init()
