"""The Table Storage HealthStore (shared/stores/health.py) on a fresh Azurite table against the
HealthStore contract."""

from __future__ import annotations

import pytest

from sandbox.azurite import Azurite
from shared.core.ports import HealthStore
from shared.stores.health import HealthStore as TableHealthStore
from tests.contracts.backends import Opener, on_fresh_table
from tests.contracts.health_contract import HealthStoreContract

pytestmark = pytest.mark.azurite


class TestTableHealthStore(HealthStoreContract):
    @pytest.fixture
    def health(self, azurite: Azurite) -> Opener[HealthStore]:
        return on_fresh_table(azurite, TableHealthStore)
