"""Benchmark 6: CPU per request of the SDK clients, as the SDKs build them and as entra-sync does;
and how many queue messages at once an instance should run (host.json).

Every figure is this process's CPU time (``time.process_time``: every thread, so work the SDKs
hand to a thread pool counts too) divided by the requests made, one request at a time. The Graph
and Auth0 emulators run in a child process and Azurite is a Node process, so their CPU is not in
the figures: what is left is the client side of each call (pipeline, transport, serialization).

Two ways of building each client are measured side by side, in rounds that alternate between them:

* *SDK defaults*: ``TableServiceClient.from_connection_string``, ``QueueServiceClient.from_connection_string``,
  ``GraphRequestAdapter(auth)`` with its default middleware and ``AsyncAuth0(...)``, as
  entra-sync built them before issue 13;
* *entra-sync*: ``shared.stores.clients``, ``shared.sources.graph.client.graph_client`` and
  ``shared.targets.auth0.client.auth0_client``, as the functions build them now.

The concurrency sweep drains first-contact work items (joiners) from ``sync-work`` through
``sync_worker`` on the host stand-in, once per ``batchSize`` / ``newBatchThreshold`` pair, with the
emulators answering after a production-like delay and again on bare loopback (CPU-bound). The
emulators run in this process there (their delays sleep, so they cost no CPU while waiting).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.data.tables.aio import TableServiceClient
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from bench.common import REPO, UNGUARDED, Report, Sandbox, Table
from sandbox.azurite import Azurite
from sandbox.host import FunctionsHost
from sandbox.mapping import sandbox_mapping, three_role_grants
from sandbox.server import FaultRule
from sandbox.stack import AUTH0_TOKEN, CLIENT_STATE, GRAPH_TOKEN, empty_storage
from shared import bootstrap, names
from shared.core.work import user_item
from shared.settings import Settings
from shared.sources.graph.client import GRAPH_SCOPE, StaticTokenCredential, graph_client
from shared.stores.clients import queue_service, table_service
from shared.targets.auth0.client import AUTH0_TIMEOUT_S, auth0_client

TABLE = "BenchClients"
QUEUE = "bench-clients"
SELECT = ["id", "accountEnabled", "mail", "userPrincipalName", "givenName", "surname", "department", "jobTitle"]
Op = Callable[[], Awaitable[Any]]
# batchSize, newBatchThreshold: at most their sum run at once per function and instance.
CONCURRENCY = ((1, 0), (2, 1), (4, 2), (8, 4), (16, 8))
# Seconds each emulator waits before answering, as the vendors' APIs take from an Azure region.
LATENCY_S = {"graph": 0.06, "auth0": 0.12}


@dataclass
class Clients:
    tables: TableServiceClient
    queues: QueueServiceClient
    graph: GraphServiceClient
    auth0: Any
    closers: list[Any] = field(default_factory=list)

    async def aclose(self) -> None:
        for closer in (self.tables, self.queues, *self.closers):
            await closer.close()


def sdk_defaults(settings: Settings) -> Clients:
    """The clients as the SDKs build them by default (entra-sync's construction before issue 13)."""
    assert settings.storage.connection_string is not None and settings.graph_token is not None
    connection = settings.storage.connection_string.reveal()
    host = settings.graph_base_url.split("/")[2].split(":")[0]
    credential = StaticTokenCredential(settings.graph_token.reveal())
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE], allowed_hosts=[host])
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = settings.graph_base_url.rstrip("/")
    from auth0.management.client import AsyncAuth0

    assert settings.auth0 is not None and settings.auth0.token is not None
    auth0 = AsyncAuth0(
        base_url=settings.auth0.base_url, token=settings.auth0.token.reveal(), timeout=AUTH0_TIMEOUT_S, max_retries=0
    )
    return Clients(
        TableServiceClient.from_connection_string(connection),
        QueueServiceClient.from_connection_string(connection),
        GraphServiceClient(request_adapter=adapter),
        auth0,
    )


def product(settings: Settings) -> Clients:
    assert settings.auth0 is not None
    tables, queues = table_service(settings), queue_service(settings)
    return Clients(tables, queues, graph_client(settings), auth0_client(settings.auth0))


BUILDERS: dict[str, Callable[[Settings], Clients]] = {"SDK defaults": sdk_defaults, "entra-sync": product}


async def operations(clients: Clients, user_id: str) -> dict[str, Op]:
    table = clients.tables.get_table_client(TABLE)
    queue = clients.queues.get_queue_client(QUEUE)
    entity = {"PartitionKey": "bench", "RowKey": "one", "state": "linked", "hash": "0" * 64}
    await table.upsert_entity(entity)
    query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=SELECT)
    config = UserItemRequestBuilder.UserItemRequestBuilderGetRequestConfiguration(query_parameters=query)

    async def send() -> None:
        await queue.send_message('{"kind": "user", "id": "' + user_id + '"}')

    async def graph_raw() -> None:
        # The same request, its answer left as bytes: the client's share without msgraph's models.
        info = clients.graph.users.by_user_id(user_id).to_get_request_information(request_configuration=config)
        await clients.graph.request_adapter.send_primitive_async(info, "bytes", {})

    return {
        "Table Storage get": lambda: table.get_entity("bench", "one"),
        "Table Storage upsert": lambda: table.upsert_entity(entity),
        "Queue Storage send": send,
        "Graph user read ($select)": lambda: clients.graph.users.by_user_id(user_id).get(request_configuration=config),
        "Graph user read, answer as bytes": graph_raw,
        "Auth0 user list (1 per page)": lambda: clients.auth0.users.list(per_page=1, page=0, include_totals=True),
    }


async def measure(op: Op, count: int) -> tuple[float, float]:
    """(CPU, wall) seconds per request over ``count`` sequential requests."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        await op()
    return (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count


async def bench(settings: Settings, user_id: str, count: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """builder -> operation -> CPU per request of each round (and the wall times under ``wall:``)."""
    results: dict[str, dict[str, list[float]]] = {name: {} for name in BUILDERS}
    built = {name: build(settings) for name, build in BUILDERS.items()}
    try:
        await built["entra-sync"].tables.create_table_if_not_exists(TABLE)
        if not [q async for q in built["entra-sync"].queues.list_queues(name_starts_with=QUEUE)]:
            await built["entra-sync"].queues.create_queue(QUEUE)
        ops = {name: await operations(clients, user_id) for name, clients in built.items()}
        for name in BUILDERS:  # warm up: connections open, lazy imports done, tokens cached
            for op in ops[name].values():
                await measure(op, 20)
        for _ in range(rounds):
            for name in BUILDERS:
                for label, op in ops[name].items():
                    cpu, wall = await measure(op, count)
                    results[name].setdefault(label, []).append(cpu)
                    results[name].setdefault(f"wall:{label}", []).append(wall)
        await built["entra-sync"].queues.get_queue_client(QUEUE).clear_messages()
    finally:
        for clients in built.values():
            await clients.aclose()
    return results


def _emulators() -> tuple[subprocess.Popen[str], str, str]:
    """The Graph and Auth0 emulators in a child process (their CPU stays out of ours): its URLs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--no-azurite", "--users", "20", "--groups", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while len(urls) < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.match(r"(Graph|Auth0) emulator\s+(\S+)", line):
            urls[m.group(1)] = m.group(2)
    if len(urls) < 2:
        proc.kill()
        raise RuntimeError("the sandbox emulators did not start")
    return proc, urls["Graph"], urls["Auth0"]


def run(quick: bool) -> Report:
    started = time.perf_counter()
    count, rounds = (100, 3) if quick else (300, 5)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")
    proc, graph_url, auth0_url = _emulators()
    try:
        with Azurite() as azurite, tempfile.TemporaryDirectory(prefix="entra-sync-bench-") as tmp:
            mapping = Path(tmp) / "mapping.yaml"
            mapping.write_text(sandbox_mapping(three_role_grants(["g1", "g2", "g3"])))
            env = {
                "GRAPH_BASE_URL": graph_url,
                "GRAPH_TOKEN": GRAPH_TOKEN,
                "GRAPH_CLIENT_STATE": CLIENT_STATE,
                "GRAPH_NOTIFICATION_URL": "http://127.0.0.1:7071/api/graph_webhook",
                "GRAPH_LIFECYCLE_URL": "http://127.0.0.1:7071/api/graph_lifecycle",
                "AUTH0_BASE_URL": auth0_url,
                "AUTH0_TOKEN": AUTH0_TOKEN,
                "AzureWebJobsStorage": azurite.connection_string,
                "DELTA_SCHEDULE": "0 */5 * * * *",
                "RECONCILE_SCHEDULE": "0 0 2 * * *",
                "RISK_SCHEDULE": "0 * * * * *",
                "SUBSCRIPTIONS_SCHEDULE": "0 0 */6 * * *",
                "SYNC_MAPPING_FILE": str(mapping),
            }
            settings = Settings.from_env(env)
            user_id = asyncio.run(_first_user(settings))
            results = asyncio.run(bench(settings, user_id, count, rounds))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    table = Table(["request", *(f"CPU, {name}" for name in BUILDERS), "CPU saved", *(f"wall, {n}" for n in BUILDERS)])
    before, after = BUILDERS
    for label in (k for k in results[before] if not k.startswith("wall:")):
        b, a = statistics.median(results[before][label]), statistics.median(results[after][label])
        walls = [statistics.median(results[n][f"wall:{label}"]) for n in BUILDERS]
        table.rows.append([label, f"{b * 1e3:.2f} ms", f"{a * 1e3:.2f} ms", f"{(b - a) / b:.0%}", *_ms(walls)])
    per = 20 if quick else 40
    sweep = concurrency(per)
    return Report(
        "6. Client cost per request, and queue concurrency",
        inputs=[
            f"{count} sequential requests per row and round, {rounds} rounds alternating the two constructions, "
            "medians shown; Azurite, and both emulators in a child process",
            f"concurrency: {per} joiners per setting drained by one host stand-in, emulators answering after "
            f"{LATENCY_S['graph'] * 1000:.0f} ms (Graph) and {LATENCY_S['auth0'] * 1000:.0f} ms (Auth0), "
            "and on loopback",
        ],
        tables=[
            ("CPU of this process per request (every thread), and wall time per request", table),
            ("sync_worker drain rate by messages at once per instance (batchSize + newBatchThreshold)", sweep),
        ],
        notes=[
            "SDK defaults: clients built as the SDKs build them (entra-sync before issue 13). entra-sync: "
            "shared/stores/clients.py, shared/sources/graph/client.py, shared/targets/auth0/client.py.",
            "What entra-sync changes and why: README, *Performance tuning*.",
        ],
        seconds=time.perf_counter() - started,
    )


def concurrency(per: int) -> Table:
    """Items/s and run time of ``sync_worker`` per host.json concurrency, with and without vendor latency."""
    table = Table(["at once", "items/s, vendor latency", "run p50 / p95, vendor latency", "items/s, loopback"])
    saved = dict(os.environ)
    try:
        with Sandbox(users=per * len(CONCURRENCY) * 3, mapping_extra=UNGUARDED) as box:
            os.environ.update(box.env)  # the app reads its settings at import, as in Azure
            sys.modules.pop("function_app", None)
            import function_app

            functions = function_app.app.get_functions()
            people = iter(box.members())
            asyncio.run(empty_storage(bootstrap.init(Settings.from_env(box.env))))
            results: dict[tuple[int, int, bool], tuple[float, list[float]]] = {}
            for delayed in (True, False):
                rules = {
                    name: [FaultRule(route="*", kind="delay", delay_s=s)] if delayed else []
                    for name, s in LATENCY_S.items()
                }
                box.graph.faults.configure(rules["graph"])
                box.auth0.faults.configure(rules["auth0"])
                for batch, threshold in CONCURRENCY:
                    ids = [next(people)["id"] for _ in range(per)]
                    results[(batch, threshold, delayed)] = _drain(box.env, functions, ids, batch, threshold)
            box.graph.faults.configure([])
            box.auth0.faults.configure([])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    for batch, threshold in CONCURRENCY:
        rate, runs = results[(batch, threshold, True)]
        p50, p95 = statistics.median(runs), sorted(runs)[max(0, int(len(runs) * 0.95) - 1)]
        loopback, _ = results[(batch, threshold, False)]
        table.rows.append(
            [
                f"{batch + threshold} ({batch} + {threshold})",
                f"{rate:.1f}",
                f"{p50 * 1e3:.0f} / {p95 * 1e3:.0f} ms",
                f"{loopback:.1f}",
            ]
        )
    return table


def _drain(
    env: dict[str, str], functions: list[Any], ids: list[str], batch: int, threshold: int
) -> tuple[float, list[float]]:
    """Queue one joiner per id, serve the queue with this concurrency until it is empty: (items/s, run times)."""

    async def fill() -> None:
        queue = QueueClient.from_connection_string(
            env["AzureWebJobsStorage"], names.WORK_QUEUE, message_encode_policy=TextBase64EncodePolicy()
        )
        async with queue:
            for entra_id in ids:
                await queue.send_message(user_item(entra_id, "backfill").to_json())

    asyncio.run(fill())
    host_json = json.loads((REPO / "host.json").read_text())
    host_json["extensions"]["queues"].update(batchSize=batch, newBatchThreshold=threshold)
    bootstrap.init(Settings.from_env(env))  # clients bound to this host's event loop
    host = FunctionsHost.from_functions(
        functions,
        storage_connection=env["AzureWebJobsStorage"],
        app_settings=env,
        host_json=host_json,
        visibility_timeout_s=1.0,
        on_stop=lambda: bootstrap.app().aclose(),
    )
    started = time.perf_counter()
    with host:
        if not host.wait_idle(timeout_s=300):
            raise RuntimeError(f"sync-work did not drain at batchSize {batch}")
        elapsed = time.perf_counter() - started
        stats = host.stats(raw=True)["sync_worker"]
    if stats["failed"]:
        raise RuntimeError(f"{stats['failed']} work items failed at batchSize {batch}")
    return stats["succeeded"] / elapsed, list(stats["samples"]["run_time_s"])


def _ms(values: list[float]) -> list[str]:
    return [f"{v * 1e3:.2f} ms" for v in values]


async def _first_user(settings: Settings) -> str:
    client = graph_client(settings)
    query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=["id"], top=1)
    config = UsersRequestBuilder.UsersRequestBuilderGetRequestConfiguration(query_parameters=query)
    page = await client.users.get(request_configuration=config)
    assert page is not None and page.value and page.value[0].id
    return page.value[0].id


if __name__ == "__main__":
    print(run("--quick" in sys.argv).markdown())
