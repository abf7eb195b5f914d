"""Telemetry through the composition root: work items run through the indexed functions
(``sync_lane``, ``reconcile``, ``telemetry_probe``) with the app's instruments on an in-memory
metric reader and span exporter, as the sandbox exports them; each metric the alert rules read is
emitted with its attributes, and a work item's span carries its correlation id, source, target
and identity."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sandbox.azurite import Azurite
from shared import names
from shared.core.work import user_item
from shared.observe import Observe
from shared.services.health import THRESHOLD
from tests.integration.world import World, run_worker, services_for
from tests.support import FakeClock

LANE_WAIT_S = 20.0  # less than the breaker's cool-down, which the probe sees still open


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=30, groups=4).start()
    try:
        yield w
    finally:
        w.stop()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Every data point read, by metric name: (attributes, the point)."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), point))
    return found


def test_each_metric_and_the_work_item_span_are_emitted_with_their_attributes(
    world: World, indexed: dict[str, Any]
) -> None:
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    observe = Observe(meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=tracing)
    user = world.member_user()
    # The notification arrived 3 s before the worker took it.
    item = dataclasses.replace(user_item(user["id"], "notification"), enqueued_at=time.time() - 3.0)

    async def scenario() -> None:
        async with services_for(world, observe=observe) as svc:
            await run_worker(indexed, item)  # a joiner: created in Auth0, roles granted
            svc.clock = clock = FakeClock(time.time() + LANE_WAIT_S)  # the probe looks LANE_WAIT_S later
            # What is waiting: a lane message, a poisoned one, a quarantined target, a subscription.
            await svc.queues.get_queue_client(names.LANE_QUEUE).send_message("waiting")
            await svc.queues.get_queue_client(names.LANE_POISON_QUEUE).send_message("given up")
            health = svc.jobs["auth0"].health
            for _ in range(THRESHOLD):  # the target fails as often as its breaker allows: quarantined
                await health.failed((await health.admit()).ticket, "503 from the target")
            expires = datetime.fromtimestamp(clock.now() + 30 * 3600, UTC).isoformat().replace("+00:00", "Z")
            await svc.state.put("subscription", "users", {"id": "s-1", "expirationDateTime": expires})
            await indexed["telemetry_probe"].get_user_function()(SimpleNamespace(past_due=False))
            await indexed["reconcile"].get_user_function()(SimpleNamespace(past_due=False))

    asyncio.run(scenario())
    found = points(reader)

    changes = {(a["target"], a["kind"], a["source"]) for a, _ in found["entra_sync.changes"]}
    assert ("auth0", "create", "entra") in changes
    ((latency_attrs, latency),) = found["entra_sync.latency"]
    assert latency_attrs == {"target": "auth0", "source": "entra"}
    assert latency.count == 1 and 3.0 <= latency.sum < 60.0
    ages = {a["queue"]: p.value for a, p in found["entra_sync.queue.age"]}
    assert set(ages) == {names.LANE_QUEUE, names.WORK_QUEUE}
    assert ages[names.LANE_QUEUE] >= LANE_WAIT_S - 5
    poison = {a["queue"]: p.value for a, p in found["entra_sync.poison.depth"]}
    assert poison == {names.LANE_POISON_QUEUE: 1, names.WORK_POISON_QUEUE: 0}
    depths = {a["queue"]: p.value for a, p in found["entra_sync.queue.depth"]}
    assert depths[names.LANE_QUEUE] >= 1
    assert [(a, p.value) for a, p in found["entra_sync.target.quarantined"]] == [({"target": "auth0"}, 1)]
    ((hours_attrs, hours),) = found["entra_sync.subscription.hours_left"]
    assert hours_attrs == {"resource": "users"} and abs(hours.value - 30.0) < 0.01
    runs = {(a["target"], a["status"]) for a, _ in found["entra_sync.reconcile.runs"]}
    assert runs and all(target == "auth0" for target, _ in runs)

    (span,) = [s for s in spans.get_finished_spans() if s.name == "work_item"]
    assert span.attributes is not None
    assert span.attributes["entra_sync.correlation_id"] == item.correlation_id
    assert span.attributes["entra_sync.identity"] == user["id"]
    assert span.attributes["entra_sync.source"] == "entra"
    assert span.attributes["entra_sync.target"] == "*"  # every target the source feeds
    assert span.attributes["messaging.destination.name"] == names.LANE_QUEUE


def test_holds_and_rate_limit_waits_are_counted_per_target() -> None:
    reader = InMemoryMetricReader()
    observe = Observe(meter_provider=MeterProvider(metric_readers=[reader]))
    item = user_item("u-1", "notification")
    parts = [SimpleNamespace(target="auth0", status="held", actions=[]),
             SimpleNamespace(target="scim:crm", status="deferred", actions=[])]  # fmt: skip
    observe.finished(item, SimpleNamespace(parts=parts, finished_at=time.time()))
    observe.reconciled("salesforce", "held")
    observe.reconciled("*", "failed")
    observe.finished(item, object())  # what the observer cannot read is skipped, never raised
    found = points(reader)
    holds = {(a["target"], a["by"]): p.value for a, p in found["entra_sync.holds"]}
    assert holds == {("auth0", "guard"): 1, ("salesforce", "breaker"): 1}
    assert [(a, p.value) for a, p in found["entra_sync.rate_limit.waits"]] == [({"target": "scim:crm"}, 1)]
    runs = {(a["target"], a["status"]): p.value for a, p in found["entra_sync.reconcile.runs"]}
    assert runs == {("salesforce", "held"): 1, ("*", "failed"): 1}


def test_the_sandbox_prints_the_same_spans_and_metrics_to_the_console() -> None:
    # In a process of its own: the providers are set once per process.
    script = (
        "from shared import observe\n"
        "from shared.core.work import user_item\n"
        "assert observe.configure({'ENTRA_SYNC_TELEMETRY': 'console'})\n"
        "item = user_item('u-1', 'notification')\n"
        "with observe.OBSERVE.work_item(item, 'sync-lane'):\n"
        "    pass\n"
        "observe.OBSERVE.changes.add(1, {'target': 'auth0', 'kind': 'create', 'source': 'entra'})\n"
    )
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert '"name": "work_item"' in printed.stdout and '"entra_sync.identity": "u-1"' in printed.stdout
    assert '"name": "entra_sync.changes"' in printed.stdout  # flushed at exit
