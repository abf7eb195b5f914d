"""The Table Storage LinkStore (shared/stores/links.py) against the LinkStore contract: every
target's store over one fresh Azurite table."""

from __future__ import annotations

import pytest
from azure.data.tables.aio import TableClient

from sandbox.azurite import Azurite
from shared.stores.links import LinkStore as TableLinkStore
from tests.contracts.backends import Opener, on_fresh_table
from tests.contracts.links_contract import LinkStoreContract, Stores

pytestmark = pytest.mark.azurite


def stores(table: TableClient) -> Stores:
    return lambda target, source="entra": TableLinkStore(table, target, source)


class TestTableLinkStore(LinkStoreContract):
    @pytest.fixture
    def links(self, azurite: Azurite) -> Opener[Stores]:
        return on_fresh_table(azurite, stores)
