"""What entra-sync tells Azure Monitor: a span per work item and the metrics the alert rules read.

Every instrument is created here, through the OpenTelemetry API, and each is fed from one place:

=================================== =========================== =========================================
metric                              attributes                  fed by
=================================== =========================== =========================================
``entra_sync.changes``              target, kind, source        :meth:`Observe.finished` (the dispatcher's
                                                                observer): each action applied
``entra_sync.latency`` (s)          target, source              the same: notification received (the
                                                                item's ``enqueued_at``) to converged
``entra_sync.holds``                target, by (guard, breaker) the same (a mass change held), and
                                                                :meth:`Observe.reconciled` (a held run)
``entra_sync.rate_limit.waits``     target                      the same: a target's share deferred
``entra_sync.reconcile.runs``       target, status              :meth:`Observe.reconciled` (the reconcile
                                                                timer); ``status=failed`` on a failure
``entra_sync.queue.age`` (s)        queue                       :meth:`Observe.probe` (the
``entra_sync.queue.depth``          queue                       ``telemetry_probe`` timer, every minute):
``entra_sync.poison.depth``         queue                       the oldest visible message, the depths,
``entra_sync.target.quarantined``   target                      1 while the target's breaker is open,
``entra_sync.subscription.hours_left`` resource                 hours until a Graph subscription expires
=================================== =========================== =========================================

Attributes are names (targets, queues, action kinds, sources), never identities' data, so the
metrics carry no personal data; the span of a work item carries its correlation id, source,
target and identity (an object id, as in the audit rows) as attributes, not in message text.

:func:`configure` turns on the Azure Monitor exporter (azure-monitor-opentelemetry) when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set, with the app's managed identity (the component
accepts only Entra-authenticated telemetry) and no sampling; its log export is left off, as the
Functions host already ships the log lines (host.json excludes them from sampling). Elsewhere
(tests) the API's no-op providers stay unless a test gives its own reader; the sandbox prints the
same spans and metrics to the console with ``ENTRA_SYNC_TELEMETRY=console``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

from opentelemetry import metrics, trace

from shared.core.work import DEFAULT_SOURCE, WorkItem

log = logging.getLogger("entra_sync.observe")

NAME: Final = "entra_sync"
PROBE_SCHEDULE: Final = "0 * * * * *"  # the telemetry_probe timer: every minute
# The distro's bundled instrumentations, all off: a span per storage or HTTP call would bury the work
# items' own, and the Functions host already records the requests.
INSTRUMENTATIONS_OFF: Final = ("azure_sdk", "django", "fastapi", "flask", "psycopg2", "requests", "urllib", "urllib3")
CONSOLE_SETTING: Final = "ENTRA_SYNC_TELEMETRY"
_configured = False


class Observe:
    """The instruments, from ``meter_provider`` and ``tracer_provider`` (the global ones unless
    given: a test passes its own, with an in-memory reader)."""

    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None):
        meter = metrics.get_meter(NAME, meter_provider=meter_provider)
        self.tracer = trace.get_tracer(NAME, tracer_provider=tracer_provider)
        self.changes = meter.create_counter("entra_sync.changes", "{change}", "Changes applied to a target")
        self.latency = meter.create_histogram(
            "entra_sync.latency", "s", "From the change's notification to its target converged"
        )
        self.holds = meter.create_counter("entra_sync.holds", "{hold}", "Mass changes and runs held for approval")
        self.rate_waits = meter.create_counter(
            "entra_sync.rate_limit.waits", "{wait}", "A target's share deferred to its rate limit's reset"
        )
        self.reconcile_runs = meter.create_counter("entra_sync.reconcile.runs", "{run}", "Reconciliation runs")
        self.queue_age = meter.create_gauge("entra_sync.queue.age", "s", "Age of the oldest visible message")
        self.queue_depth = meter.create_gauge("entra_sync.queue.depth", "{message}", "Messages on a work queue")
        self.poison_depth = meter.create_gauge("entra_sync.poison.depth", "{message}", "Messages on a poison queue")
        self.quarantined = meter.create_gauge(
            "entra_sync.target.quarantined", "{target}", "1 while a target's circuit breaker is open"
        )
        self.subscription_hours = meter.create_gauge(
            "entra_sync.subscription.hours_left", "h", "Hours until a Graph subscription expires"
        )

    # -- work items ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def work_item(self, item: WorkItem, queue: str) -> Iterator[Any]:
        """The span of one work item, from the message to its outcome."""
        attributes = {
            "entra_sync.correlation_id": item.correlation_id,
            "entra_sync.source": item.identity_source or DEFAULT_SOURCE,
            "entra_sync.origin": item.source,
            "entra_sync.target": item.target or "*",
            "entra_sync.identity": item.id,
            "entra_sync.kind": item.kind,
            "messaging.destination.name": queue,
        }
        with self.tracer.start_as_current_span("work_item", attributes=attributes, record_exception=True) as span:
            yield span

    def finished(self, item: WorkItem, result: Any) -> None:
        """The dispatcher's observer: what one item did, per target. Quick, and never raises."""
        try:
            self._finished(item, result)
        except Exception:  # an observer must not fail the work item it reports
            log.exception("could not record the metrics of work item %s", item.id)

    def _finished(self, item: WorkItem, result: Any) -> None:
        parts = getattr(result, "parts", None) or ([result] if getattr(result, "target", "") else [])
        source = item.identity_source or DEFAULT_SOURCE
        for part in parts:
            target = str(getattr(part, "target", "") or item.target or "*")
            status = getattr(part, "status", "")
            if status == "applied":
                for kind in getattr(part, "actions", []) or []:
                    self.changes.add(1, {"target": target, "kind": str(kind), "source": source})
                finished = getattr(result, "finished_at", 0.0) or time.time()
                self.latency.record(max(0.0, finished - item.enqueued_at), {"target": target, "source": source})
            elif status == "held":
                self.holds.add(1, {"target": target, "by": "guard"})
            elif status == "deferred":
                self.rate_waits.add(1, {"target": target})

    # -- runs ----------------------------------------------------------------------------------------

    def reconciled(self, target: str, status: str) -> None:
        """A reconciliation run's end (``failed`` when it failed: the target may be unknown, ``*``)."""
        self.reconcile_runs.add(1, {"target": target, "status": status})
        if status == "held":
            self.holds.add(1, {"target": target, "by": "breaker"})

    # -- what is waiting now -------------------------------------------------------------------------

    async def probe(self, app: Any) -> None:
        """The queues, the targets' breakers and the subscriptions as they are now (the
        ``telemetry_probe`` timer)."""
        from shared import names
        from shared.services.status import _queue_state, _target_state

        now = app.clock.now()
        for name in names.QUEUES:
            queue = await _queue_state(app, name, now)
            depth = self.poison_depth if name.endswith("-poison") else self.queue_depth
            depth.set(queue.depth or 0, {"queue": name})
            if not name.endswith("-poison"):
                self.queue_age.set(queue.oldest_s or 0.0, {"queue": name})
        for name, job in app.jobs.items():
            state = _target_state(name, await job.health.view(), now)
            self.quarantined.set(1 if state.state == "quarantined" else 0, {"target": name})
        subscriptions: Mapping[str, Any] = await app.state.list("subscription")
        for resource, sub in subscriptions.items():
            hours = _hours_left(str(sub.get("expirationDateTime", "")), now)
            if hours is not None:
                self.subscription_hours.set(hours, {"resource": resource})


def _hours_left(expires: str, now: float) -> float | None:
    from datetime import datetime

    try:
        return (datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp() - now) / 3600
    except ValueError:
        return None


def configure(env: Mapping[str, str]) -> bool:
    """The Azure Monitor exporter for traces and metrics, once per process, when the connection
    string is set; the console's where ``ENTRA_SYNC_TELEMETRY=console`` (the sandbox); whether one is on."""
    global _configured
    connection = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if _configured:
        return True
    if not connection and env.get(CONSOLE_SETTING, "").strip().lower() == "console":
        _configure_console()
        _configured = True
        return True
    if not connection:
        return False
    from azure.identity import ManagedIdentityCredential
    from azure.monitor.opentelemetry import configure_azure_monitor

    client_id = env.get("AZURE_CLIENT_ID", "").strip()
    configure_azure_monitor(
        connection_string=connection,
        credential=ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential(),
        disable_logging=True,  # the Functions host ships the log lines (cid=...), unsampled
        sampling_ratio=1.0,  # a work item's span is never dropped
        instrumentation_options={name: {"enabled": False} for name in INSTRUMENTATIONS_OFF},
    )
    _configured = True
    return True


def _configure_console() -> None:
    """Spans and metrics printed to stdout (metrics once a minute, and at exit), the same instruments
    as in Azure: what the sandbox shows of its telemetry."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracing)
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter())
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


OBSERVE: Final = Observe()  # the process's, on the global providers (configure() sets them)
