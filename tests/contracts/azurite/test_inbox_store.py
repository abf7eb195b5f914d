"""The inbound SCIM store over Table Storage rows (shared/sources/scim_inbox/rows.py), on a fresh
Azurite table, against its contract: the commits are Azurite's entity-group transactions."""

from __future__ import annotations

import pytest

from sandbox.azurite import Azurite
from shared.sources.scim_inbox.rows import Rows, TableRows
from tests.contracts.backends import Opener, on_fresh_table
from tests.contracts.inbox_store_contract import InboxStoreContract

pytestmark = pytest.mark.azurite


class TestTableInboxStore(InboxStoreContract):
    @pytest.fixture
    def rows(self, azurite: Azurite) -> Opener[Rows]:
        return on_fresh_table(azurite, lambda table: TableRows(table, "hr-push"))
