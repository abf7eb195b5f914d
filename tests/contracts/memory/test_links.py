"""The in-memory LinkStore (sandbox/memory_stores.py) against the LinkStore contract: every
target's store over one dict."""

from __future__ import annotations

import pytest

from sandbox.memory_stores import MemoryLinks
from shared.core.model import Link
from tests.contracts.backends import Opener, in_memory
from tests.contracts.links_contract import LinkStoreContract, Stores


def stores() -> Stores:
    table: dict[tuple[str, str], Link] = {}
    return lambda target, source="entra": MemoryLinks(table, target=target, source=source)


class TestMemoryLinks(LinkStoreContract):
    @pytest.fixture
    def links(self) -> Opener[Stores]:
        return in_memory(stores)
