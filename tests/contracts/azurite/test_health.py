"""The HealthStore (shared/stores/health.py) over the Table Storage state store on a fresh Azurite
table, against the HealthStore contract."""

from __future__ import annotations

import pytest

from sandbox.azurite import Azurite
from shared.core.ports import HealthStore
from shared.stores.health import HealthStore as StateHealthStore
from shared.stores.state import StateStore as TableStateStore
from tests.contracts.backends import Opener, on_fresh_table
from tests.contracts.health_contract import HealthStoreContract

pytestmark = pytest.mark.azurite


class TestTableHealthStore(HealthStoreContract):
    @pytest.fixture
    def health(self, azurite: Azurite) -> Opener[HealthStore]:
        return on_fresh_table(azurite, lambda table: StateHealthStore(TableStateStore(table)))
