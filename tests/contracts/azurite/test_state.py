"""The Table Storage StateStore (shared/stores/state.py) on a fresh Azurite table against the
StateStore contract."""

from __future__ import annotations

import pytest

from sandbox.azurite import Azurite
from shared.core.ports import StateStore
from shared.stores.state import StateStore as TableStateStore
from tests.contracts.backends import Opener, on_fresh_table
from tests.contracts.state_contract import StateStoreContract

pytestmark = pytest.mark.azurite


class TestTableStateStore(StateStoreContract):
    @pytest.fixture
    def state(self, azurite: Azurite) -> Opener[StateStore]:
        return on_fresh_table(azurite, TableStateStore)
