"""The whole sandbox at once: Azurite, the Graph emulator and the Auth0 emulator on loopback.

Used by the demo, ``python -m sandbox serve`` and the benchmarks; tests start the pieces they need
themselves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.auth0 import Auth0Emulator
from sandbox.azurite import Azurite
from sandbox.graph import GraphEmulator

GRAPH_TOKEN = "sandbox-graph-token"
AUTH0_TOKEN = "sandbox-auth0-token"
CLIENT_STATE = "sandbox-client-state-change-me-0001"


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
        env = {
            "GRAPH_BASE_URL": self.graph.base_url,
            "GRAPH_TOKEN": GRAPH_TOKEN,
            "GRAPH_CLIENT_STATE": CLIENT_STATE,
            "GRAPH_NOTIFICATION_URL": f"{functions_url}/api/graph_webhook",
            "GRAPH_LIFECYCLE_URL": f"{functions_url}/api/graph_lifecycle",
            "AUTH0_BASE_URL": self.auth0.base_url,
            "AUTH0_TOKEN": AUTH0_TOKEN,
            "DELTA_SCHEDULE": "0 */5 * * * *",
            "RECONCILE_SCHEDULE": "0 0 2 * * *",
            "RISK_SCHEDULE": "0 * * * * *",
            "SUBSCRIPTIONS_SCHEDULE": "0 0 */6 * * *",
        }
        env["AzureWebJobsStorage"] = (
            self.azurite.connection_string if self.azurite is not None else "UseDevelopmentStorage=true"
        )
        return env

    def seed(self, users: int, groups: int, seed: int) -> dict[str, Any]:
        return self.graph.seed({"users": users, "groups": groups, "seed": seed})
