"""What Entra provisioning pushes to the inbound SCIM endpoint reaches every target its source
feeds (issue 19, "Proof").

Through the real composition root and the indexed Functions, storage on Azurite: Entra's request
sequence (the shapes of tests/sources/scim_inbox/test_entra_replay.py) goes to the HTTP function
``scim_inbox`` with the source's bearer token; the work items it enqueues on the lane run through
the queue function ``sync_lane``; after each step the Auth0 emulator and a SCIM application
(scim2-server, sandbox/scim.py) hold the expected change. The mapping has two sources: ``hr-push``
(the endpoint) feeds ``auth0`` and ``scim:crm``; ``entra`` (Graph on the emulator) feeds
``scim:wiki``, a second SCIM application that must get nothing from the push.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from sandbox.azurite import Azurite
from sandbox.mapping import ENTERPRISE, INBOUND_SOURCE, inbound_sections, inbound_sources, scim_section
from sandbox.scim import ScimApp
from shared.bootstrap import App
from shared.core.work import WorkItem, user_item
from shared.sources.scim_inbox.factory import token_setting
from tests.integration.world import World, audit_rows, empty_storage, queued, run_worker, services_for
from tests.sources.scim_inbox.conftest import GROUP, MICROSOFT_GROUP, PATCH, TOKEN, user

TEST_CONNECTION_GUID = "2d0f6b51-93b7-4c8e-9d1a-4e0cbb7f3c2a"
ADA_OBJECT_ID = "0f5c1c2e-aaaa-4bbb-8ccc-111111111111"
BO_OBJECT_ID = "0f5c1c2e-bbbb-4bbb-8ccc-222222222222"
TENANT_URL = "https://sync.example/api/scim/hr-push/v2"


@dataclass
class Sandbox:
    world: World
    crm: ScimApp
    wiki: ScimApp


@pytest.fixture
def sandbox(azurite: Azurite, tmp_path: Path) -> Iterator[Sandbox]:
    crm, wiki = ScimApp().start(), ScimApp().start()
    tokens = {"SCIM_CRM_TOKEN": crm.token, "SCIM_WIKI_TOKEN": wiki.token, token_setting(INBOUND_SOURCE): TOKEN}
    world = World(azurite, tmp_path, users=8, groups=3, extra_env=tokens).start()
    try:
        staff = world.group_ids[0]
        wiki_section = scim_section(wiki.base_url, [(staff, "Staff")], name="wiki", extra="source: entra")
        text = (
            "version: 2\nscope: {user_types: [Member]}\n"
            + inbound_sources()
            + "targets:\n"
            + inbound_sections(crm.base_url, [("Research", ["Employee"], ["Research"])])
            + wiki_section
        )
        (tmp_path / "mapping.yaml").write_text(text)
        world.configure("http://127.0.0.1:9/api")
        yield Sandbox(world, crm, wiki)
    finally:
        world.stop()
        crm.stop()
        wiki.stop()


@dataclass
class Entra:
    """Entra provisioning pushing to ``hr-push`` through the HTTP function, and the Functions host
    running what each push enqueued through ``sync_lane``."""

    indexed: dict[str, Any]
    svc: App
    statuses: list[int] = field(default_factory=list)
    ran: list[WorkItem] = field(default_factory=list)

    async def call(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        request = func.HttpRequest(
            method=method,
            url=f"{TENANT_URL}{path}",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"},
            params={"aadOptscim062020": "", **(query or {})},
            route_params={"source": INBOUND_SOURCE, "path": path.lstrip("/")},
            body=b"" if body is None else json.dumps(body).encode(),
        )
        response = await self.indexed["scim_inbox"].get_user_function()(request)
        self.statuses.append(response.status_code)
        text = response.get_body()
        return response.status_code, json.loads(text) if text else None

    async def patch(self, path: str, *operations: dict[str, Any]) -> int:
        status, _ = await self.call("PATCH", path, {"schemas": [PATCH], "Operations": list(operations)})
        return status

    async def converge(self) -> list[tuple[str, str]]:
        """Run every work item the pushes enqueued through ``sync_lane`` (bounded: a push enqueues
        only the users it touched, and the worker enqueues nothing back for them); the users they
        named, with their source."""
        items = await queued(self.svc)
        for item in items:
            assert item.in_lane, item  # a push is a change Entra made now: it takes the lane
            await run_worker(self.indexed, item)
        self.ran += items
        assert await queued(self.svc, take=False) == [], "the worker left work behind"
        # A user's change names it; a membership change's group item names its users.
        return sorted((u, i.identity_source) for i in items for u in (i.users if i.kind == "group" else (i.id,)))


def auth0_by_email(world: World, email: str) -> dict[str, Any] | None:
    found = [u for u in world.auth0.snapshot(dump=True)["dump"]["users"] if u.get("email") == email]
    assert len(found) <= 1, found
    return found[0] if found else None


def roles(world: World, account: dict[str, Any]) -> set[str]:
    return set(world.auth0.user_role_names(account["user_id"]))


def scim_user(app: ScimApp, inbox_id: str) -> dict[str, Any] | None:
    found = [u for u in app.users() if u.get("externalId") == inbox_id]
    assert len(found) <= 1, found
    return found[0] if found else None


def scim_groups(app: ScimApp, scim_id: str) -> set[str]:
    return {str(g["displayName"]) for g in app.groups() if scim_id in app.members_of(g["id"])}


def test_entra_s_pushes_reach_auth0_and_the_scim_application_and_nothing_else(
    sandbox: Sandbox, indexed: dict[str, Any]
) -> None:
    world, crm, wiki = sandbox.world, sandbox.crm, sandbox.wiki
    world.graph.log.clear()

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await svc.ensure_storage()
            assert {n: j.section.source for n, j in svc.jobs.items()} == {
                "auth0": INBOUND_SOURCE, "scim:crm": INBOUND_SOURCE, "scim:wiki": "entra",
            }  # fmt: skip
            entra = Entra(indexed, svc)
            status, _ = await entra.call("GET", "/ServiceProviderConfig")  # creates the inbox table
            assert status == 200
            await empty_storage(svc)  # the inbox's table too, now that it exists
            await steps(entra, world, crm)
            assert set(entra.statuses) < set(range(200, 300)), entra.statuses  # every push accepted
            assert {i.identity_source for i in entra.ran} == {INBOUND_SOURCE}
            # The entra-fed application got nothing from the push, and Graph was never read for it.
            assert wiki.users() == [] and wiki.groups() == [] and world.graph.log.total == 0
            # It is live all the same: an Entra change reaches it, and only it.
            await run_worker(indexed, user_item(staff["id"], "notification"))
            return await audit_rows(svc)

    staff = next(  # an enabled Member: in scim:wiki's scope
        u for u in world.graph.snapshot(full=True)["dump"]["users"]
        if u["accountEnabled"] and u.get("userType") == "Member" and u.get("mail")
    )  # fmt: skip
    rows = asyncio.run(scenario())
    assert [u["externalId"] for u in wiki.users()] == [staff["id"]]
    assert auth0_by_email(world, staff["mail"].strip().lower()) is None and scim_user(crm, staff["id"]) is None
    pushed = [r for r in rows if r["identity_source"] == INBOUND_SOURCE and r.get("target")]
    assert {r["target"] for r in pushed} == {"auth0", "scim:crm"}
    assert [r for r in pushed if r["outcome"] != "ok"] == []
    # The rows say where the change came from: the pushed source, never Entra.
    details = [str(r.get("detail") or "") for r in pushed]
    assert any(f"disabled in the source {INBOUND_SOURCE}" in d for d in details), details
    assert not [d for d in details if "in Entra" in d]


async def steps(entra: Entra, world: World, crm: ScimApp) -> None:
    # Test Connection: a random GUID, 200 with an empty list; nothing enqueued, nothing written.
    status, body = await entra.call("GET", "/Users", query={"filter": f'userName eq "{TEST_CONNECTION_GUID}"'})
    assert (status, body["totalResults"], body["Resources"]) == (200, 0, [])
    assert await entra.converge() == []

    # Create: Ada reaches both targets with her mapped email, name and department.
    ada_in = user("Ada", ADA_OBJECT_ID, **{ENTERPRISE: {"department": "People"}})
    status, created = await entra.call("POST", "/Users", ada_in)
    assert status == 201
    ada = created["id"]
    assert await entra.converge() == [(ada, INBOUND_SOURCE)]
    account = auth0_by_email(world, "ada@contoso.example")
    assert account is not None and not account.get("blocked")
    assert (account["name"], account["given_name"], account["family_name"]) == ("Ada", "Ada", "Example")
    assert account["user_metadata"]["department"] == "People"
    assert account["app_metadata"]["external_id"] == ADA_OBJECT_ID  # Entra's objectId, as pushed
    app_user = scim_user(crm, ada)
    assert app_user is not None and app_user["active"] is True
    assert (app_user["userName"], app_user["displayName"], app_user["name"]["givenName"]) == (
        "ada@contoso.example", "Ada", "Ada",
    )  # fmt: skip
    assert app_user[ENTERPRISE]["department"] == "People"
    assert [(e["type"], e["value"]) for e in app_user["emails"]] == [("work", "ada@contoso.example")]

    # Disable with the string "False": blocked in Auth0, active=false in the application.
    assert await entra.patch(f"/Users/{ada}", {"op": "Replace", "path": "active", "value": "False"}) in (200, 204)
    assert await entra.converge() == [(ada, INBOUND_SOURCE)]
    assert (auth0_by_email(world, "ada@contoso.example") or {}).get("blocked") is True
    assert (scim_user(crm, ada) or {}).get("active") is False

    # A path-less replace of several attributes (dotted, URN-prefixed, PascalCase keys), back on.
    moved = {"name.givenName": "Adah", "DisplayName": "Adah Example", "Active": "True",
             f"{ENTERPRISE}:department": "Research"}  # fmt: skip
    assert await entra.patch(f"/Users/{ada}", {"op": "Replace", "value": moved}) in (200, 204)
    assert await entra.converge() == [(ada, INBOUND_SOURCE)]
    account = auth0_by_email(world, "ada@contoso.example") or {}
    assert account.get("blocked") is False
    assert (account["name"], account["given_name"], account["user_metadata"]["department"]) == (
        "Adah Example", "Adah", "Research",
    )  # fmt: skip
    app_user = scim_user(crm, ada) or {}
    assert (app_user.get("active"), app_user.get("displayName"), app_user["name"]["givenName"]) == (
        True, "Adah Example", "Adah",
    )  # fmt: skip
    assert app_user[ENTERPRISE]["department"] == "Research"

    # A second user, then the group Research, created with no members: nobody to converge.
    status, bo_out = await entra.call("POST", "/Users", user("Bo", BO_OBJECT_ID))
    bo = bo_out["id"]
    assert status == 201 and await entra.converge() == [(bo, INBOUND_SOURCE)]
    group = {"schemas": [GROUP, MICROSOFT_GROUP], "externalId": "9a9a9a9a-0000-4000-8000-000000000001",
             "displayName": "Research", "members": []}  # fmt: skip
    status, group_out = await entra.call("POST", "/Groups", group)
    assert status == 201 and await entra.converge() == []
    gid = group_out["id"]
    ada_account, bo_account = auth0_by_email(world, "ada@contoso.example"), auth0_by_email(world, "bo@contoso.example")
    assert ada_account is not None and bo_account is not None
    assert roles(world, ada_account) == roles(world, bo_account) == set()

    # Member add (no member type): the role the group's displayName grants, and the SCIM group.
    # A push is a change the source made now, as a notification is: planned from what the link
    # remembers, so Auth0 is only written (one role assignment each; the role's id is looked up once).
    added = {"op": "Add", "path": "members", "value": [{"value": ada}, {"value": bo}]}
    assert await entra.patch(f"/Groups/{gid}", added) in (200, 204)
    world.auth0.log.clear()
    assert await entra.converge() == sorted([(ada, INBOUND_SOURCE), (bo, INBOUND_SOURCE)])
    assert [(i.kind, i.id) for i in entra.ran[-1:]] == [("group", gid)]  # one message for both
    assert world.auth0_calls() == {"mgmt.roles.list": 1, "mgmt.users.roles.assign": 2}
    assert roles(world, ada_account) == roles(world, bo_account) == {"Employee"}
    ada_app, bo_app = scim_user(crm, ada) or {}, scim_user(crm, bo) or {}
    assert scim_groups(crm, ada_app["id"]) == scim_groups(crm, bo_app["id"]) == {"Research"}

    # Member remove without the flag's form: path `members` with a value list (Bo only).
    assert await entra.patch(f"/Groups/{gid}", {"op": "Remove", "path": "members", "value": [{"value": bo}]}) in (
        200, 204,
    )  # fmt: skip
    assert await entra.converge() == [(bo, INBOUND_SOURCE)]
    assert roles(world, bo_account) == set() and roles(world, ada_account) == {"Employee"}
    assert scim_groups(crm, bo_app["id"]) == set() and scim_groups(crm, ada_app["id"]) == {"Research"}

    # Member remove, the flagged form: a value filter in the path (Ada).
    assert await entra.patch(f"/Groups/{gid}", {"op": "Remove", "path": f'members[value eq "{ada}"]'}) in (200, 204)
    assert await entra.converge() == [(ada, INBOUND_SOURCE)]
    assert roles(world, ada_account) == set() and scim_groups(crm, ada_app["id"]) == set()

    # Delete: a hard delete; deleted in Auth0 and in the application (both sections say so). Bo stays.
    status, _ = await entra.call("DELETE", f"/Users/{ada}")
    assert status == 204 and await entra.converge() == [(ada, INBOUND_SOURCE)]
    assert auth0_by_email(world, "ada@contoso.example") is None and scim_user(crm, ada) is None
    bo_now = auth0_by_email(world, "bo@contoso.example")
    assert bo_now is not None and not bo_now.get("blocked") and (scim_user(crm, bo) or {}).get("active") is True
