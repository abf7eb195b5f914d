"""Graph ``sendMail`` from one mailbox (shared.alerting.channels.GraphCourier, what an Auth0
section's ``welcome_mailbox`` builds) against the Courier contract, on the Graph emulator; the
mailbox access policy the README describes is how the service refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from sandbox.graph.emulator import GraphEmulator
from shared.alerting.channels import GraphCourier
from shared.settings import Settings
from shared.sources.graph.client import graph_client
from tests.contracts.courier_contract import CourierContract, Couriers, Opener
from tests.support import sandbox_env

MAILBOX = "entra-sync@contoso.example"


class TestGraphCourier(CourierContract):
    @pytest.fixture
    def couriers(self) -> Opener:
        @asynccontextmanager
        async def on_graph() -> AsyncIterator[Couriers]:
            with GraphEmulator() as graph:
                env = sandbox_env(storage="UseDevelopmentStorage=true", graph_base_url=graph.base_url)
                courier = GraphCourier(MAILBOX, graph_client(Settings.from_env(env)))

                def mailbox(address: str) -> list[tuple[str, str]]:
                    return [(m["subject"], m["body"]) for m in graph.outbox.listed() if address in m["to"]]

                def down() -> None:
                    graph.outbox.allowed = frozenset({"another@contoso.example"})  # the policy leaves it out

                yield Couriers(courier, mailbox, down)

        return on_graph
