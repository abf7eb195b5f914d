"""The Auth0 emulator driven through auth0-python 6.x, the way the product will use it."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import httpx
import pytest
from auth0.management.client import Auth0
from auth0.management.core.api_error import ApiError

from sandbox import lucene
from sandbox.auth0 import (
    DATABASE_CONNECTION,
    ENTERPRISE_CONNECTION,
    RATE_LIMIT_PRESETS,
    Auth0Emulator,
    rate_limit_preset,
)
from sandbox.server import RateLimit

NO_RETRY: Any = {"max_retries": 0}


def _error(exc: pytest.ExceptionInfo[ApiError]) -> tuple[int | None, dict[str, Any]]:
    body = exc.value.body
    assert isinstance(body, dict)
    return exc.value.status_code, body


def _wait_for_job(client: Auth0, job_id: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.jobs.get(job_id)
        if job.status in ("completed", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def _new_user(client: Auth0, email: str, **extra: Any) -> Any:
    return client.users.create(connection=DATABASE_CONNECTION, email=email, request_options=NO_RETRY, **extra)


# --------------------------------------------------------------------------------------------
# Token endpoint and authentication
# --------------------------------------------------------------------------------------------


def test_client_credentials_token_authorizes_management_calls(emulator: Auth0Emulator) -> None:
    good = {"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"}
    as_json = httpx.post(emulator.origin + "/oauth/token", json={**good, "audience": emulator.base_url + "/"})
    as_form = httpx.post(emulator.origin + "/oauth/token", data=good)
    assert as_json.status_code == 200
    assert as_form.status_code == 200
    token = as_json.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 86400
    assert "read:users" in token["scope"].split()

    client = Auth0(base_url=emulator.base_url, token=token["access_token"], max_retries=0)
    assert [c.name for c in client.connections.list(name=DATABASE_CONNECTION)] == [DATABASE_CONNECTION]

    wrong = httpx.post(emulator.origin + "/oauth/token", json={**good, "client_secret": "nope"})
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "access_denied", "error_description": "Unauthorized"}


def test_management_calls_without_a_valid_token_are_401_in_auth0_shape(emulator: Auth0Emulator) -> None:
    missing = httpx.get(emulator.base_url + "/users/auth0%7Cx")
    assert missing.status_code == 401
    assert missing.json() == {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": "Missing authentication",
        "errorCode": "missing_authentication",
    }
    client = Auth0(base_url=emulator.base_url, token="forged", max_retries=0)
    with pytest.raises(ApiError) as exc:
        client.users.get("auth0|x")
    status, body = _error(exc)
    assert (status, body["message"]) == (401, "Invalid token")


# --------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------


def test_user_lifecycle_create_get_update_delete(client: Auth0, emulator: Auth0Emulator) -> None:
    created = _new_user(
        client,
        "Ada.Lovelace@Example.COM",
        user_id="ada-1",
        given_name="Ada",
        family_name="Lovelace",
        name="Ada Lovelace",
        app_metadata={"entra_oid": "oid-1", "dept": "eng", "flags": {"a": 1}},
        user_metadata={"lang": "en"},
    )
    assert created.user_id == "auth0|ada-1"
    assert created.email == "ada.lovelace@example.com"  # stored lower-case
    assert created.identities is not None
    identity = created.identities[0]
    assert (identity.connection, identity.user_id, identity.provider, identity.is_social) == (
        DATABASE_CONNECTION,
        "ada-1",
        "auth0",
        False,
    )
    assert created.created_at is not None and created.created_at == created.updated_at
    assert created.logins_count == 0

    fetched = client.users.get("auth0|ada-1")
    assert fetched.app_metadata == {"entra_oid": "oid-1", "dept": "eng", "flags": {"a": 1}}

    updated = client.users.update(
        "auth0|ada-1",
        blocked=True,
        app_metadata={"dept": None, "flags": {"b": 2}, "cost_center": "42"},
        request_options=NO_RETRY,
    )
    # merged one level deep: null removes, nested objects are replaced, others stay
    assert updated.app_metadata == {"entra_oid": "oid-1", "flags": {"b": 2}, "cost_center": "42"}
    assert updated.user_metadata == {"lang": "en"}
    assert updated.blocked is True
    assert client.users.get("auth0|ada-1").blocked is True

    renamed = client.users.update("auth0|ada-1", email="ADA@example.com", request_options=NO_RETRY)
    assert renamed.email == "ada@example.com"
    assert client.users.list_users_by_email(email="ada.lovelace@example.com") == []

    only = client.users.get("auth0|ada-1", fields="user_id,email", include_fields=True)
    assert only.user_id == "auth0|ada-1" and only.name is None and only.email == "ada@example.com"

    client.users.delete("auth0|ada-1", request_options=NO_RETRY)
    with pytest.raises(ApiError) as exc:
        client.users.get("auth0|ada-1")
    status, body = _error(exc)
    assert (status, body["errorCode"], body["error"]) == (404, "inexistent_user", "Not Found")
    assert emulator.snapshot()["users"] == 0


def test_duplicate_email_or_user_id_is_409(client: Auth0) -> None:
    _new_user(client, "dup@example.com", user_id="one")
    for email, user_id in (("DUP@example.com", "two"), ("other@example.com", "one")):
        with pytest.raises(ApiError) as exc:
            _new_user(client, email, user_id=user_id)
        status, body = _error(exc)
        assert status == 409
        assert body["message"] == "The user already exists."
        assert body["statusCode"] == 409 and body["error"] == "Conflict"


def test_create_validates_connection_and_properties(client: Auth0, emulator: Auth0Emulator) -> None:
    with pytest.raises(ApiError) as exc:
        client.users.create(connection="nope", email="a@example.com", request_options=NO_RETRY)
    assert _error(exc)[1]["errorCode"] == "inexistent_connection"
    with pytest.raises(ApiError) as exc:
        client.users.create(connection=ENTERPRISE_CONNECTION, email="a@example.com", request_options=NO_RETRY)
    assert _error(exc)[1]["errorCode"] == "operation_not_supported"
    bad = httpx.post(
        emulator.base_url + "/users",
        json={"connection": DATABASE_CONNECTION, "email": "a@example.com", "colour": "red"},
        headers={"Authorization": f"Bearer {emulator.static_token}"},
    )
    assert bad.status_code == 400
    assert "Additional properties not allowed: colour" in bad.json()["message"]


def test_users_by_email_is_exact_and_case_sensitive(client: Auth0) -> None:
    _new_user(client, "Grace.Hopper@Navy.MIL")
    found = client.users.list_users_by_email(email="grace.hopper@navy.mil")
    assert [u.email for u in found] == ["grace.hopper@navy.mil"]
    assert client.users.list_users_by_email(email="Grace.Hopper@Navy.MIL") == []
    assert client.users.list_users_by_email(email="grace.hopper@navy") == []


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------


def _search(client: Auth0, q: str, **kwargs: Any) -> list[str]:
    pager = client.users.list(q=q, search_engine="v3", per_page=100, request_options=NO_RETRY, **kwargs)
    return sorted(u.user_id or "" for u in pager)


def test_search_with_quoted_phrases_and_escaped_reserved_characters(client: Auth0) -> None:
    _new_user(client, "ann+ops@example.com", user_id="ann", name="Ann (Ops): eu/west")
    _new_user(client, "ann@example.com", user_id="ann2", name="Ann Ops")

    assert _search(client, "email:" + lucene.escape("ann+ops@example.com")) == ["auth0|ann"]
    assert _search(client, "email:" + lucene.quote("ANN+OPS@example.com")) == ["auth0|ann"]  # email is case-insensitive
    assert _search(client, "name:" + lucene.quote("Ann (Ops): eu/west")) == ["auth0|ann"]
    assert _search(client, "name:" + lucene.escape("Ann (Ops): eu/west")) == ["auth0|ann"]
    assert _search(client, 'name:"ann ops"') == ["auth0|ann2"]
    assert _search(client, "email:ann*") == ["auth0|ann", "auth0|ann2"]

    # the unescaped forms are syntax errors, answered 400 in Auth0's shape
    for raw in ("name:Ann (Ops): eu/west", "email:ann+ops@example.com/x", 'name:"unterminated'):
        with pytest.raises(ApiError) as exc:
            client.users.list(q=raw, search_engine="v3", request_options=NO_RETRY)
        status, body = _error(exc)
        assert (status, body["errorCode"]) == (400, "invalid_query_string"), raw


def test_search_boolean_operators_and_dotted_fields(client: Auth0, emulator: Auth0Emulator) -> None:
    emulator.add_user({"email": "a@example.com", "user_id": "a", "app_metadata": {"entra_oid": "o-1", "dept": "eng"}})
    emulator.add_user({"email": "b@example.com", "user_id": "b", "app_metadata": {"entra_oid": "o-2", "dept": "ops"}})
    emulator.add_user({"email": "c@example.com", "user_id": "c", "blocked": True})
    emulator.add_user({"connection": ENTERPRISE_CONNECTION, "email": "d@example.com", "user_id": "o-4"})

    assert _search(client, 'app_metadata.entra_oid:"o-2"') == ["auth0|b"]
    assert _search(client, 'app_metadata.dept:"eng" OR app_metadata.dept:"ops"') == ["auth0|a", "auth0|b"]
    assert _search(client, 'app_metadata.dept:eng AND email:"a@example.com"') == ["auth0|a"]
    assert _search(client, 'app_metadata.dept:eng AND email:"b@example.com"') == []
    assert _search(client, "blocked:true") == ["auth0|c"]
    assert _search(client, "_exists_:app_metadata.entra_oid AND NOT app_metadata.dept:ops") == ["auth0|a"]
    assert _search(client, 'identities.connection:"entra"') == ["waad|o-4"]
    assert _search(client, 'email:*example.com -identities.connection:"entra"') == ["auth0|a", "auth0|b", "auth0|c"]
    assert _search(client, "app_metadata.dept:ENG") == []  # metadata is case-sensitive
    assert _search(client, "b@example.com") == ["auth0|b"]  # free text over profile fields


def test_lucene_parser_semantics_and_escape_helper() -> None:
    doc = {
        "email": "x+y@example.com",
        "name": "Ann Lee",
        "logins_count": 7,
        "app_metadata": {"tags": ["a", "b"], "nested": {"k": "v"}},
    }
    cases = {
        "name:ann": True,
        "name:lee": True,
        'name:"ann lee"': True,
        'name:"lee ann"': False,
        "name:an?": True,
        "logins_count:[5 TO 7]": True,
        "logins_count:{5 TO 7}": False,
        "logins_count:[8 TO *]": False,
        "app_metadata.tags:b": True,
        "app_metadata.nested.k:v": True,
        "name:(zed OR lee)": True,
        "name:zed name:ann": True,  # juxtaposition is OR
        "name:ann -name:lee": False,  # a juxtaposed negation excludes
        "NOT name:zed": True,
        "(name:zed || name:ann) && !email:nobody": True,
        "_exists_:app_metadata.missing": False,
        "*:*": True,
    }
    for query, expected in cases.items():
        assert lucene.parse(query).matches(doc) is expected, query

    tricky = 'a+b-c&&d||e!f(g)h{i}j[k]l^m"n~o*p?q:r\\s/t u'
    assert lucene.parse("email:" + lucene.escape(tricky)).matches({"email": tricky})
    assert lucene.parse("email:" + lucene.quote(tricky)).matches({"email": tricky})
    assert not lucene.parse("email:" + lucene.escape(tricky)).matches({"email": tricky + "x"})
    for bad in ("name:", "a:b:c", "(name:x", "name:x~2", "name:/re/", "AND"):
        with pytest.raises(lucene.QuerySyntaxError):
            lucene.parse(bad)


def test_search_reaches_only_the_first_1000_results(client: Auth0, emulator: Auth0Emulator) -> None:
    emulator.seed({"count": 1050, "seed": 7})
    page = client.users.list(q="email:*example.com", search_engine="v3", page=9, per_page=100, include_totals=True)
    assert len(page.items or []) == 100
    assert page.response.total == 1050
    with pytest.raises(ApiError) as exc:
        client.users.list(q="email:*example.com", search_engine="v3", page=10, per_page=100, request_options=NO_RETRY)
    status, body = _error(exc)
    assert (status, body["errorCode"]) == (400, "invalid_paging")
    assert body["message"].startswith("You can only page through the first 1000 records.")

    seen: list[str] = []

    def drain() -> None:
        for user in client.users.list(q="email:*example.com", search_engine="v3", per_page=100):
            seen.append(user.user_id or "")

    with pytest.raises(ApiError) as exc:
        drain()
    assert exc.value.status_code == 400
    assert len(seen) == len(set(seen)) == 1000

    # under the cap the pager ends on the empty page the emulator returns
    emulator.seed({"count": 120, "seed": 7})
    assert len(list(client.users.list(search_engine="v3", per_page=50))) == 120


def test_search_is_eventually_consistent_while_reads_by_id_are_not(emulator: Auth0Emulator, client: Auth0) -> None:
    emulator.set_search_lag(0.5)
    created = _new_user(client, "late@example.com", user_id="late")
    assert _search(client, 'email:"late@example.com"') == []
    assert client.users.get("auth0|late").email == "late@example.com"
    assert [u.user_id for u in client.users.list_users_by_email(email="late@example.com")] == [created.user_id]
    time.sleep(0.6)
    assert _search(client, 'email:"late@example.com"') == ["auth0|late"]

    client.users.update("auth0|late", app_metadata={"entra_oid": "o-9"}, request_options=NO_RETRY)
    assert _search(client, 'app_metadata.entra_oid:"o-9"') == []
    client.users.delete("auth0|late", request_options=NO_RETRY)
    assert _search(client, 'email:"late@example.com"') == ["auth0|late"]  # the index still has it
    assert emulator.flush_search_index() == 2
    assert _search(client, 'email:"late@example.com"') == []


# --------------------------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------------------------


def test_roles_assign_list_and_remove(client: Auth0, emulator: Auth0Emulator) -> None:
    admins = client.roles.create(name="admins", description="Admins")
    readers = client.roles.create(name="readers")
    assert [r.name for r in client.roles.list(name_filter="ADM")] == ["admins"]
    user = _new_user(client, "r@example.com", user_id="r")

    client.users.roles.assign("auth0|r", roles=[admins.id, readers.id])
    assert sorted(r.name or "" for r in client.users.roles.list("auth0|r")) == ["admins", "readers"]
    assert [u.user_id for u in client.roles.users.list(admins.id)] == [user.user_id]

    client.users.roles.delete("auth0|r", roles=[admins.id])
    assert [r.name for r in client.users.roles.list("auth0|r")] == ["readers"]
    assert list(client.roles.users.list(admins.id)) == []

    with pytest.raises(ApiError) as exc:
        client.users.roles.assign("auth0|r", roles=["rol_doesnotexist00"], request_options=NO_RETRY)
    assert _error(exc)[0] == 404
    assert emulator.user_role_names("auth0|r") == ["readers"]

    client.roles.delete(readers.id)
    assert list(client.users.roles.list("auth0|r")) == []
    with pytest.raises(ApiError) as exc:
        client.roles.get(readers.id)
    assert _error(exc)[1]["errorCode"] == "inexistent_role"


# --------------------------------------------------------------------------------------------
# Sessions and refresh tokens
# --------------------------------------------------------------------------------------------


def test_revoking_sessions_and_refresh_tokens_on_enterprise(client: Auth0, emulator: Auth0Emulator) -> None:
    _new_user(client, "s@example.com", user_id="s")
    emulator.add_sessions("auth0|s", 3, refresh_tokens=2)
    client.users.sessions.delete("auth0|s")
    assert emulator.sessions_of("auth0|s") == {"sessions": 0, "refresh_tokens": 2}
    client.users.refresh_token.delete("auth0|s")
    assert emulator.sessions_of("auth0|s") == {"sessions": 0, "refresh_tokens": 0}
    assert emulator.snapshot()["revoked"] == {"sessions": 3, "refresh_tokens": 2}

    with pytest.raises(ApiError) as exc:
        client.users.sessions.delete("auth0|nobody", request_options=NO_RETRY)
    assert _error(exc)[1]["errorCode"] == "inexistent_user"


def test_revocation_is_refused_outside_enterprise_but_blocking_works(client: Auth0, emulator: Auth0Emulator) -> None:
    _new_user(client, "p@example.com", user_id="p")
    emulator.add_sessions("auth0|p", 2, refresh_tokens=1)
    emulator.set_plan("essentials")
    for revoke in (client.users.sessions.delete, client.users.refresh_token.delete):
        with pytest.raises(ApiError) as exc:
            revoke("auth0|p", request_options=NO_RETRY)
        status, body = _error(exc)
        assert (status, body["error"]) == (403, "Forbidden")
    assert emulator.sessions_of("auth0|p") == {"sessions": 2, "refresh_tokens": 1}
    assert client.users.update("auth0|p", blocked=True, request_options=NO_RETRY).blocked is True

    emulator.set_feature("sessions", 404)
    with pytest.raises(ApiError) as exc:
        client.users.sessions.delete("auth0|p", request_options=NO_RETRY)
    assert _error(exc)[0] == 404


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------


def test_export_job_round_trip(client: Auth0, emulator: Auth0Emulator) -> None:
    emulator.seed({"count": 40, "seed": 3})
    emulator.add_user({"connection": ENTERPRISE_CONNECTION, "email": "e@example.com", "user_id": "o-e"})
    conn = emulator.connection(DATABASE_CONNECTION)
    created = client.jobs.users_exports.create(
        connection_id=conn["id"],
        format="json",
        fields=[{"name": "user_id"}, {"name": "email"}, {"name": "app_metadata.entra_oid", "export_as": "oid"}],
    )
    assert (created.type, created.status, created.connection_id) == ("users_export", "pending", conn["id"])
    assert created.id.startswith("job_")

    job = _wait_for_job(client, created.id)
    assert job.status == "completed"
    assert job.location is not None and job.location.startswith(emulator.origin)
    download = httpx.get(job.location)  # a pre-signed location: no Authorization header
    assert download.status_code == 200
    lines = gzip.decompress(download.content).decode().splitlines()
    records = [json.loads(line) for line in lines]
    stored = [u for u in emulator.snapshot(dump=True)["dump"]["users"] if u["user_id"].startswith("auth0|")]
    assert records == [
        {"user_id": u["user_id"], "email": u["email"], "oid": u["app_metadata"]["entra_oid"]} for u in stored
    ]
    assert len(records) == 40


def test_export_of_100k_users(client: Auth0, emulator: Auth0Emulator) -> None:
    summary = emulator.seed({"count": 100_000, "seed": 1})
    assert summary["users"] == 100_000
    created = client.jobs.users_exports.create(format="json", fields=[{"name": "user_id"}])
    job = _wait_for_job(client, created.id, timeout_s=40)
    assert job.status == "completed"
    assert job.location is not None
    lines = gzip.decompress(httpx.get(job.location, timeout=30).content).splitlines()
    assert len(lines) == 100_000
    assert len({json.loads(line)["user_id"] for line in lines[:1000]}) == 1000


def _users_file(users: list[dict[str, Any]]) -> tuple[str, bytes, str]:
    return ("users.json", json.dumps(users).encode(), "application/json")


def test_import_job_inserts_and_reports_errors(client: Auth0, emulator: Auth0Emulator) -> None:
    _new_user(client, "exists@example.com", user_id="exists")
    conn = emulator.connection(DATABASE_CONNECTION)
    file = _users_file(
        [
            {"email": "New@Example.com", "user_id": "new1", "app_metadata": {"entra_oid": "o-n"}},
            {"email": "exists@example.com"},
            {"name": "no email"},
        ]
    )
    created = client.jobs.users_imports.create(users=file, connection_id=conn["id"], external_id="batch-1")
    assert (created.type, created.status, created.external_id) == ("users_import", "pending", "batch-1")
    job = _wait_for_job(client, created.id)
    assert job.status == "completed"
    assert job.summary is not None
    assert (job.summary.inserted, job.summary.updated, job.summary.failed, job.summary.total) == (1, 0, 2, 3)
    imported = client.users.get("auth0|new1")
    assert (imported.email, imported.app_metadata) == ("new@example.com", {"entra_oid": "o-n"})

    errors = httpx.get(
        f"{emulator.base_url}/jobs/{created.id}/errors",
        headers={"Authorization": f"Bearer {emulator.static_token}"},
    ).json()
    assert [e["errors"][0]["code"] for e in errors] == ["DUPLICATED_USER", "OBJECT_MISSING_REQUIRED_PROPERTY"]

    upsert = client.jobs.users_imports.create(
        users=_users_file([{"email": "exists@example.com", "given_name": "Ex"}]), connection_id=conn["id"], upsert=True
    )
    done = _wait_for_job(client, upsert.id)
    assert done.summary is not None and (done.summary.updated, done.summary.failed) == (1, 0)
    assert client.users.get("auth0|exists").given_name == "Ex"


def test_import_refuses_large_files_and_a_third_concurrent_job(client: Auth0, emulator: Auth0Emulator) -> None:
    conn_id = emulator.connection(DATABASE_CONNECTION)["id"]
    big = [{"email": f"u{i}@example.com", "user_metadata": {"pad": "x" * 200}} for i in range(2500)]
    assert len(_users_file(big)[1]) > 500 * 1024
    with pytest.raises(ApiError) as exc:
        client.jobs.users_imports.create(users=_users_file(big), connection_id=conn_id, request_options=NO_RETRY)
    assert _error(exc)[0] == 413

    emulator.set_job_delay(30)
    small = _users_file([{"email": "one@example.com"}])
    first = client.jobs.users_imports.create(users=small, connection_id=conn_id, request_options=NO_RETRY)
    client.jobs.users_imports.create(users=small, connection_id=conn_id, request_options=NO_RETRY)
    with pytest.raises(ApiError) as exc:
        client.jobs.users_imports.create(users=small, connection_id=conn_id, request_options=NO_RETRY)
    status, body = _error(exc)
    assert (status, body["errorCode"]) == (429, "too_many_requests")
    assert client.jobs.get(first.id).status == "pending"


# --------------------------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------------------------


def test_429_carries_auth0_headers_and_the_sdk_retry_succeeds(emulator: Auth0Emulator) -> None:
    emulator.add_user({"email": "rl@example.com", "user_id": "rl"})
    emulator.limits.configure({"mgmt.users.get": RateLimit(burst=1, per_second=1.0, retry_after=False)})
    headers = {"Authorization": f"Bearer {emulator.static_token}"}

    ok = httpx.get(emulator.base_url + "/users/auth0%7Crl", headers=headers)
    limited = httpx.get(emulator.base_url + "/users/auth0%7Crl", headers=headers)
    now = time.time()
    assert ok.status_code == 200
    assert (ok.headers["x-ratelimit-limit"], ok.headers["x-ratelimit-remaining"]) == ("1", "0")
    assert limited.status_code == 429
    assert limited.json()["errorCode"] == "too_many_requests"
    assert limited.headers["x-ratelimit-limit"] == "1"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert now <= int(limited.headers["x-ratelimit-reset"]) <= now + 2
    assert "retry-after" not in limited.headers  # Auth0 sends none; the SDK falls back to the reset

    retrying = Auth0(base_url=emulator.base_url, token=emulator.static_token, max_retries=3)
    assert retrying.users.get("auth0|rl").email == "rl@example.com"
    statuses = [e.status for e in emulator.log.entries() if e.route == "mgmt.users.get"]
    assert statuses == [200, 429, 429, 200]  # the SDK's first try was limited, its retry waited for the reset


def test_rate_limit_presets_per_plan(emulator: Auth0Emulator) -> None:
    assert set(RATE_LIMIT_PRESETS) >= {"free", "essentials", "enterprise"}
    free = rate_limit_preset("free")
    assert free["mgmt.*"].burst == 2 and free["mgmt.*"].per_second == 2.0
    essentials = rate_limit_preset("essentials")["mgmt.users.write.*"]
    assert (essentials.burst, round(essentials.per_second * 60)) == (20, 200)
    enterprise = rate_limit_preset("enterprise")["mgmt.*"]
    assert (enterprise.burst, enterprise.per_second) == (50, 16.0)

    emulator.set_plan("essentials", apply_limits=True)
    client = Auth0(base_url=emulator.base_url, token=emulator.static_token, max_retries=0)
    statuses = []
    for i in range(21):
        try:
            _new_user(client, f"w{i}@example.com")
            statuses.append(201)
        except ApiError as exc:
            statuses.append(exc.status_code or 0)
    assert statuses == [201] * 20 + [429]
    client.users.list(search_engine="v3")  # reads are not in the write-users bucket


# --------------------------------------------------------------------------------------------
# Control endpoints
# --------------------------------------------------------------------------------------------


def test_control_endpoints_seed_snapshot_and_settings(emulator: Auth0Emulator) -> None:
    control = emulator.origin + "/_control"
    seeded = httpx.post(
        control + "/seed",
        json={"count": 5, "seed": 2, "roles": ["admins"], "users": [{"email": "s@example.com", "user_id": "s"}]},
    )
    assert seeded.json() == {"users": 6, "roles": 1, "connections": 2}
    added = httpx.post(control + "/users", json={"email": "c@example.com", "user_id": "c", "roles": ["admins"]})
    assert added.status_code == 201 and added.json()["user_id"] == "auth0|c"
    httpx.post(control + "/sessions", json={"user_id": "auth0|c", "sessions": 4, "refresh_tokens": 1})
    httpx.put(control + "/plan", json={"plan": "free", "apply_limits": True})
    httpx.put(control + "/search-lag", json={"seconds": 1.5})
    snap = httpx.get(control + "/snapshot").json()
    assert (snap["users"], snap["roles"], snap["role_assignments"]) == (7, 1, 1)
    assert (snap["sessions"], snap["refresh_tokens"], snap["plan"], snap["search_lag_s"]) == (4, 1, "free", 1.5)
    assert "dump" not in snap
    assert emulator.limits.rules() == {"mgmt.*": {"burst": 2, "per_second": 2.0, "retry_after": False}}
    dumped = httpx.get(control + "/snapshot", params={"dump": "true"}).json()
    assert len(dumped["dump"]["users"]) == 7

    assert httpx.post(control + "/reset").status_code == 204
    assert httpx.get(control + "/snapshot").json()["users"] == 0
    assert emulator.limits.rules() == {}
