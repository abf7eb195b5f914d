"""The inbound endpoint's promises one at a time: the token before anything else, Entra's quirks
accepted, RFC 7644 errors with their scimType (never a 500), the caps, and a change stored only
whole and always enqueued."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.memory_inbox import MemoryRows
from sandbox.memory_stores import MemoryAudit, MemoryQueue
from shared.core.work import MAX_ITEM_USERS, WorkItem
from shared.mapping.model import read_path
from shared.settings import Secret
from shared.sources.scim_inbox import storage as inbox_storage
from shared.sources.scim_inbox.factory import build_inbox
from shared.sources.scim_inbox.schema import MAX_BODY_BYTES, MAX_FILTER_CHARS, MAX_PAGE
from tests.sources.scim_inbox.conftest import ENTERPRISE, GROUP, MICROSOFT_GROUP, PATCH, TOKEN, USER, Entra, user
from tests.support import FakeClock

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def scim_type(reply: Any) -> tuple[int, str | None]:
    assert reply.body["schemas"] == [ERROR]
    return reply.status, reply.body.get("scimType")


class CountingRows(MemoryRows):
    calls = 0

    async def get(self, key: str) -> Any:
        CountingRows.calls += 1
        return await super().get(key)

    def scan(self, prefix: str, *, changed_after: int | None = None) -> Any:
        CountingRows.calls += 1
        return super().scan(prefix, changed_after=changed_after)


@contextlib.contextmanager
def scans(entra: Entra) -> Iterator[list[str]]:
    """The prefixes the store scans while the block runs (what tells a member list was read)."""
    scanned: list[str] = []
    scan = entra.rows.scan

    def counting_scan(prefix: str, **kwargs: Any) -> Any:
        scanned.append(prefix)
        return scan(prefix, **kwargs)

    entra.rows.scan = counting_scan  # type: ignore[method-assign]
    try:
        yield scanned
    finally:
        entra.rows.scan = scan  # type: ignore[method-assign]


# -- the token ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "wrong-token", "entra-secret-token-"])
def test_a_missing_or_wrong_token_is_a_401_before_the_body_is_read_or_storage_touched(entra: Entra, token: str) -> None:
    CountingRows.calls = 0
    entra.inbox.endpoints.endpoints["hr-push"].storage.rows = CountingRows()
    entra.token = token
    reply = entra.call("POST", "/Users", b"{not json at all")
    assert reply.status == 401 and reply.body["schemas"] == [ERROR]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert CountingRows.calls == 0 and entra.enqueued() == []


def test_an_unknown_source_answers_as_a_wrong_token_does(entra: Entra) -> None:
    headers = {"Authorization": f"Bearer {entra.token}"}
    reply = asyncio.run(entra.inbox.endpoints.handle("payroll", "GET", "/Users", {}, headers, b"", "https://x/v2"))
    assert reply.status == 401
    entra.token = "wrong"
    assert reply.body == entra.call("GET", "/Users").body  # the same answer: no source name is revealed


# -- Entra's quirks ----------------------------------------------------------------------------------


def test_pascal_case_names_a_bare_manager_and_add_on_a_single_valued_attribute(entra: Entra) -> None:
    body = {
        "schemas": [USER, ENTERPRISE], "UserName": "eve@contoso.example", "ExternalId": "Obj-E", "Active": "True",
        ENTERPRISE: {"manager": "e1111111-2222-4333-8444-555555555555", "Department": "Sales"},
    }  # fmt: skip
    created = entra.call("POST", "/Users", body)
    assert created.status == 201, created.body
    uid = created.body["id"]
    assert created.body[ENTERPRISE]["manager"]["value"] == "e1111111-2222-4333-8444-555555555555"
    entra.patch(
        f"/Users/{uid}",
        {"op": "Add", "path": "title", "value": "Engineer"},
        {"op": "add", "path": f"{ENTERPRISE}:manager", "value": "f1111111-2222-4333-8444-555555555555"},
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "eve@fabrikam.example"},
    )
    eve = entra.read(uid)
    assert (eve.attributes["title"], eve.attributes["manager"], read_path(eve.attributes, "emails.work")) == (
        "Engineer", "f1111111-2222-4333-8444-555555555555", "eve@fabrikam.example",
    )  # fmt: skip
    assert entra.call("GET", f"/Users/{uid}").body["externalId"] == "Obj-E"


def test_microsoft_s_group_schema_is_accepted_and_any_other_unknown_schema_refused(entra: Entra) -> None:
    ok = entra.call("POST", "/Groups", {"schemas": [GROUP, MICROSOFT_GROUP], "displayName": "A"})
    assert ok.status == 201 and ok.body["schemas"] == [GROUP]
    for schemas in ([GROUP, "urn:example:unknown:Group"], [USER, "http://schemas.example.com/Other"]):
        path = "/Groups" if schemas[0] == GROUP else "/Users"
        refused = entra.call("POST", path, {"schemas": schemas, "displayName": "B", "userName": "b@contoso.example"})
        assert refused.status == 400 and refused.body["schemas"] == [ERROR]
    assert (
        entra.call("GET", "/Groups").body["totalResults"] == 1 and entra.call("GET", "/Users").body["totalResults"] == 0
    )


def test_a_value_less_removal_by_filter_removes_one_member_never_the_list(entra: Entra) -> None:
    ids = [entra.call("POST", "/Users", user(n, f"Obj-{n}")).body["id"] for n in ("Ann", "Bea", "Cy")]
    gid = entra.call(
        "POST", "/Groups", {"schemas": [GROUP], "displayName": "G", "members": [{"value": i} for i in ids]}
    ).body["id"]
    entra.enqueued()
    entra.patch(f"/Groups/{gid}", {"op": "Remove", "path": f'members[value eq "{ids[1]}"]'})
    assert [m["value"] for m in entra.call("GET", f"/Groups/{gid}").body["members"]] == sorted([ids[0], ids[2]])
    entra.patch(f"/Groups/{gid}", {"op": "Remove", "path": "members", "value": [{"value": "unknown-member"}]})
    assert len(entra.call("GET", f"/Groups/{gid}").body["members"]) == 2
    assert entra.enqueued() == [("user", ids[1], "push", "hr-push")]


def test_group_display_names_are_unique(entra: Entra) -> None:
    entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Sales"})
    assert scim_type(entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "sales"})) == (409, "uniqueness")
    other = entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Ops"}).body["id"]
    renamed = entra.patch(f"/Groups/{other}", {"op": "Replace", "path": "displayName", "value": "SALES"})
    assert scim_type(renamed) == (409, "uniqueness")


def test_two_patches_of_one_group_at_the_same_moment_lose_no_member(entra: Entra) -> None:
    ids = [entra.call("POST", "/Users", user(f"P{n}", f"Obj-P{n}")).body["id"] for n in range(6)]
    gid = entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Busy"}).body["id"]
    endpoints = entra.inbox.endpoints
    headers = {"Authorization": f"Bearer {entra.token}", "Content-Type": "application/scim+json"}

    async def together() -> list[int]:
        replies = await asyncio.gather(*(
            endpoints.handle("hr-push", "PATCH", f"/Groups/{gid}", {}, headers, json.dumps({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Add", "path": "members", "value": [{"value": uid}]}],
            }).encode(), "https://x/v2")
            for uid in ids
        ))  # fmt: skip
        return [r.status for r in replies]

    assert set(asyncio.run(together())) <= {200, 204}
    assert sorted(m["value"] for m in entra.call("GET", f"/Groups/{gid}").body["members"]) == sorted(ids)


class InterleavingRows(MemoryRows):
    """Memory rows whose reads yield to the loop, as Table Storage's do: parallel requests' reads
    and writes interleave. Counts the commits refused for a row written meanwhile."""

    refused = 0

    async def get(self, key: str) -> Any:
        await asyncio.sleep(0)
        return await super().get(key)

    async def commit(self, ops: Any) -> None:
        try:
            await super().commit(ops)
        except inbox_storage.Conflict:
            self.refused += 1
            raise


def test_parallel_patches_of_one_resource_take_turns_in_the_process() -> None:
    """An initial cycle sends many PATCHes of one group at once. Writing over the version read,
    they conflicted and re-read; under load one ran out of attempts (412). In one process they
    take turns: no write is refused, no member is lost, every PATCH is answered 204."""
    rows, queue, audit = InterleavingRows(), MemoryQueue(FakeClock()), MemoryAudit()
    inbox = build_inbox({"hr-push": Secret(TOKEN)}, queue, audit, rows={"hr-push": rows}, clock=FakeClock())
    entra = Entra(inbox, rows, queue, audit)
    ids = [entra.call("POST", "/Users", user(f"T{n}", f"Obj-T{n}")).body["id"] for n in range(12)]
    gid = entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Turns"}).body["id"]
    handler = inbox.endpoints.endpoints["hr-push"].handler

    def send(path: str, *operations: dict[str, Any]) -> Any:
        body = json.dumps({"schemas": [PATCH], "Operations": list(operations)}).encode()
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}
        return inbox.endpoints.handle("hr-push", "PATCH", path, {}, headers, body, "https://x/v2")

    async def together() -> list[int]:
        adds = [send(f"/Groups/{gid}", {"op": "Add", "path": "members", "value": [{"value": i}]}) for i in ids]
        renames = [send(f"/Users/{ids[0]}", {"op": "Replace", "path": "title", "value": f"T{n}"}) for n in range(4)]
        return [r.status for r in await asyncio.gather(*adds, *renames)]

    statuses = asyncio.run(together())
    assert statuses == [204] * 16  # before, 4 of the 12 group PATCHes ran out of attempts: 412
    assert rows.refused == 0, "parallel PATCHes of one resource conflicted within the process"
    assert sorted(m["value"] for m in entra.call("GET", f"/Groups/{gid}").body["members"]) == sorted(ids)
    assert len(handler.turns) == 0  # the locks go with the requests
    missing = asyncio.run(
        send(
            "/Groups/00000000-0000-4000-8000-000000000000",
            {"op": "Add", "path": "members", "value": [{"value": ids[0]}]},
        )
    )
    assert missing.status == 404 and len(handler.turns) == 0  # a PATCH that fails gives its turn back too


def test_a_patch_naming_members_touches_only_their_rows_whatever_the_group_size(entra: Entra) -> None:
    ids = [entra.call("POST", "/Users", user(f"M{n}", f"Obj-M{n}")).body["id"] for n in range(41)]
    gid = entra.call(
        "POST", "/Groups", {"schemas": [GROUP], "displayName": "Big", "members": [{"value": i} for i in ids[:40]]}
    ).body["id"]
    before = entra.call("GET", f"/Groups/{gid}").body["meta"]["version"]
    entra.enqueued()
    commits = entra.rows.commits
    with scans(entra) as scanned:
        reply = entra.patch(
            f"/Groups/{gid}",
            {"op": "Add", "path": "members", "value": [{"value": ids[40]}]},
            {"op": "Remove", "path": f'members[value eq "{ids[0]}"]'},
            {"op": "Remove", "path": "members", "value": [{"value": ids[1]}]},
        )
    assert reply.status == 204 and reply.body is None
    assert not [p for p in scanned if p.startswith("member|")], "the group's member list was read"
    assert entra.rows.commits == commits + 1  # the group's new version and three row pairs, at once
    after = entra.call("GET", f"/Groups/{gid}").body
    assert sorted(m["value"] for m in after["members"]) == sorted(ids[2:41])
    assert after["meta"]["version"] != before and reply.headers["ETag"] == after["meta"]["version"]
    assert {m["type"] for m in after["members"]} == {"User"}  # Entra sends no type: the store knows it
    assert sorted(entra.enqueued()) == sorted(("user", i, "push", "hr-push") for i in (ids[0], ids[1], ids[40]))
    (item,) = entra.items  # one message for the three: the group's, naming them
    assert (item.kind, item.id, item.users) == ("group", gid, tuple(sorted((ids[0], ids[1], ids[40]))))
    # The same PATCH again changes nothing: no write, the same version; its member is enqueued again
    # (a retry whose first answer was lost: the change may be stored and not queued).
    again = entra.patch(f"/Groups/{gid}", {"op": "Add", "path": "members", "value": [{"value": ids[40]}]})
    assert again.status == 204 and again.headers["ETag"] == after["meta"]["version"]
    assert entra.rows.commits == commits + 1 and entra.enqueued() == [("user", ids[40], "push", "hr-push")]


def test_a_lookup_by_externalid_is_read_by_key_not_by_a_scan(entra: Entra) -> None:
    """Entra matches users on externalId (its objectId). A RowKey range per lookup walks the whole
    table in Azurite: 16 ms at 80,000 rows, where a read by key takes 3."""
    uid = entra.call("POST", "/Users", user("Eve", "Obj-E")).body["id"]
    with scans(entra) as scanned:
        found = entra.call("GET", "/Users", query={"filter": 'externalId eq "Obj-E"'}).body
        missing = entra.call("GET", "/Users", query={"filter": 'externalId eq "Obj-none"'}).body
    assert [r["id"] for r in found["Resources"]] == [uid] and missing["totalResults"] == 0
    assert scanned == []


def test_an_initial_cycle_patch_of_fifty_members_reads_no_member_list(entra: Entra) -> None:
    """An initial push adds members 50 to a PATCH. With a scan of the group's rows past 32 named
    members, each such PATCH of a 10,000-member group read all 10,000 rows: the full benchmark's
    PATCHes slowed to one every 7 s. Up to POINT_READS named members are read one by one."""
    ids = [entra.call("POST", "/Users", user(f"F{n}", f"Obj-F{n}")).body["id"] for n in range(55)]
    gid = entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Staff"}).body["id"]
    entra.patch(f"/Groups/{gid}", {"op": "Add", "path": "members", "value": [{"value": i} for i in ids[:5]]})
    with scans(entra) as scanned:
        reply = entra.patch(
            f"/Groups/{gid}", {"op": "Add", "path": "members", "value": [{"value": i} for i in ids[5:]]}
        )
    assert reply.status == 204
    assert not [p for p in scanned if p.startswith("member|")], "the group's member list was read"
    members = entra.call("GET", f"/Groups/{gid}").body["members"]
    assert sorted(m["value"] for m in members) == sorted(ids)


def test_members_named_by_a_patch_apply_in_order_and_a_body_asked_for_is_the_whole_group(entra: Entra) -> None:
    ids = [entra.call("POST", "/Users", user(f"O{n}", f"Obj-O{n}")).body["id"] for n in range(3)]
    gid = entra.call(
        "POST", "/Groups", {"schemas": [GROUP], "displayName": "Order", "members": [{"value": ids[0]}]}
    ).body["id"]
    entra.patch(
        f"/Groups/{gid}",
        {"op": "Add", "path": "members", "value": [{"value": ids[1]}, {"value": ids[2]}]},
        {"op": "Remove", "path": f'members[value eq "{ids[1]}"]'},
        {"op": "Remove", "path": "members", "value": [{"value": ids[0]}]},
        {"op": "Add", "path": "members", "value": [{"value": ids[0]}]},
    )
    assert sorted(m["value"] for m in entra.call("GET", f"/Groups/{gid}").body["members"]) == sorted([ids[0], ids[2]])
    shown = entra.call(
        "PATCH",
        f"/Groups/{gid}",
        {"schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": ids[1]}]}]},
        query={"attributes": "members"},
    )
    assert shown.status == 200
    assert sorted(m["value"] for m in shown.body["members"]) == sorted(ids)
    cleared = entra.patch(f"/Groups/{gid}", {"op": "Remove", "path": "members"})
    assert cleared.status == 204 and "members" not in entra.call("GET", f"/Groups/{gid}").body
    refused = entra.patch(f"/Groups/{gid}", {"op": "Add", "path": "members", "value": [{"value": "not-an-id"}]})
    assert scim_type(refused) == (400, "invalidValue")


# -- errors and caps ---------------------------------------------------------------------------------


def test_bad_input_gets_rfc_errors_with_their_scim_type(entra: Entra) -> None:
    uid = entra.call("POST", "/Users", user("Fay", "Obj-F")).body["id"]
    assert scim_type(entra.call("GET", "/Users", query={"filter": "userName eq"})) == (400, "invalidFilter")
    assert scim_type(entra.call("GET", "/Users", query={"filter": "x" * (MAX_FILTER_CHARS + 1)})) == (
        400,
        "invalidFilter",
    )
    assert scim_type(entra.call("POST", "/Users", b'{"schemas": [')) == (400, "invalidSyntax")
    assert scim_type(entra.call("POST", "/Users", {"schemas": [USER], "userName": "x", "active": "maybe"}))[1] in (
        "invalidValue", "invalidSyntax",
    )  # fmt: skip
    assert scim_type(entra.patch(f"/Users/{uid}", {"op": "replace", "path": "id", "value": "other"})) == (
        400,
        "mutability",
    )
    assert scim_type(entra.patch(f"/Users/{uid}", {"op": "jump", "path": "title", "value": "x"})) == (
        400,
        "invalidValue",
    )
    assert scim_type(entra.call("GET", "/Users/0f5c1c2e-aaaa-4bbb-8ccc-999999999999"))[0] == 404
    big = {"schemas": [USER], "userName": "big@contoso.example", "displayName": "x" * MAX_BODY_BYTES}
    assert entra.call("POST", "/Users", big).status == 413
    assert entra.call("GET", "/Users").body["totalResults"] == 1  # nothing of the refused ones stored
    assert {r.status for r in entra.sent} < set(range(200, 500))


def test_a_filter_that_would_walk_too_many_users_is_too_many(entra: Entra, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbox_storage, "MAX_SCAN", 2)
    for n in range(3):
        entra.call("POST", "/Users", user(f"W{n}", f"Obj-W{n}"))
    assert scim_type(entra.call("GET", "/Users", query={"filter": 'title eq "x"'})) == (400, "tooMany")
    assert entra.call("GET", "/Users", query={"filter": 'userName eq "w1@contoso.example"'}).body["totalResults"] == 1


def test_paging_by_start_index_and_count_and_the_count_is_capped(entra: Entra) -> None:
    ids = sorted(entra.call("POST", "/Users", user(f"Q{n}", f"Obj-Q{n}")).body["id"] for n in range(5))
    page = entra.call("GET", "/Users", query={"startIndex": "2", "count": "2"}).body
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (5, 2, 2)
    assert [r["id"] for r in page["Resources"]] == ids[1:3]
    capped = entra.call("GET", "/Users", query={"count": str(MAX_PAGE * 10)}).body
    assert capped["itemsPerPage"] == 5  # fewer than the cap here; the cap itself is announced
    config = entra.call("GET", "/ServiceProviderConfig").body
    assert config["filter"]["maxResults"] == MAX_PAGE and config["bulk"]["supported"] is False


def test_a_change_that_cannot_be_enqueued_answers_503_and_the_retry_enqueues_it(entra: Entra) -> None:
    uid = entra.call("POST", "/Users", user("Gil", "Obj-G")).body["id"]
    entra.enqueued()
    sent = entra.queue.send

    async def broken(items: Any) -> int:
        raise ConnectionError("queue down")

    entra.queue.send = broken  # type: ignore[method-assign]
    disable = {"op": "Replace", "path": "active", "value": "False"}
    assert entra.patch(f"/Users/{uid}", disable).status == 503
    entra.queue.send = sent  # type: ignore[method-assign]
    assert entra.patch(f"/Users/{uid}", disable).status in (200, 204)  # Entra's retry: nothing changes ...
    assert entra.enqueued() == [("user", uid, "push", "hr-push")]  # ... and the user is enqueued


def test_a_membership_change_that_cannot_be_enqueued_answers_503_and_the_retry_enqueues_its_members(
    entra: Entra,
) -> None:
    ids = [entra.call("POST", "/Users", user(f"R{n}", f"Obj-R{n}")).body["id"] for n in range(3)]
    gid = entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Retried"}).body["id"]
    entra.enqueued()
    sent = entra.queue.send

    async def broken(items: Any) -> int:
        raise ConnectionError("queue down")

    add = {"op": "Add", "path": "members", "value": [{"value": i} for i in ids]}
    entra.queue.send = broken  # type: ignore[method-assign]
    assert entra.patch(f"/Groups/{gid}", add).status == 503  # stored, not queued
    entra.queue.send = sent  # type: ignore[method-assign]
    assert entra.patch(f"/Groups/{gid}", add).status in (200, 204)  # Entra's retry: nothing changes ...
    assert sorted(entra.enqueued()) == sorted(("user", i, "push", "hr-push") for i in ids)  # ... all queued


def test_a_big_membership_change_is_queued_in_items_of_a_few_users_each(entra: Entra) -> None:
    """An initial push adds members 50 to a PATCH; one lane message per member put 22,000 on the
    lane within six minutes of a 10,000-user push, and Azurite drained them at 3-5 a second."""
    ids = [entra.call("POST", "/Users", user(f"C{n}", f"Obj-C{n}")).body["id"] for n in range(50)]
    gid = entra.call("POST", "/Groups", {"schemas": [GROUP], "displayName": "Chunked"}).body["id"]
    entra.enqueued()
    reply = entra.patch(f"/Groups/{gid}", {"op": "Add", "path": "members", "value": [{"value": i} for i in ids]})
    assert reply.status in (200, 204)
    assert sorted(entra.enqueued()) == sorted(("user", i, "push", "hr-push") for i in ids)  # each once
    assert [len(i.users) for i in entra.items] == [MAX_ITEM_USERS, MAX_ITEM_USERS, 10]
    assert {(i.kind, i.id, i.source, i.identity_source, i.in_lane) for i in entra.items} == {
        ("group", gid, "push", "hr-push", True)
    }
    for item in entra.items:
        assert WorkItem.from_json(item.to_json()) == item  # as the queue carries it


def test_a_storage_failure_is_a_503_never_a_500(entra: Entra) -> None:
    class Down(MemoryRows):
        async def get(self, key: str) -> Any:
            raise ConnectionError("storage down")

    entra.inbox.endpoints.endpoints["hr-push"].storage.rows = Down()
    reply = entra.call("GET", "/Users/0f5c1c2e-aaaa-4bbb-8ccc-999999999999")
    assert reply.status == 503 and reply.headers["Retry-After"]
