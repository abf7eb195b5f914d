"""The inbound SCIM store over Table Storage rows (shared/sources/scim_inbox/rows.py), on a fresh
Azurite table, against its contract: the commits are Azurite's entity-group transactions."""

from __future__ import annotations

import asyncio

import pytest
from azure.data.tables.aio import TableServiceClient

from sandbox.azurite import Azurite
from shared.sources.scim_inbox.rows import Rows, TableRows
from tests.contracts.backends import Opener, fresh_name, on_fresh_table
from tests.contracts.inbox_store_contract import InboxStoreContract

pytestmark = pytest.mark.azurite


class TestTableInboxStore(InboxStoreContract):
    @pytest.fixture
    def rows(self, azurite: Azurite) -> Opener[Rows]:
        return on_fresh_table(azurite, lambda table: TableRows(table, "hr-push"))


def test_a_store_whose_table_is_not_made_yet_reads_as_empty(azurite: Azurite) -> None:
    """Before Entra's first push the table does not exist: the source (the worker, reconciliation,
    an operator's search) reads an empty store, never an error."""

    async def body() -> None:
        async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
            rows = TableRows(service.get_table_client(fresh_name("missing")), "hr-push")
            assert await rows.get("user|anyone") is None
            assert [page async for page in rows.scan("xid|user|")] == []

    asyncio.run(body())
