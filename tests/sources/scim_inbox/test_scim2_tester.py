"""scim2-tester's every check for Users and Groups against the inbound endpoint, served on
127.0.0.1 through the HTTP function (functions/scim_inbox.py) by the Functions host stand-in, its
store on Azurite: the tally is printed, and a check that fails fails the test unless the README
lists it as one that cannot pass (with the reason)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import azure.functions as func
import httpx2
import pytest
from azure.data.tables.aio import TableServiceClient
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from functions.scim_inbox import bp
from sandbox.azurite import Azurite
from sandbox.host import FunctionsHost
from sandbox.memory_stores import MemoryQueue
from shared.settings import Secret
from shared.sources.scim_inbox import factory
from shared.sources.scim_inbox.rows import TableRows
from tests.contracts.backends import fresh_name

pytestmark = pytest.mark.azurite

TOKEN = "t" * 40
# Checks that cannot pass here, each with its reason in the README ("What scim2-tester reports").
CANNOT_PASS: frozenset[str] = frozenset()
FAILED = {Status.ERROR, Status.CRITICAL}


@pytest.fixture
def served(azurite: Azurite) -> Iterator[tuple[FunctionsHost, MemoryQueue]]:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(bp)
    queue = MemoryQueue()
    host = FunctionsHost(app, storage_connection=azurite.connection_string)
    host.start()
    try:
        table = fresh_name("inbox")

        async def build() -> TableServiceClient:
            tables = TableServiceClient.from_connection_string(azurite.connection_string)
            await tables.create_table(table)
            rows = {"hr-push": TableRows(tables.get_table_client(table), "hr-push")}
            factory.install(factory.build_inbox({"hr-push": Secret(TOKEN)}, queue, None, rows=rows))
            return tables

        tables = host.run_coroutine(build())  # on the host's loop: the clients belong to it
        yield host, queue
        host.run_coroutine(tables.delete_table(table))
        host.run_coroutine(tables.close())
    finally:
        factory.install(None)
        host.stop()


def test_every_scim2_tester_check_for_users_and_groups_passes(served: tuple[FunctionsHost, MemoryQueue]) -> None:
    host, queue = served
    base = f"{host.base_url}/scim/hr-push/v2"
    with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        results = check_server(SyncSCIMClient(http), resource_types=["User", "Group"])
    tally = Counter(r.status.name for r in results)
    print("scim2-tester:", dict(sorted(tally.items())), f"({len(results)} checks)")
    failed = [
        f"{r.resource_type or ''} {r.title}: {r.reason}"
        for r in results
        if r.status in FAILED and r.title not in CANNOT_PASS
    ]
    for line in failed:
        print("  failed:", line)
    for r in results:
        if r.status is Status.SKIPPED:
            print("  skipped:", r.resource_type or "", r.title, r.reason)
    assert not failed
    assert tally["SUCCESS"] >= 20  # the checks ran (discovery, create, read, update, delete for both)
    assert queue.visible(), "the users scim2-tester created were enqueued"
