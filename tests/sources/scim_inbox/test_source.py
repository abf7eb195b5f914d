"""The inbound store read as a Source: every user a page at a time, classified, with its groups
(ids and displayNames, narrowed to the mapping's), and the users changed since a cursor."""

from __future__ import annotations

import asyncio

from shared.core.model import SourceState
from shared.mapping.model import AttributeMapping, Scope
from shared.sources.scim_inbox import storage as inbox_storage
from shared.sources.scim_inbox.schema import PATHS
from shared.sources.scim_inbox.source import InboxSource
from tests.sources.scim_inbox.conftest import ENTERPRISE, GROUP, Entra, user


def test_identities_page_through_every_live_user_classified_with_relevant_groups(entra: Entra) -> None:
    ids = {n: entra.call("POST", "/Users", user(n, f"Obj-{n}")).body["id"] for n in ("Ann", "Bea", "Cy", "Di", "Ed")}
    members = [{"value": ids["Ann"]}, {"value": ids["Bea"]}]
    gid = entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Staff", "members": members}).body["id"]
    entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Other", "members": [{"value": ids["Ann"]}]})
    entra.patch(f"/Users/{ids['Cy']}", {"op": "Replace", "path": "active", "value": "False"})
    entra.patch(f"/Users/{ids['Di']}", {"op": "Replace", "path": "userType", "value": "Guest"})
    entra.call("DELETE", f"/Users/{ids['Ed']}")
    storage = entra.inbox.endpoints.endpoints["hr-push"].storage
    source = InboxSource("hr-push", storage, Scope(), relevant_groups=frozenset({"Staff"}))

    async def pages() -> list[list[object]]:
        return [page async for page in source.identities(page_size=2)]

    paged = asyncio.run(pages())
    assert [len(p) for p in paged] == [2, 2]
    seen = {i.id: (i.state, i.groups) for p in paged for i in p}  # type: ignore[attr-defined]
    assert seen == {
        ids["Ann"]: (SourceState.ACTIVE, frozenset({"Staff"})),
        ids["Bea"]: (SourceState.ACTIVE, frozenset({"Staff"})),
        ids["Cy"]: (SourceState.DISABLED, frozenset()),
        ids["Di"]: (SourceState.OUT_OF_SCOPE, frozenset()),
    }
    assert gid not in seen[ids["Ann"]][1]  # the mapping names the group by displayName only


def test_changed_lists_every_user_then_only_those_written_or_regrouped_since(entra: Entra) -> None:
    source = entra.inbox.sources["hr-push"]
    clock = source.storage.clock
    ann = entra.call("POST", "/Users", user("Ann", "Obj-A")).body["id"]
    bea = entra.call("POST", "/Users", user("Bea", "Obj-B")).body["id"]
    everyone, cursor = asyncio.run(source.changed(None))
    assert everyone == {ann, bea}
    clock.advance(1)  # type: ignore[attr-defined]
    assert asyncio.run(source.changed(cursor))[0] == set()
    entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "G", "members": [{"value": bea}]})
    entra.call("DELETE", f"/Users/{ann}")
    changes, _ = asyncio.run(source.changed(cursor))
    assert changes == {ann, bea}  # the deleted one too: a leaver


def test_a_mapping_entry_reads_every_path_the_kind_accepts_from_a_pushed_user(entra: Entra) -> None:
    # The seam between the kind (which paths a mapping may name) and the source (what an identity
    # holds): a mapping entry reads an identity's attributes with read_path, a dotted step at a time.
    body = user("Fay", "Obj-F", title="Lead", userType="Member", phoneNumbers=[{"type": "mobile", "value": "+1 555"}])
    body["name"] |= {"middleName": "Q"}
    body["addresses"] = [{"type": "work", "locality": "Oslo", "country": "NO"}]
    body[ENTERPRISE] = {"department": "Ops", "employeeNumber": "E7", "manager": {"value": "Obj-M"}}
    uid = entra.call("POST", "/Users", body).body["id"]
    read = entra.read(uid).attributes
    expected = {
        "id": uid, "userName": "fay@contoso.example", "externalId": "Obj-F", "displayName": "Fay", "title": "Lead",
        "userType": "Member", "active": True, "name.givenName": "Fay", "name.familyName": "Example",
        "name.middleName": "Q", "emails.work": "fay@contoso.example", "emails.primary": "fay@contoso.example",
        "phoneNumbers.mobile": "+1 555", "addresses.work.locality": "Oslo", "addresses.work.country": "NO",
        "department": "Ops", "employeeNumber": "E7", "manager": "Obj-M",
    }  # fmt: skip
    entries = (AttributeMapping(target="x", sources=(path,)) for path in PATHS)
    assert {e.sources[0]: value for e in entries if (value := e.value_from(read)) is not None} == expected


def test_a_user_s_groups_are_read_by_key_and_agree_with_the_scan(entra: Entra, monkeypatch) -> None:
    """The worker reads a user's groups on every change. Scanning the user's membership rows walks
    the whole table in Azurite (a 10,000-user push slowed to 2 users converged a second), so the
    groups a mapping names are read by key; the answer is the scan's, group by group: a member by
    name and by id, not a member once removed, not of a deleted group, names as spelt."""
    ids = {n: entra.call("POST", "/Users", user(n, f"Obj-{n}")).body["id"] for n in ("Ann", "Bea", "Cy")}

    def group(name: str, *members: str) -> str:
        body = {"schemas": [GROUP], "displayName": name, "members": [{"value": ids[m]} for m in members]}
        return str(entra.call("POST", "/Groups", body).body["id"])

    staff, sales, gone = group("Staff", "Ann", "Bea"), group("Sales", "Ann", "Cy"), group("Gone", "Ann")
    group("Other", "Ann", "Bea", "Cy")
    entra.patch(f"/Groups/{staff}", {"op": "Remove", "path": f'members[value eq "{ids["Bea"]}"]'})
    entra.call("DELETE", f"/Groups/{gone}")
    storage = entra.inbox.endpoints.endpoints["hr-push"].storage
    wanted = frozenset({"Staff", "sales", sales, gone, "Gone", "Nobody"})
    scanned: list[str] = []
    scan = storage.rows.scan
    storage.rows.scan = lambda prefix, **kw: (scanned.append(prefix), scan(prefix, **kw))[1]  # type: ignore[method-assign]

    def groups(point_groups: int) -> dict[str, frozenset[str]]:
        monkeypatch.setattr(inbox_storage, "POINT_GROUPS", point_groups)
        source = InboxSource("hr-push", storage, Scope(), relevant_groups=wanted)
        return {n: asyncio.run(source.read(uid)).groups for n, uid in ids.items()}

    by_key = groups(16)
    assert scanned == []  # no scan: each wanted group read by key
    assert by_key == {
        "Ann": frozenset({"Staff", sales}),  # "sales" is not how the group is spelt; Gone is deleted
        "Bea": frozenset(),  # removed from Staff
        "Cy": frozenset({sales}),
    }
    assert groups(0) == by_key and scanned  # the scan, past POINT_GROUPS, answers the same

    # Paging every identity (reconciliation, backfill) resolves the wanted groups once a stored page,
    # then reads each user's membership rows alone; the answer is the same.
    monkeypatch.setattr(inbox_storage, "POINT_GROUPS", 16)
    scanned.clear()
    keys: list[str] = []
    get = storage.rows.get
    storage.rows.get = lambda key: (keys.append(key), get(key))[1]  # type: ignore[method-assign]
    source = InboxSource("hr-push", storage, Scope(), relevant_groups=wanted)

    async def every() -> dict[str, frozenset[str]]:
        return {i.id: i.groups async for page in source.identities() for i in page}

    paged = asyncio.run(every())
    assert paged == {uid: by_key[n] for n, uid in ids.items()}
    assert scanned == ["user|"]  # the users' page, nothing more
    name_reads = [k for k in keys if not k.startswith("member|")]
    assert len(name_reads) == len(set(name_reads))  # each name index and group row once for the page
    live = {staff, sales}  # of the groups wanted, the live ones: a user's row in each, nothing else
    assert sorted(k for k in keys if k.startswith("member|")) == sorted(
        f"member|{g}|{u}" for g in live for u in ids.values()
    )
