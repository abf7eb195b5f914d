"""The Table Storage LeaseStore (shared/stores/leases.py) against the LeaseStore contract: every
worker's store over one fresh Azurite table."""

from __future__ import annotations

import pytest
from azure.data.tables.aio import TableClient

from sandbox.azurite import Azurite
from shared.stores.leases import LeaseStore as TableLeaseStore
from tests.contracts.backends import Opener, on_fresh_table
from tests.contracts.leases_contract import TTL_S, LeaseStoreContract, Workers

pytestmark = pytest.mark.azurite


def workers(table: TableClient) -> Workers:
    return lambda clock: TableLeaseStore(table, TTL_S, clock=clock)


class TestTableLeaseStore(LeaseStoreContract):
    @pytest.fixture
    def leases(self, azurite: Azurite) -> Opener[Workers]:
        return on_fresh_table(azurite, workers)
