"""Entra provisioning's request sequences replayed against the inbound endpoint (the shapes its
provisioning logs show), asserting after each step what is stored, how the source reads it, and
which work items reached the lane."""

from __future__ import annotations

from shared.core.model import SourceState
from shared.mapping.model import read_path
from tests.sources.scim_inbox.conftest import ENTERPRISE, GROUP, MICROSOFT_GROUP, Entra, user

TEST_CONNECTION_GUID = "2d0f6b51-93b7-4c8e-9d1a-4e0cbb7f3c2a"


def test_entra_s_lifecycle_of_a_user_and_a_group(entra: Entra) -> None:
    # Test Connection: a random GUID as userName, answered 200 with an empty list.
    probe = entra.call("GET", "/Users", query={"filter": f'userName eq "{TEST_CONNECTION_GUID}"'})
    assert (probe.status, probe.body) == (200, {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": [],
    })  # fmt: skip
    assert probe.headers["Content-Type"] == "application/scim+json" and entra.enqueued() == []

    # Create: Entra first looks the user up by its matching attribute, then POSTs.
    assert entra.call("GET", "/Users", query={"filter": 'userName eq "ada@contoso.example"'}).body["totalResults"] == 0
    created = entra.call("POST", "/Users", user("Ada", "0f5c1c2e-AAAA-4bbb-8ccc-111111111111"))
    assert created.status == 201 and created.body["externalId"] == "0f5c1c2e-AAAA-4bbb-8ccc-111111111111"
    uid = created.body["id"]
    assert created.headers["Location"].endswith(f"/api/scim/hr-push/v2/Users/{uid}")
    assert entra.enqueued() == [("user", uid, "push", "hr-push")]
    ada = entra.read(uid)
    assert (ada.state, ada.source, ada.attributes["userName"], read_path(ada.attributes, "emails.work")) == (
        SourceState.ACTIVE, "hr-push", "ada@contoso.example", "ada@contoso.example",
    )  # fmt: skip

    # Disable: a capitalised op and the string "False".
    off = entra.patch(f"/Users/{uid}", {"op": "Replace", "path": "active", "value": "False"})
    assert off.status in (200, 204)
    assert entra.read(uid).state is SourceState.DISABLED and entra.enqueued() == [("user", uid, "push", "hr-push")]

    # A path-less replace of several attributes: dotted, URN-prefixed and PascalCase keys.
    moved = entra.patch(f"/Users/{uid}", {"op": "Replace", "value": {
        "name.givenName": "Adah", "DisplayName": "Adah Example", "Active": "True",
        f"{ENTERPRISE}:department": "Research", f"{ENTERPRISE}:manager": "e1111111-2222-4333-8444-555555555555",
    }})  # fmt: skip
    assert moved.status in (200, 204)
    adah = entra.read(uid)
    assert adah.state is SourceState.ACTIVE
    assert {k: read_path(adah.attributes, k) for k in ("name.givenName", "displayName", "department", "manager")} == {
        "name.givenName": "Adah", "displayName": "Adah Example", "department": "Research",
        "manager": "e1111111-2222-4333-8444-555555555555",
    }  # fmt: skip
    assert entra.enqueued() == [("user", uid, "push", "hr-push")]

    # A second user, then a group: created with no members and Microsoft's extra schema.
    bo = entra.call("POST", "/Users", user("Bo", "0f5c1c2e-BBBB-4bbb-8ccc-222222222222")).body["id"]
    entra.enqueued()
    lookup = entra.call(
        "GET", "/Groups", query={"excludedAttributes": "members", "filter": 'displayName eq "Research"'}
    )
    assert lookup.body["totalResults"] == 0
    group = entra.call("POST", "/Groups", {
        "schemas": [GROUP, MICROSOFT_GROUP], "externalId": "9a9a9a9a-0000-4000-8000-000000000001",
        "displayName": "Research", "members": [],
    })  # fmt: skip
    assert group.status == 201 and entra.enqueued() == []  # no member: nobody to converge
    gid = group.body["id"]

    # Member add (members without a type), both users at once.
    added = entra.patch(f"/Groups/{gid}", {"op": "Add", "path": "members", "value": [{"value": uid}, {"value": bo}]})
    assert added.status in (200, 204), added.body
    assert sorted(entra.enqueued()) == sorted([("user", uid, "push", "hr-push"), ("user", bo, "push", "hr-push")])
    assert {gid, "Research"} <= entra.read(uid).groups and {gid, "Research"} <= entra.read(bo).groups
    listed = entra.call(
        "GET", "/Groups", query={"excludedAttributes": "members", "filter": 'displayName eq "Research"'}
    )
    assert listed.body["totalResults"] == 1 and "members" not in listed.body["Resources"][0]

    # Member remove, the form without the flag: path `members` with a value list.
    removed = entra.patch(f"/Groups/{gid}", {"op": "Remove", "path": "members", "value": [{"value": bo}]})
    assert removed.status in (200, 204) and entra.enqueued() == [("user", bo, "push", "hr-push")]
    assert entra.read(bo).groups == frozenset() and gid in entra.read(uid).groups

    # Member remove, the flagged form: a value filter in the path.
    entra.patch(f"/Groups/{gid}", {"op": "Remove", "path": f'members[value eq "{uid}"]'})
    assert entra.enqueued() == [("user", uid, "push", "hr-push")] and entra.read(uid).groups == frozenset()
    assert "members" not in entra.call("GET", f"/Groups/{gid}").body

    # Delete: 204, then a 404 SCIM error; the source reads a hard delete.
    gone = entra.call("DELETE", f"/Users/{uid}")
    assert (gone.status, gone.body) == (204, None) and entra.enqueued() == [("user", uid, "push", "hr-push")]
    missing = entra.call("GET", f"/Users/{uid}")
    assert missing.status == 404 and missing.body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert entra.read(uid).state is SourceState.HARD_DELETED
    assert entra.read(bo).state is SourceState.ACTIVE
    assert {reply.status for reply in entra.sent} < set(range(200, 500))  # never a 5xx


def test_a_retried_create_answers_the_stored_user_and_is_audited_as_a_replay(entra: Entra) -> None:
    first = entra.call("POST", "/Users", user("Cy", "0f5c1c2e-CCCC-4bbb-8ccc-333333333333"))
    entra.enqueued()
    again = entra.call("POST", "/Users", user("Cy", "0f5c1c2e-CCCC-4bbb-8ccc-333333333333"))
    assert again.status == 201 and again.body["id"] == first.body["id"]  # no 409 loop
    assert entra.enqueued() == [("user", first.body["id"], "push", "hr-push")]  # in case the first was lost
    assert [(r["action"], r["identity"]) for r in entra.audit.rows] == [("replay", first.body["id"])]
    other = entra.call("POST", "/Users", user("Cy", "0f5c1c2e-DDDD-4bbb-8ccc-444444444444"))
    assert (other.status, other.body["scimType"]) == (409, "uniqueness")
    assert entra.enqueued() == []


def test_without_the_flag_entra_s_requests_are_served_the_same(entra: Entra) -> None:
    entra.flag = False
    uid = entra.call("POST", "/Users", user("Di", "0f5c1c2e-EEEE-4bbb-8ccc-555555555555")).body["id"]
    gid = entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Ops", "members": [{"value": uid}]}).body[
        "id"
    ]
    entra.patch(f"/Groups/{gid}", {"op": "Remove", "path": "members", "value": [{"value": uid}]})
    assert entra.read(uid).groups == frozenset()
