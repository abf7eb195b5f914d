"""The SCIM application: scim2-server behind the sandbox's auth, route names, log, limits, faults
and profiles, driven with raw HTTP the way a SCIM client talks to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from scim2_models import NotFoundException, UniquenessException

from sandbox.scim import BOTH, CURSOR, ENTRA, FULL, INDEX, ScimApp, filter_problem
from sandbox.server import FaultRule, RateLimit

TOKEN = "test-scim-token"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SCIM_JSON = "application/scim+json"


@pytest.fixture
def app() -> Iterator[ScimApp]:
    emulator = ScimApp(token=TOKEN)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def client(app: ScimApp) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": SCIM_JSON}
    with httpx.Client(base_url=app.base_url, headers=headers, timeout=10) as http:
        yield http


def _user(name: str, **attrs: Any) -> dict[str, Any]:
    return {"schemas": [USER], "userName": name, **attrs}


def _patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def _error(response: httpx.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == SCIM_JSON
    body: dict[str, Any] = response.json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type
    assert body["detail"]
    return body


def _names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(r["userName"] for r in response.json().get("Resources", []))


# -- authentication -----------------------------------------------------------------------------


def test_requests_without_the_token_get_a_scim_401(app: ScimApp) -> None:
    with httpx.Client(base_url=app.base_url, timeout=10) as anonymous:
        missing = anonymous.get("/Users")
        _error(missing, 401)
        assert missing.headers["www-authenticate"] == 'Bearer realm="SCIM"'
        _error(anonymous.get("/Users", headers={"Authorization": "Bearer not-the-token"}), 401)
        _error(anonymous.get("/Users", headers={"Authorization": f"Basic {TOKEN}"}), 401)
        _error(anonymous.post("/Users", json=_user("mallory")), 401)
        # RFC 7643 §5: the configuration (and its authentication schemes) is readable without it
        assert anonymous.get("/ServiceProviderConfig").status_code == 200
        _error(anonymous.get("/Schemas"), 401)
    assert app.users() == []
    assert app.log.counts() == {"scim.users.list": 3, "scim.users.create": 1, "scim.discovery": 2}


# -- discovery ----------------------------------------------------------------------------------


def test_the_full_profile_announces_every_capability(app: ScimApp, client: httpx.Client) -> None:
    config = client.get("/ServiceProviderConfig")
    assert config.headers["content-type"] == SCIM_JSON
    body = config.json()
    assert {k: body[k]["supported"] for k in ("patch", "bulk", "filter", "sort", "etag", "changePassword")} == {
        "patch": True,
        "bulk": True,
        "filter": True,
        "sort": True,
        "etag": True,
        "changePassword": True,
    }
    assert [s["type"] for s in body["authenticationSchemes"]] == ["oauthbearertoken"]
    schemas = {s["id"] for s in client.get("/Schemas").json()["Resources"]}
    assert {USER, GROUP, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"} <= schemas
    types = client.get("/ResourceTypes").json()["Resources"]
    assert {(t["name"], t["endpoint"]) for t in types} == {("User", "/Users"), ("Group", "/Groups")}
    assert client.get("/ResourceTypes/User").json()["schema"] == USER
    assert app.log.counts() == {"scim.discovery": 4}


def test_the_entra_profile_announces_patch_and_filter_only(app: ScimApp, client: httpx.Client) -> None:
    app.set_profile(ENTRA)
    body = client.get("/ServiceProviderConfig").json()
    assert {k: body[k]["supported"] for k in ("patch", "bulk", "filter", "sort", "etag", "changePassword")} == {
        "patch": True,
        "bulk": False,
        "filter": True,
        "sort": False,
        "etag": False,
        "changePassword": False,
    }
    # the flags are what scim2-server then does: sorting is refused
    _error(client.get("/Users", params={"sortBy": "userName"}), 501)


# -- users --------------------------------------------------------------------------------------


def test_a_user_is_created_read_found_patched_replaced_and_deleted(app: ScimApp, client: httpx.Client) -> None:
    created = client.post("/Users", json=_user("bjensen", externalId="entra-1", active=True, displayName="Babs"))
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == SCIM_JSON
    user = created.json()
    assert created.headers["location"] == f"{app.base_url}/Users/{user['id']}" == user["meta"]["location"]
    assert client.get(f"/Users/{user['id']}").json()["userName"] == "bjensen"

    found = client.get("/Users", params={"filter": 'externalId eq "entra-1"'}).json()
    assert (found["totalResults"], found["Resources"][0]["id"]) == (1, user["id"])
    assert client.get("/Users", params={"filter": 'externalId eq "ENTRA-1"'}).json()["totalResults"] == 0  # caseExact
    assert _names(client.get("/Users", params={"filter": 'userName eq "BJENSEN"'})) == ["bjensen"]  # not caseExact

    patched = client.patch(
        f"/Users/{user['id']}",
        json=_patch(
            {"op": "replace", "value": {"active": False, "name": {"givenName": "Barbara"}}},  # no path: an object
            {"op": "add", "path": "title", "value": "Tour Guide"},
        ),
    )
    assert patched.status_code == 204  # scim2-server's answer when no attributes are asked for
    after_patch = client.get(f"/Users/{user['id']}").json()
    assert (after_patch["active"], after_patch["name"], after_patch["title"]) == (
        False,
        {"givenName": "Barbara"},
        "Tour Guide",
    )
    with_body = client.patch(
        f"/Users/{user['id']}", params={"attributes": "title"}, json=_patch({"op": "remove", "path": "title"})
    )
    assert with_body.status_code == 200 and "title" not in with_body.json()

    replaced = client.put(f"/Users/{user['id']}", json=_user("bjensen", externalId="entra-1", displayName="B. Jensen"))
    assert replaced.status_code == 200, replaced.text
    assert "active" not in replaced.json() and replaced.json()["displayName"] == "B. Jensen"  # PUT replaces all

    assert client.delete(f"/Users/{user['id']}").status_code == 204
    _error(client.get(f"/Users/{user['id']}"), 404)
    _error(client.delete(f"/Users/{user['id']}"), 404)
    assert app.users() == []


def test_a_second_user_with_the_same_username_answers_409_uniqueness(app: ScimApp, client: httpx.Client) -> None:
    first = app.add_user("alice@example.com", externalId="a-1")
    _error(client.post("/Users", json=_user("alice@example.com")), 409, "uniqueness")
    _error(client.post("/Users", json=_user("ALICE@example.com", externalId="a-2")), 409, "uniqueness")
    with pytest.raises(UniquenessException):
        app.add_user("Alice@Example.com")
    other = client.post("/Users", json=_user("bob@example.com")).json()
    rename = client.patch(
        f"/Users/{other['id']}", json=_patch({"op": "replace", "path": "userName", "value": "alice@example.com"})
    )
    _error(rename, 409, "uniqueness")
    assert [u["id"] for u in app.users() if u["userName"] == "alice@example.com"] == [first["id"]]


def test_lists_page_by_start_index_and_count(app: ScimApp, client: httpx.Client) -> None:
    app.seed_users(7)
    page = client.get("/Users", params={"startIndex": 3, "count": 2, "sortBy": "userName"}).json()
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (7, 3, 2)
    assert [u["userName"] for u in page["Resources"]] == ["user00002@example.com", "user00003@example.com"]
    beyond = client.get("/Users", params={"startIndex": 8}).json()
    assert (beyond["totalResults"], beyond["itemsPerPage"], beyond["Resources"]) == (7, 0, [])


def _walk(client: httpx.Client, first: dict[str, Any], limit: int = 20) -> list[dict[str, Any]]:
    """The pages of a cursor listing, following nextCursor (at most ``limit`` pages)."""
    pages = [client.get("/Users", params=first).json()]
    while pages[-1].get("nextCursor") and len(pages) < limit:
        pages.append(client.get("/Users", params={"cursor": pages[-1]["nextCursor"], "count": first["count"]}).json())
    return pages


def test_cursor_paging_is_announced_and_served_and_a_cursor_only_server_refuses_start_index(
    client: httpx.Client,
) -> None:
    app = ScimApp(token=TOKEN, paging=CURSOR, max_page_size=4).start()
    try:
        app.seed_users(10)
        with httpx.Client(base_url=app.base_url, headers=client.headers, timeout=10) as http:
            pagination = http.get("/ServiceProviderConfig").json()["pagination"]
            assert (pagination["cursor"], pagination["index"], pagination["maxPageSize"]) == (True, False, 4)
            assert pagination["defaultPaginationMethod"] == "cursor"
            pages = _walk(http, {"cursor": "", "count": 10})
            assert [len(p["Resources"]) for p in pages] == [4, 4, 2] and "nextCursor" not in pages[-1]
            assert len({u["id"] for p in pages for u in p["Resources"]}) == 10
            _error(http.get("/Users", params={"startIndex": 1, "count": 4}), 501)
        app.set_profile(FULL, paging=BOTH)  # the same users, either way
        with httpx.Client(base_url=app.base_url, headers=client.headers, timeout=10) as http:
            assert http.get("/Users", params={"startIndex": 9, "count": 4}).json()["itemsPerPage"] == 2
            assert len(_walk(http, {"cursor": "", "count": 4})) == 3
    finally:
        app.stop()


def test_a_broken_listing_repeats_a_page_or_answers_short_and_loses_the_rest(
    app: ScimApp, client: httpx.Client
) -> None:
    app.seed_users(12)
    app.break_listing("repeat", page=2)
    first, second = (client.get("/Users", params={"startIndex": i, "count": 4}).json() for i in (1, 5))
    assert second == first  # the page before, again
    assert client.get("/Users", params={"filter": 'userName eq "user00005@example.com"'}).json()["totalResults"] == 1
    app.break_listing("short", page=2)
    pages = [client.get("/Users", params={"startIndex": i, "count": 4}).json() for i in (1, 5, 7, 11)]
    assert [len(p["Resources"]) for p in pages] == [4, 2, 2, 0] and {p["totalResults"] for p in pages} == {12}
    listed = {u["userName"] for p in pages for u in p["Resources"]}
    assert len(listed) == 8  # four users are never listed, though counted
    app.break_listing(None)
    assert len(client.get("/Users", params={"startIndex": 1, "count": 20}).json()["Resources"]) == 12


def test_bodies_are_counted_by_their_media_type(app: ScimApp, client: httpx.Client) -> None:
    client.post("/Users", json=_user("typed@example.com"))
    client.post("/Users", content=b'{"schemas": ["%s"], "userName": "plain@example.com"}' % USER.encode(),
                headers={"Content-Type": "application/json"})  # fmt: skip
    client.get("/Users")
    assert app.media_types() == {("scim.users.create", SCIM_JSON): 1, ("scim.users.create", "application/json"): 1}
    app.reset()
    assert app.media_types() == {}


# -- groups -------------------------------------------------------------------------------------


def test_groups_are_created_empty_and_patched_with_members(app: ScimApp, client: httpx.Client) -> None:
    ids = [app.add_user(f"u{i}@example.com")["id"] for i in range(3)]
    created = client.post("/Groups", json={"schemas": [GROUP], "displayName": "Engineering", "members": []})
    assert created.status_code == 201, created.text
    group_id = created.json()["id"]
    assert app.members_of(group_id) == set()

    add = _patch({"op": "add", "path": "members", "value": [{"value": i} for i in ids]})
    assert client.patch(f"/Groups/{group_id}", json=add).status_code == 204
    assert app.members_of(group_id) == set(ids)
    assert client.patch(f"/Groups/{group_id}", json=add).status_code == 204  # adding again changes nothing
    assert len(client.get(f"/Groups/{group_id}").json()["members"]) == 3

    remove = _patch({"op": "remove", "path": f'members[value eq "{ids[0]}"]'})
    assert client.patch(f"/Groups/{group_id}", json=remove).status_code == 204
    assert app.members_of(group_id) == set(ids[1:])
    # a remove carrying a value (Entra's form without aadOptscim062020) is refused by the strict default
    with_value = _patch({"op": "Remove", "path": "members", "value": [{"value": ids[1]}]})
    _error(client.patch(f"/Groups/{group_id}", json=with_value), 400, "invalidValue")

    rename = _patch({"op": "replace", "value": {"displayName": "Platform"}})
    assert client.patch(f"/Groups/{group_id}", json=rename).status_code == 204
    assert app.group_by_name("platform") is not None and app.group_by_name("Engineering") is None
    listed = client.get("/Groups", params={"filter": 'displayName eq "Platform"', "excludedAttributes": "members"})
    assert [("members" in g, g["id"]) for g in listed.json()["Resources"]] == [(False, group_id)]

    assert client.delete(f"/Groups/{group_id}").status_code == 204
    assert app.groups() == []
    with pytest.raises(NotFoundException):
        app.members_of(group_id)


# -- ETags --------------------------------------------------------------------------------------


def test_the_full_profile_versions_resources_and_refuses_a_stale_if_match(client: httpx.Client) -> None:
    created = client.post("/Users", json=_user("carol"))
    etag = created.headers["etag"]
    assert etag == created.json()["meta"]["version"]
    user_id = created.json()["id"]
    change = _patch({"op": "replace", "path": "displayName", "value": "Carol"})
    assert client.patch(f"/Users/{user_id}", json=change, headers={"If-Match": etag}).status_code == 204
    stale = client.patch(f"/Users/{user_id}", json=change, headers={"If-Match": etag})
    _error(stale, 412)
    current = client.get(f"/Users/{user_id}").headers["etag"]
    assert current != etag
    assert client.get(f"/Users/{user_id}", headers={"If-None-Match": current}).status_code == 304


def test_the_entra_profile_has_no_etags_and_ignores_conditional_headers(app: ScimApp, client: httpx.Client) -> None:
    app.set_profile(ENTRA)
    created = client.post("/Users", json=_user("dave"))
    assert created.status_code == 201
    assert "etag" not in created.headers and "version" not in created.json()["meta"]
    user_id = created.json()["id"]
    read = client.get(f"/Users/{user_id}")
    assert "etag" not in read.headers and "version" not in read.json()["meta"]
    change = _patch({"op": "replace", "path": "displayName", "value": "Dave"})
    assert client.patch(f"/Users/{user_id}", json=change, headers={"If-Match": 'W/"1"'}).status_code == 204
    assert client.get(f"/Users/{user_id}").json()["displayName"] == "Dave"


# -- the entra profile's refusals ---------------------------------------------------------------


def test_the_entra_profile_refuses_put_and_bulk(app: ScimApp, client: httpx.Client) -> None:
    user = app.add_user("erin", displayName="Erin")
    bulk = {
        "schemas": [BULK],
        "Operations": [{"method": "POST", "path": "/Users", "bulkId": "b1", "data": _user("bulk1")}],
    }
    assert client.post("/Bulk", json=bulk).json()["Operations"][0]["status"] == "201"  # the full profile has bulk

    app.set_profile(ENTRA)
    put = client.put(f"/Users/{user['id']}", json=_user("erin", displayName="Changed"))
    assert "PATCH" in _error(put, 405)["detail"]
    assert put.headers["allow"] == "DELETE, GET, PATCH"
    group = app.add_group("Sales")
    _error(client.put(f"/Groups/{group['id']}", json={"schemas": [GROUP], "displayName": "X"}), 405)
    erin = app.user_by_username("erin")
    assert erin is not None and erin["displayName"] == "Erin"
    _error(client.post("/Bulk", json=bulk), 501)
    assert app.user_by_username("bulk1") is not None and len(app.users()) == 2
    change = _patch({"op": "replace", "path": "displayName", "value": "Patched"})
    assert client.patch(f"/Users/{user['id']}", json=change).status_code == 204


@pytest.mark.parametrize(
    "expression",
    [
        'userName co "a"',
        'userName sw "a"',
        'userName ne "a"',
        "title pr",
        'userName eq "a" or userName eq "b"',
        'not (userName eq "a")',
        'emails[type eq "work"]',
        'meta.lastModified gt "2020-01-01T00:00:00Z"',
    ],
)
def test_the_entra_profile_filters_with_eq_and_and_only(app: ScimApp, client: httpx.Client, expression: str) -> None:
    app.add_user("a", title="x")
    assert client.get("/Users", params={"filter": expression}).status_code == 200  # the full profile takes it
    app.set_profile(ENTRA)
    _error(client.get("/Users", params={"filter": expression}), 400, "invalidFilter")
    _error(client.post("/Users/.search", json={"filter": expression}), 400, "invalidFilter")


def test_the_entra_profile_takes_eq_joined_by_and(app: ScimApp, client: httpx.Client) -> None:
    app.set_profile(ENTRA)
    app.add_user("frank", externalId="f-1")
    app.add_user("grace", externalId="g-1")
    assert _names(client.get("/Users", params={"filter": 'userName eq "frank" and externalId eq "f-1"'})) == ["frank"]
    assert _names(client.get("/Users", params={"filter": 'userName eq "frank" and externalId eq "g-1"'})) == []
    assert _names(client.post("/Users/.search", json={"filter": 'externalId eq "g-1"'})) == ["grace"]
    _error(client.get("/Users", params={"filter": "userName eq"}), 400, "invalidFilter")  # scim2-server's own
    repeated = client.get("/Users", params=[("filter", 'userName eq "frank"'), ("filter", 'userName co "a"')])
    _error(repeated, 400, "invalidFilter")  # the filter checked is the one scim2-server reads


def test_a_server_can_refuse_the_externalid_filter(client: httpx.Client) -> None:
    with ScimApp(token=TOKEN, externalid_filter=False) as refusing:
        assert isinstance(refusing, ScimApp)
        refusing.add_user("heidi", externalId="h-1")
        base = refusing.base_url
        _error(client.get(f"{base}/Users", params={"filter": 'externalId eq "h-1"'}), 400, "invalidFilter")
        spelled = 'urn:ietf:params:scim:schemas:core:2.0:User:externalId eq "h-1" and userName eq "heidi"'
        _error(client.get(f"{base}/Users", params={"filter": spelled}), 400, "invalidFilter")
        _error(client.post(f"{base}/Users/.search", json={"filter": 'ExternalId eq "h-1"'}), 400, "invalidFilter")
        assert _names(client.get(f"{base}/Users", params={"filter": 'userName eq "heidi"'})) == ["heidi"]
        assert client.get(f"{base}/ServiceProviderConfig").json()["filter"]["supported"] is True
        refusing.set_profile(ENTRA)  # the option survives a profile switch
        _error(client.get(f"{base}/Users", params={"filter": 'externalId eq "h-1"'}), 400, "invalidFilter")


def test_filter_problem_reads_the_parsed_filter_not_the_text() -> None:
    assert filter_problem('userName eq "externalId co x"', profile=ENTRA, externalid_filter=False) is None
    assert filter_problem('userName eq "a" and externalId eq "b"', profile=FULL, externalid_filter=False)
    assert filter_problem('userName eq "a or b"', profile=ENTRA, externalid_filter=True) is None
    assert filter_problem('userName eq "a" or', profile=ENTRA, externalid_filter=True) is None  # syntax: scim2-server's


# -- filter escapes -----------------------------------------------------------------------------


def test_an_escaped_filter_value_matches_only_itself(app: ScimApp, client: httpx.Client) -> None:
    tricky = 'x" or userName pr or "'
    backslash = "back\\slash"
    for name in (tricky, "x", "other", backslash, "back"):
        app.add_user(name)
    # RFC 7644 §3.4.2.2 filter strings are JSON strings: \" is a quote, \\ a backslash
    assert _names(client.get("/Users", params={"filter": r'userName eq "x\" or userName pr or \""'})) == [tricky]
    assert _names(client.get("/Users", params={"filter": r'userName eq "x\u0022 or userName pr or \u0022"'})) == [
        tricky
    ]
    assert _names(client.get("/Users", params={"filter": r'userName eq "back\\slash"'})) == [backslash]
    # the same text unescaped does not parse, so it cannot widen into "or userName pr"
    _error(client.get("/Users", params={"filter": 'userName eq "x" or userName pr or ""'}), 400, "invalidFilter")
    _error(client.get("/Users", params={"filter": r'userName eq "x\q"'}), 400, "invalidFilter")
    assert app.user_by_username(tricky) is not None and app.user_by_username(backslash) is not None
    app.set_profile(ENTRA)
    assert _names(client.get("/Users", params={"filter": r'userName eq "x\" or userName pr or \""'})) == [tricky]


# -- the sandbox ground: limits, faults, the request log ----------------------------------------


def test_a_rate_limit_answers_429_with_retry_after_and_a_scim_body(app: ScimApp, client: httpx.Client) -> None:
    app.limits.configure({"scim.users.*": RateLimit(burst=2, per_second=0.01)})
    assert client.post("/Users", json=_user("ivan")).status_code == 201
    assert client.get("/Users").status_code == 200
    limited = client.post("/Users", json=_user("judy"))
    _error(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert client.get("/Groups").status_code == 200  # another route, another (absent) bucket
    assert [u["userName"] for u in app.users()] == ["ivan"]


def test_a_fault_rule_answers_a_scim_503_and_changes_nothing(app: ScimApp, client: httpx.Client) -> None:
    app.faults.configure([FaultRule("scim.users.create", status=503, count=1)])
    _error(client.post("/Users", json=_user("kim")), 503)
    assert app.users() == []
    assert client.post("/Users", json=_user("kim")).status_code == 201
    assert app.log.counts() == {"scim.users.create": 2}


def test_the_request_log_counts_routes_and_flags_writes(app: ScimApp, client: httpx.Client) -> None:
    user_id = client.post("/Users", json=_user("leo")).json()["id"]
    group_id = client.post("/Groups", json={"schemas": [GROUP], "displayName": "G"}).json()["id"]
    client.get(f"/Users/{user_id}")
    client.get("/Users", params={"filter": 'userName eq "leo"'})
    client.post("/Users/.search", json={"filter": 'userName eq "leo"'})
    client.patch(f"/Groups/{group_id}", json=_patch({"op": "add", "path": "members", "value": [{"value": user_id}]}))
    client.put(f"/Users/{user_id}", json=_user("leo"))
    client.get("/Groups")
    client.delete(f"/Groups/{group_id}")
    client.post("/Bulk", json={"schemas": [BULK], "Operations": []})
    client.get("/Me")
    assert app.log.counts() == {
        "scim.users.create": 1,
        "scim.groups.create": 1,
        "scim.users.get": 1,
        "scim.users.list": 2,
        "scim.groups.patch": 1,
        "scim.users.replace": 1,
        "scim.groups.list": 1,
        "scim.groups.delete": 1,
        "scim.bulk": 1,
        "<unrouted>": 1,
    }
    assert app.log.writes == 6
    searches = [e for e in app.log.entries() if e.method == "POST" and e.route == "scim.users.list"]
    assert [(e.write, e.status) for e in searches] == [(False, 200)]
    # helpers go straight to scim2-server and are not API calls
    app.add_user("not-logged")
    app.users()
    assert app.log.total == 11


# -- helpers and control ------------------------------------------------------------------------


def test_seeded_users_are_valid_resources_found_like_any_other(app: ScimApp, client: httpx.Client) -> None:
    ids = app.seed_users(25, external_id="entra-{i}", start=100)
    assert len(ids) == len(set(ids)) == 25
    users = app.users()
    assert [u["userName"] for u in users[:2]] == ["user00100@example.com", "user00101@example.com"]
    seeded = client.get(f"/Users/{ids[3]}").json()
    assert (seeded["userName"], seeded["externalId"], seeded["active"]) == ("user00103@example.com", "entra-103", True)
    assert seeded["meta"]["version"] and seeded["meta"]["created"]
    assert app.user_by_username("USER00110@example.com") == client.get(f"/Users/{ids[10]}").json()
    found = client.get("/Users", params={"filter": 'externalId eq "entra-124"'}).json()["Resources"]
    assert [u["id"] for u in found] == [ids[24]]
    # the storage's uniqueness index knows seeded names
    _error(client.post("/Users", json=_user("user00100@example.com")), 409, "uniqueness")
    with pytest.raises(UniquenessException):
        app.seed_users(3, start=124)
    assert len(app.users()) == 25
    assert app.snapshot()["users"] == 25


def test_a_profile_switch_keeps_the_resources_and_reset_restores_the_constructor_profile() -> None:
    with ScimApp(token=TOKEN, profile=ENTRA) as app:
        assert isinstance(app, ScimApp)
        user = app.add_user("mia")
        assert "version" not in user["meta"]
        app.set_profile(FULL)
        assert app.user_by_username("mia") is not None
        assert app.user_by_username("mia")["meta"]["version"]  # type: ignore[index]
        app.reset()
        assert (app.profile, app.users()) == (ENTRA, [])
        with pytest.raises(ValueError, match="unknown SCIM profile"):
            app.set_profile("salesforce")
        assert app.profile == ENTRA


def test_control_endpoints_seed_switch_profile_and_snapshot(app: ScimApp) -> None:
    with httpx.Client(base_url=app.origin, timeout=10) as control:
        spec = {
            "count": 3,
            "users": [{"userName": "nina", "externalId": "n-1"}],
            "groups": [{"displayName": "Ops", "members": ["nina"]}],
        }
        seeded = control.post("/_control/seed", json=spec)
        assert seeded.json() == {
            "profile": FULL, "externalid_filter": True, "paging": INDEX, "users": 4, "groups": 1
        }  # fmt: skip
        group = app.group_by_name("Ops")
        nina = app.user_by_username("nina")
        assert group is not None and nina is not None and app.members_of(group["id"]) == {nina["id"]}
        switched = control.put(
            "/_control/profile", json={"profile": ENTRA, "externalid_filter": False, "paging": CURSOR}
        )
        assert switched.json()["profile"] == ENTRA and app.externalid_filter is False
        assert switched.json()["paging"] == CURSOR
        assert control.post("/_control/reset").status_code == 204
        assert control.get("/_control/snapshot").json() == {
            "profile": FULL,
            "externalid_filter": True,
            "paging": INDEX,
            "users": 0,
            "groups": 0,
        }
    assert app.log.total == 0
