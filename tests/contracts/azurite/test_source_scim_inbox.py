"""The inbound SCIM source (shared/sources/scim_inbox/) against the Source contract: its store on a
fresh Azurite table, the tenant changed the way Entra provisioning changes it, through the
endpoint with the source's bearer token. It speaks SCIM paths (``emails.work``, ``active``), has no
soft deletion (Entra disables first) and keeps every cursor, so those two checks are skipped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.memory_stores import MemoryQueue
from shared.settings import Secret
from shared.sources.scim_inbox.factory import build_inbox
from shared.sources.scim_inbox.rows import TableRows
from tests.contracts.backends import Opener, fresh_table
from tests.contracts.source_contract import SourceContract, Tenant, mapping
from tests.support import FakeClock

pytestmark = pytest.mark.azurite

SOURCE = "hr-push"
TOKEN = "contract-token-" + "y" * 32
BASE_URL = "https://sync.example/api/scim/hr-push/v2"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
NAMES = {"mail": "emails.work", "accountEnabled": "active"}  # the contract's Graph names, in SCIM paths


def scim_values(graph: dict[str, Any]) -> dict[str, Any]:
    """Graph-named properties as a SCIM user's attributes (a path-less replace's value)."""
    out: dict[str, Any] = {}
    for key, value in graph.items():
        if key == "mail":
            out["userName"] = value
            out["emails"] = [{"type": "work", "primary": True, "value": value}]
        elif key == "accountEnabled":
            out["active"] = value
        elif key == "department":
            out[f"{ENTERPRISE}:department"] = value
        elif key in ("displayName", "userType"):
            out[key] = value
    return out


class TestInboundScimSource(SourceContract):
    @pytest.fixture
    def tenant(self, azurite: Azurite) -> Opener[Tenant]:
        @asynccontextmanager
        async def on_azurite() -> AsyncIterator[Tenant]:
            async with fresh_table(azurite) as table:
                plan = mapping()
                inbox = build_inbox(
                    {SOURCE: Secret(TOKEN)}, MemoryQueue(FakeClock()), None, rows={SOURCE: TableRows(table, SOURCE)},
                    scope=plan.scope, relevant_groups=plan.relevant_groups,
                )  # fmt: skip
                groups: dict[str, str] = {}  # displayName -> the id the store gave it

                async def call(method: str, path: str, body: Any = None) -> dict[str, Any]:
                    reply = await inbox.endpoints.handle(
                        SOURCE, method, path, {}, {"Authorization": f"Bearer {TOKEN}"},
                        b"" if body is None else json.dumps(body).encode(), BASE_URL,
                    )  # fmt: skip
                    assert reply.status < 300, (method, path, reply.status, reply.body)
                    return reply.body or {}

                async def add(**graph: Any) -> str:
                    values = scim_values({"accountEnabled": True, **graph})
                    nested = {k: v for k, v in values.items() if not k.startswith(ENTERPRISE)}
                    enterprise = {k.rsplit(":", 1)[1]: v for k, v in values.items() if k.startswith(ENTERPRISE)}
                    body = {"schemas": [USER, ENTERPRISE], **nested, ENTERPRISE: enterprise}
                    return str((await call("POST", "/Users", body))["id"])

                async def update(uid: str, **graph: Any) -> None:
                    operation = {"op": "Replace", "value": scim_values(graph)}
                    await call("PATCH", f"/Users/{uid}", {"schemas": [PATCH], "Operations": [operation]})

                async def join(uid: str, group: str) -> None:
                    # An inbound group is named by its displayName: the contract's group ids serve as names.
                    if group not in groups:
                        created = await call("POST", "/Groups", {"schemas": [GROUP], "displayName": group})
                        groups[group] = created["id"]
                    add_member = {"op": "Add", "path": "members", "value": [{"value": uid}]}
                    await call("PATCH", f"/Groups/{groups[group]}", {"schemas": [PATCH], "Operations": [add_member]})

                async def hard_delete(uid: str) -> None:
                    await call("DELETE", f"/Users/{uid}")

                source = inbox.sources[SOURCE]
                yield Tenant(
                    source, lambda n: source.identities(page_size=n), add, update, join, None, hard_delete, None,
                    name=lambda graph_name: NAMES.get(graph_name, graph_name),
                )  # fmt: skip

        return on_azurite
