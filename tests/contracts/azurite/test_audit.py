"""The Table Storage AuditStore (shared/stores/audit.py) on a fresh Azurite table against the
AuditStore contract."""

from __future__ import annotations

import pytest

from sandbox.azurite import Azurite
from shared.core.ports import AuditStore
from shared.stores.audit import AuditStore as TableAuditStore
from tests.contracts.audit_contract import AuditStoreContract
from tests.contracts.backends import Opener, on_fresh_table

pytestmark = pytest.mark.azurite


class TestTableAuditStore(AuditStoreContract):
    @pytest.fixture
    def audit(self, azurite: Azurite) -> Opener[AuditStore]:
        return on_fresh_table(azurite, TableAuditStore)
