"""An inbound endpoint over memory rows, and a client that sends what Entra sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from sandbox.memory_inbox import MemoryRows
from sandbox.memory_stores import MemoryAudit, MemoryQueue
from shared.core.model import Identity
from shared.core.work import WorkItem
from shared.settings import Secret
from shared.sources.scim_inbox.endpoint import Reply
from shared.sources.scim_inbox.factory import Inbox, build_inbox
from tests.support import FakeClock

TOKEN = "entra-secret-token-" + "x" * 24
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MICROSOFT_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"


@dataclass
class Entra:
    """Entra provisioning's side of the conversation with one inbound source (``hr-push``)."""

    inbox: Inbox
    rows: MemoryRows
    queue: MemoryQueue
    audit: MemoryAudit
    token: str = TOKEN
    flag: bool = True  # the Tenant URL carries ?aadOptscim062020
    sent: list[Reply] = field(default_factory=list)
    items: list[WorkItem] = field(default_factory=list)  # what the last ``enqueued`` took

    def call(
        self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None, **headers: str
    ) -> Reply:
        params = {"aadOptscim062020": ""} if self.flag else {}
        raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
        sent = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/scim+json", **headers}
        reply = asyncio.run(
            self.inbox.endpoints.handle(
                "hr-push",
                method,
                path,
                {**params, **(query or {})},
                sent,
                raw,
                "https://sync.example/api/scim/hr-push/v2",
            )
        )
        self.sent.append(reply)
        return reply

    def patch(self, path: str, *operations: dict[str, Any]) -> Reply:
        return self.call("PATCH", path, {"schemas": [PATCH], "Operations": list(operations)})

    def read(self, uid: str) -> Identity:
        return asyncio.run(self.inbox.sources["hr-push"].read(uid))

    def enqueued(self) -> list[tuple[str, str, str, str]]:
        """The users that reached the queue since the last call, as ("user", id, source,
        identity_source): named by a user item, or by a membership change's group item (the items
        themselves are kept in ``items``)."""
        self.items = self.queue.take()
        named = []
        for i in self.items:
            ids = i.users if i.kind == "group" else (i.id,)
            named += [("user", uid, i.source, i.identity_source) for uid in ids]
        return named


def user(name: str, external_id: str, **extra: Any) -> dict[str, Any]:
    mail = f"{name.lower()}@contoso.example"
    return {
        "schemas": [USER, ENTERPRISE], "externalId": external_id, "userName": mail, "active": True,
        "displayName": name, "emails": [{"primary": True, "type": "work", "value": mail}],
        "name": {"givenName": name, "familyName": "Example"}, **extra,
    }  # fmt: skip


@pytest.fixture
def entra() -> Entra:
    rows, queue, audit = MemoryRows(), MemoryQueue(FakeClock()), MemoryAudit()
    inbox = build_inbox({"hr-push": Secret(TOKEN)}, queue, audit, rows={"hr-push": rows}, clock=FakeClock())
    return Entra(inbox, rows, queue, audit)
