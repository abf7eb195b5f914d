"""GraphSource over msgraph-sdk against the sandbox's Graph emulator on loopback, against the
Source contract. Delta pages hold two users, so its next links are followed; the tenant is changed
through the emulator's helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sandbox.graph import GraphEmulator
from shared.settings import Settings
from shared.sources.graph.client import graph_client
from shared.sources.graph.source import GraphSource
from tests.contracts.backends import Opener
from tests.contracts.source_contract import OTHER, SALES, STAFF, SourceContract, Tenant, mapping, now
from tests.support import sandbox_env


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphEmulator]:
    emulator = GraphEmulator(delta_page_size=2)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


class TestGraphSource(SourceContract):
    @pytest.fixture
    def tenant(self, graph: GraphEmulator) -> Opener[Tenant]:
        @asynccontextmanager
        async def on_emulator() -> AsyncIterator[Tenant]:
            graph.reset()
            for gid in (STAFF, SALES, OTHER):
                graph.create_group(id=gid)
            settings = Settings.from_env(
                sandbox_env(storage="UseDevelopmentStorage=true", graph_base_url=graph.base_url)
            )
            source = GraphSource(graph_client(settings), mapping())

            def add(**properties: Any) -> str:
                return str(graph.create_user(**properties)["id"])

            def join(uid: str, gid: str) -> None:
                graph.add_member(gid, uid)

            yield Tenant(
                source, lambda n: source.identities(page_size=n), now(add), now(graph.update_user), now(join),
                now(graph.soft_delete_user), now(graph.hard_delete_user), now(graph.expire_delta_tokens),
            )  # fmt: skip

        return on_emulator
