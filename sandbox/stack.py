"""The whole sandbox at once: Azurite, the Graph emulator and the Auth0 emulator on loopback.

Used by the demo, ``python -m sandbox serve`` and the benchmarks; tests start the pieces they need
themselves.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from sandbox.auth0 import Auth0Emulator
from sandbox.azurite import Azurite
from sandbox.graph import GraphEmulator
from sandbox.host import FunctionsHost
from sandbox.mapping import INBOUND_SOURCE
from shared import bootstrap, names
from shared.bootstrap import App
from shared.settings import Settings
from shared.sources.scim_inbox.factory import token_setting
from shared.sources.scim_inbox.rows import TABLE as INBOX_TABLE

GRAPH_TOKEN = "sandbox-graph-token"
AUTH0_TOKEN = "sandbox-auth0-token"
CLIENT_STATE = "sandbox-client-state-change-me-0001"
# The Secret Token of the inbound SCIM source ``hr-push`` (``SCIM_INBOX_HR_PUSH_TOKEN``): read only
# when a mapping names that source (sandbox.mapping.inbound_sources).
INBOX_TOKEN = "sandbox-inbound-scim-token-change-me-0001"


@dataclass
class Stack:
    graph_port: int = 0
    auth0_port: int = 0
    with_azurite: bool = True
    graph: GraphEmulator = field(init=False)
    auth0: Auth0Emulator = field(init=False)
    azurite: Azurite | None = field(init=False, default=None)
    timings: dict[str, float] = field(init=False, default_factory=dict)

    def start(self) -> Stack:
        t0 = time.perf_counter()
        self.graph = GraphEmulator(port=self.graph_port, token=GRAPH_TOKEN)
        self.graph.start()
        self.timings["graph"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.auth0 = Auth0Emulator(port=self.auth0_port, token=AUTH0_TOKEN)
        self.auth0.start()
        self.timings["auth0"] = time.perf_counter() - t0
        if self.with_azurite:
            t0 = time.perf_counter()
            try:
                self.azurite = Azurite().start()
            except BaseException:
                self.stop()
                raise
            self.timings["azurite"] = time.perf_counter() - t0
        return self

    def stop(self) -> None:
        for piece in (self.azurite, getattr(self, "auth0", None), getattr(self, "graph", None)):
            if piece is not None:
                piece.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, functions_url: str = "http://127.0.0.1:7071") -> dict[str, str]:
        """App settings that point entra-sync at this sandbox."""
        storage = self.azurite.connection_string if self.azurite is not None else "UseDevelopmentStorage=true"
        return sandbox_env(self.graph.base_url, self.auth0.base_url, storage, functions_url)

    def seed(self, users: int, groups: int, seed: int) -> dict[str, Any]:
        return self.graph.seed({"users": users, "groups": groups, "seed": seed})


def sandbox_env(graph_url: str, auth0_url: str, storage: str, functions_url: str) -> dict[str, str]:
    """App settings that point entra-sync at a sandbox's Graph and Auth0 emulators and storage, with
    the webhooks at ``functions_url`` (wherever those pieces run)."""
    return {
        "GRAPH_BASE_URL": graph_url,
        "GRAPH_TOKEN": GRAPH_TOKEN,
        "GRAPH_CLIENT_STATE": CLIENT_STATE,
        "GRAPH_NOTIFICATION_URL": f"{functions_url}/api/graph_webhook",
        "GRAPH_LIFECYCLE_URL": f"{functions_url}/api/graph_lifecycle",
        "AUTH0_BASE_URL": auth0_url,
        "AUTH0_TOKEN": AUTH0_TOKEN,
        token_setting(INBOUND_SOURCE): INBOX_TOKEN,
        "DELTA_SCHEDULE": "0 */5 * * * *",
        "RECONCILE_SCHEDULE": "0 0 2 * * *",
        "RISK_SCHEDULE": "0 * * * * *",
        "SUBSCRIPTIONS_SCHEDULE": "0 0 */6 * * *",
        "AzureWebJobsStorage": storage,
    }


async def empty_storage(svc: App) -> None:
    """The product's tables and queues, created if missing and emptied (Azurite is shared by runs),
    and the inbound SCIM store's table where an inbox has made it."""
    await svc.ensure_storage()
    for table in (*names.TABLES, INBOX_TABLE):
        client = svc.table(table)
        try:
            async for entity in client.list_entities(select=["PartitionKey", "RowKey"]):
                await client.delete_entity(entity["PartitionKey"], entity["RowKey"])
        except ResourceNotFoundError:
            if table != INBOX_TABLE:
                raise
    for queue in names.QUEUES:
        async with svc.queues.get_queue_client(queue) as q:
            await q.clear_messages()


@contextmanager
def functions_host(
    env: dict[str, str], visibility_timeout_s: float = 1.0, **build: Any
) -> Iterator[tuple[FunctionsHost, App]]:
    """The function app, imported with ``env`` as its settings (read at import, as in Azure), served by
    the host stand-in. Once the host's URL is known the webhook settings point at it and the
    services are built afresh; ``env`` is updated with them."""
    os.environ.update(env)
    sys.modules.pop("function_app", None)
    import function_app

    host = FunctionsHost(
        function_app.app,
        storage_connection=env["AzureWebJobsStorage"],
        app_settings=env,
        visibility_timeout_s=visibility_timeout_s,
        on_stop=lambda: bootstrap.app().aclose(),
    )
    with host:
        env.update(
            GRAPH_NOTIFICATION_URL=f"{host.base_url}/graph_webhook",
            GRAPH_LIFECYCLE_URL=f"{host.base_url}/graph_lifecycle",
        )
        yield host, bootstrap.init(Settings.from_env(env), **build)  # build: what a test or the demo gives
