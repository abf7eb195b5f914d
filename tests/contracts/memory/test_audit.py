"""The in-memory AuditStore (sandbox/memory_stores.py) against the AuditStore contract."""

from __future__ import annotations

import pytest

from sandbox.memory_stores import MemoryAudit
from shared.core.ports import AuditStore
from tests.contracts.audit_contract import AuditStoreContract
from tests.contracts.backends import Opener, in_memory


class TestMemoryAudit(AuditStoreContract):
    @pytest.fixture
    def audit(self) -> Opener[AuditStore]:
        return in_memory(MemoryAudit)
