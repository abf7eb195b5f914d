"""The Graph emulator, driven through msgraph-sdk the way entra-sync drives real Graph."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio.to_thread
import httpx
import pytest
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.groups.delta.delta_get_response import DeltaGetResponse as GroupsDeltaResponse
from msgraph.generated.groups.item.members.members_request_builder import MembersRequestBuilder
from msgraph.generated.identity_protection.risk_detections.risk_detections_request_builder import (
    RiskDetectionsRequestBuilder,
)
from msgraph.generated.identity_protection.risky_users.confirm_compromised import (
    confirm_compromised_post_request_body as confirm_body,
)
from msgraph.generated.identity_protection.risky_users.dismiss.dismiss_post_request_body import (
    DismissPostRequestBody,
)
from msgraph.generated.identity_protection.risky_users.risky_users_request_builder import RiskyUsersRequestBuilder
from msgraph.generated.models.group import Group
from msgraph.generated.models.invitation import Invitation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.generated.models.reference_update import ReferenceUpdate
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.models.user import User
from msgraph.generated.users.delta.delta_get_response import DeltaGetResponse as UsersDeltaResponse
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder as UsersDeltaRequestBuilder
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from sandbox.graph import DEFAULT_TENANT_ID, GraphEmulator
from sandbox.server import RateLimit
from sandbox.tenant import build_tenant

pytestmark = [
    pytest.mark.anyio,
    # msgraph-sdk's generated builders warn about their own deprecated configuration classes
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

TOKEN = "sandbox-graph-token"
SELECT = ["id", "displayName", "userPrincipalName", "accountEnabled", "department", "employeeId"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ----------------------------------------------------------------------------------------------
# Fixtures: the emulator, an SDK client pointed at it, a loopback notification receiver
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def graph() -> Iterator[GraphEmulator]:
    emulator = GraphEmulator(fault_seed=11, handshake_timeout_s=2.0)
    emulator.start()
    emulator.seed({"users": 250, "groups": 6, "seed": 42})
    try:
        yield emulator
    finally:
        emulator.stop()


class StaticToken:
    """A TokenCredential that hands out one fixed bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def make_client(base_url: str, token: str = TOKEN) -> GraphServiceClient:
    client = GraphServiceClient(credentials=StaticToken(token), scopes=["https://graph.microsoft.com/.default"])
    client.request_adapter.base_url = base_url  # no trailing slash, see sdk-notes
    return client


@pytest.fixture
def client(graph: GraphEmulator) -> GraphServiceClient:
    return make_client(graph.base_url)


class Receiver:
    """A loopback webhook: answers the validation handshake (echo, or a wrong answer, optionally
    late) and records every notification POST as (path, body)."""

    def __init__(self, echo: bool = True, delay_s: float = 0.0) -> None:
        self.echo = echo
        self.delay_s = delay_s
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.tokens: list[str] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                token = parse_qs(url.query).get("validationToken")
                if token:
                    time.sleep(receiver.delay_s)
                    receiver.tokens.append(token[0])
                    answer = token[0] if receiver.echo else "not-the-token"
                    body = answer.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                else:
                    with receiver.cond:
                        receiver.posts.append((url.path, json.loads(raw)))
                        receiver.cond.notify_all()
                    body = b""
                    self.send_response(202)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def items(self, path: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [item for p, body in self.posts if path is None or p == path for item in body["value"]]

    def wait_items(self, count: int, path: str | None = None, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while len(self.items(path)) < count and time.monotonic() < deadline:
                self.cond.wait(0.05)
        return self.items(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def in_minutes(minutes: float) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


async def subscribe(
    client: GraphServiceClient, receiver: Receiver, resource: str = "users", **extra: Any
) -> Subscription:
    sub = Subscription(
        change_type=extra.pop("change_type", "updated,deleted"),
        notification_url=f"{receiver.url}/notify",
        lifecycle_notification_url=f"{receiver.url}/lifecycle",
        resource=resource,
        expiration_date_time=extra.pop("expires", in_minutes(60)),
        client_state=extra.pop("client_state", "s3cret-state"),
    )
    created = await client.subscriptions.post(sub)
    assert created is not None
    return created


async def odata_error(awaitable: Any) -> ODataError:
    with pytest.raises(ODataError) as info:
        await awaitable
    return info.value


def user_query(**params: Any) -> RequestConfiguration[UsersRequestBuilder.UsersRequestBuilderGetQueryParameters]:
    return RequestConfiguration(query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(**params))


# ----------------------------------------------------------------------------------------------
# Seeded tenant
# ----------------------------------------------------------------------------------------------


def test_same_seed_builds_identical_tenant_and_another_seed_does_not() -> None:
    a = build_tenant(2000, 20, seed=3)
    b = build_tenant(2000, 20, seed=3)
    c = build_tenant(2000, 20, seed=4)
    assert a == b
    assert [u["id"] for u in a.users] != [u["id"] for u in c.users]

    guests = [u for u in a.users if u["userType"] == "Guest"]
    assert 20 <= len(guests) <= 110  # ~3% of 2000
    assert all("#EXT#@" in g["userPrincipalName"] for g in guests)
    disabled = sum(1 for u in a.users if not u["accountEnabled"])
    assert 50 <= disabled <= 160  # ~5%
    per_user: dict[str, int] = {}
    for members in a.memberships.values():
        for uid in members:
            per_user[uid] = per_user.get(uid, 0) + 1
    assert set(per_user.values()) <= {1, 2, 3, 4}
    assert sum(len(children) for children in a.nested_groups.values()) == 2
    ids = {u["id"] for u in a.users}
    assert len(ids) == 2000
    assert set(a.managers) == ids - {a.users[0]["id"]}


def test_a_hundred_thousand_user_tenant_builds() -> None:
    # How fast it builds is the benchmarks' business (bench/), not an assertion here.
    tenant = build_tenant(100_000, 300, seed=1)
    assert len(tenant.users) == 100_000


# ----------------------------------------------------------------------------------------------
# Users: paging, $select, $filter, get, errors
# ----------------------------------------------------------------------------------------------


async def test_users_page_through_several_pages_with_select_and_top(
    graph: GraphEmulator, client: GraphServiceClient
) -> None:
    page = await client.users.get(user_query(select=SELECT, top=100))
    seen: list[User] = []
    pages = 0
    while page is not None:
        pages += 1
        seen.extend(page.value or [])
        if not page.odata_next_link:
            break
        assert page.odata_next_link.startswith(graph.base_url + "/users?")
        page = await client.users.with_url(page.odata_next_link).get()

    assert pages == 3
    expected = {u["id"]: u for u in graph.snapshot(full=True)["dump"]["users"]}
    assert [u.id for u in seen] == list(expected)
    for user in seen:
        assert user.account_enabled == expected[user.id]["accountEnabled"]
        assert user.department == expected[user.id]["department"]
        assert user.given_name is None  # not selected, so not returned
    assert graph.log.counts()["users.list"] == 3


async def test_users_without_select_get_graphs_default_set(client: GraphServiceClient) -> None:
    page = await client.users.get(user_query(top=5))
    assert page is not None and page.value
    user = page.value[0]
    assert user.display_name and user.user_principal_name
    assert user.account_enabled is None
    assert user.department is None
    assert user.employee_id is None


async def test_top_outside_range_is_refused(client: GraphServiceClient) -> None:
    error = await odata_error(client.users.get(user_query(top=1000)))
    assert error.response_status_code == 400


async def test_filter_eq_handles_quotes_and_and(graph: GraphEmulator, client: GraphServiceClient) -> None:
    users = graph.snapshot(full=True)["dump"]["users"]
    quoted = next(u for u in users if "'" in u["userPrincipalName"])
    literal = quoted["userPrincipalName"].upper().replace("'", "''")  # UPN matching ignores case
    page = await client.users.get(user_query(filter=f"userPrincipalName eq '{literal}'", select=SELECT))
    assert page is not None and page.value is not None
    assert [u.id for u in page.value] == [quoted["id"]]

    employee = next(u for u in users if u["employeeId"])
    both = f"employeeId eq '{employee['employeeId']}' and mail eq '{employee['mail']}'"
    page = await client.users.get(user_query(filter=both, select=SELECT))
    assert page is not None and [u.id for u in page.value or []] == [employee["id"]]

    mismatch = f"employeeId eq '{employee['employeeId']}' and mail eq 'someone.else@example.com'"
    page = await client.users.get(user_query(filter=mismatch))
    assert page is not None and page.value == []


@pytest.mark.parametrize(
    "expression",
    [
        "startswith(displayName,'A')",
        "displayName eq 'Ada Abbott'",
        "id eq 'a' or id eq 'b'",
        "userPrincipalName eq 'unterminated",
        "__import__('os') eq 1",
    ],
)
async def test_unsupported_filters_are_refused(client: GraphServiceClient, expression: str) -> None:
    error = await odata_error(client.users.get(user_query(filter=expression)))
    assert error.response_status_code == 400
    assert error.error is not None and error.error.code == "Request_UnsupportedQuery"


async def test_get_by_id_and_by_upn_and_missing_is_odata_404(graph: GraphEmulator, client: GraphServiceClient) -> None:
    stored = graph.snapshot(full=True)["dump"]["users"][7]
    by_id = await client.users.by_user_id(stored["id"]).get()
    by_upn = await client.users.by_user_id(stored["userPrincipalName"]).get()
    assert by_id is not None and by_upn is not None
    assert by_id.id == by_upn.id == stored["id"]
    assert by_id.display_name == stored["displayName"]

    error = await odata_error(client.users.by_user_id("00000000-0000-4000-8000-000000000000").get())
    assert error.response_status_code == 404
    assert error.error is not None and error.error.code == "Request_ResourceNotFound"
    assert error.error.inner_error is not None


async def test_wrong_token_is_401_invalid_authentication_token(graph: GraphEmulator) -> None:
    intruder = make_client(graph.base_url, token="not-the-token")
    error = await odata_error(intruder.users.get())
    assert error.response_status_code == 401
    assert error.error is not None and error.error.code == "InvalidAuthenticationToken"


async def test_guest_upn_with_ext_marker_resolves(graph: GraphEmulator, client: GraphServiceClient) -> None:
    guest = next(u for u in graph.snapshot(full=True)["dump"]["users"] if u["userType"] == "Guest")
    fetched = await client.users.by_user_id(guest["userPrincipalName"]).get()
    assert fetched is not None and fetched.id == guest["id"]


async def test_manager_expand_put_and_delete(graph: GraphEmulator, client: GraphServiceClient) -> None:
    users = graph.snapshot(full=True)["dump"]["users"]
    report, boss = users[20]["id"], users[3]["id"]
    await client.users.by_user_id(report).manager.ref.put(ReferenceUpdate(odata_id=f"{graph.base_url}/users/{boss}"))
    manager = await client.users.by_user_id(report).manager.get()
    assert manager is not None and manager.id == boss

    config = RequestConfiguration(
        query_parameters=UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
            select=["id"], expand=["manager($select=id)"]
        )
    )
    expanded = await client.users.by_user_id(report).get(config)
    assert expanded is not None and expanded.manager is not None and expanded.manager.id == boss

    await client.users.by_user_id(report).manager.ref.delete()
    error = await odata_error(client.users.by_user_id(report).manager.get())
    assert error.response_status_code == 404


async def test_create_patch_soft_delete_restore_and_hard_delete(
    graph: GraphEmulator, client: GraphServiceClient
) -> None:
    body = User(
        account_enabled=True,
        display_name="Noor Haddad",
        mail_nickname="noor.haddad",
        user_principal_name="noor.haddad@sandbox.onmicrosoft.com",
        department="Legal",
    )
    body.additional_data = {"passwordProfile": {"password": "x-Sandbox-1", "forceChangePasswordNextSignIn": True}}
    created = await client.users.post(body)
    assert created is not None and created.id
    error = await odata_error(client.users.post(body))
    assert error.response_status_code == 400  # duplicate UPN

    await client.users.by_user_id(created.id).patch(User(department="Finance"))
    fetched = await client.users.by_user_id(created.id).get(
        RequestConfiguration(
            query_parameters=UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["department"])
        )
    )
    assert fetched is not None and fetched.department == "Finance"

    await client.users.by_user_id(created.id).delete()
    assert (await odata_error(client.users.by_user_id(created.id).get())).response_status_code == 404
    deleted = await client.directory.deleted_items.by_directory_object_id(created.id).get()
    assert deleted is not None and deleted.id == created.id

    await client.directory.deleted_items.by_directory_object_id(created.id).restore.post()
    assert (await client.users.by_user_id(created.id).get()) is not None

    await client.users.by_user_id(created.id).delete()
    await client.directory.deleted_items.by_directory_object_id(created.id).delete()
    error = await odata_error(client.directory.deleted_items.by_directory_object_id(created.id).get())
    assert error.response_status_code == 404
    assert graph.snapshot()["deleted_users"] == 0


# ----------------------------------------------------------------------------------------------
# Groups and memberships
# ----------------------------------------------------------------------------------------------


async def test_group_members_add_remove_and_transitive_member_of(
    graph: GraphEmulator, client: GraphServiceClient
) -> None:
    dump = graph.snapshot(full=True)["dump"]
    group_ids = {g["id"] for g in dump["groups"]}
    parent, child = next(
        (gid, member) for gid, members in dump["members"].items() for member in members if member in group_ids
    )
    in_some_group = {m for members in dump["members"].values() for m in members}
    lonely = next(u["id"] for u in dump["users"] if u["id"] not in in_some_group)

    await client.groups.by_group_id(child).members.ref.post(
        ReferenceCreate(odata_id=f"{graph.base_url}/directoryObjects/{lonely}")
    )
    members = await client.groups.by_group_id(child).members.get()
    assert members is not None and lonely in [m.id for m in members.value or []]
    assert all(m.odata_type in {"#microsoft.graph.user", "#microsoft.graph.group"} for m in members.value or [])

    direct = await client.users.by_user_id(lonely).member_of.get()
    transitive = await client.users.by_user_id(lonely).transitive_member_of.get()
    assert direct is not None and transitive is not None
    assert [g.id for g in direct.value or []] == [child]
    assert {g.id for g in transitive.value or []} == {child, parent}
    assert {g.odata_type for g in transitive.value or []} == {"#microsoft.graph.group"}

    error = await odata_error(
        client.groups.by_group_id(child).members.ref.post(
            ReferenceCreate(odata_id=f"{graph.base_url}/directoryObjects/{lonely}")
        )
    )
    assert error.response_status_code == 400

    await client.groups.by_group_id(child).members.by_directory_object_id(lonely).ref.delete()
    direct = await client.users.by_user_id(lonely).member_of.get()
    assert direct is not None and direct.value == []


async def test_group_members_page(graph: GraphEmulator, client: GraphServiceClient) -> None:
    gid = graph.snapshot(full=True)["dump"]["groups"][0]["id"]
    expected = graph.snapshot(full=True)["dump"]["members"][gid]
    assert len(expected) > 60
    query = MembersRequestBuilder.MembersRequestBuilderGetQueryParameters(top=25, select=["id", "displayName"])
    page = await client.groups.by_group_id(gid).members.get(RequestConfiguration(query_parameters=query))
    pages = 0
    ids: list[str] = []
    while page is not None:
        ids.extend(m.id for m in page.value or [] if m.id)
        pages += 1
        if not page.odata_next_link:
            break
        assert "$top=25" in page.odata_next_link
        page = await client.groups.by_group_id(gid).members.with_url(page.odata_next_link).get()
    assert ids == expected
    assert pages == -(-len(expected) // 25)


# ----------------------------------------------------------------------------------------------
# Delta
# ----------------------------------------------------------------------------------------------


async def users_delta_round(client: GraphServiceClient, url: str | None) -> tuple[list[User], str, int]:
    """Follow nextLinks to the deltaLink by hand (PageIterator is unreliable for delta)."""
    if url is None:
        config = RequestConfiguration(
            query_parameters=UsersDeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=SELECT)
        )
        page: UsersDeltaResponse | None = await client.users.delta.get(config)
    else:
        page = await client.users.delta.with_url(url).get()
    users: list[User] = []
    pages = 0
    while page is not None:
        pages += 1
        users.extend(page.value or [])
        if page.odata_next_link:
            page = await client.users.delta.with_url(page.odata_next_link).get()
            continue
        assert page.odata_delta_link
        return users, page.odata_delta_link, pages
    raise AssertionError("delta ended without a deltaLink")


async def groups_delta_round(client: GraphServiceClient, url: str | None) -> tuple[list[Group], str]:
    page: GroupsDeltaResponse | None = await (
        client.groups.delta.get() if url is None else client.groups.delta.with_url(url).get()
    )
    groups: list[Group] = []
    while page is not None:
        groups.extend(page.value or [])
        if page.odata_next_link:
            page = await client.groups.delta.with_url(page.odata_next_link).get()
            continue
        assert page.odata_delta_link
        return groups, page.odata_delta_link
    raise AssertionError("delta ended without a deltaLink")


async def test_delta_round_trip_returns_exactly_the_changes(graph: GraphEmulator, client: GraphServiceClient) -> None:
    graph.delta_page_size = 100
    users, user_link, pages = await users_delta_round(client, None)
    assert pages == 3 and len(users) == 250
    assert all(u.account_enabled is not None for u in users)
    assert "$deltatoken=" in user_link and "$select=" in user_link
    assert user_link.startswith(graph.base_url + "/users/delta")
    groups, group_link = await groups_delta_round(client, None)
    assert len(groups) == 6
    initial_members = {str(m["id"]) for g in groups for m in g.additional_data["members@delta"]}
    assert len(initial_members) > 100

    dump = graph.snapshot(full=True)["dump"]
    changed, soft, hard = dump["users"][10]["id"], dump["users"][11]["id"], dump["users"][12]["id"]
    group = dump["groups"][1]["id"]
    removed = dump["members"][group][0]
    added = next(u["id"] for u in dump["users"] if u["id"] not in dump["members"][group])
    graph.update_user(changed, department="Security")
    graph.soft_delete_user(soft)
    graph.hard_delete_user(hard)
    graph.add_member(group, added)
    graph.remove_member(group, removed)

    users, user_link2, _ = await users_delta_round(client, user_link)
    by_id = {u.id: u for u in users}
    assert set(by_id) == {changed, soft, hard}
    assert by_id[changed].department == "Security"
    assert by_id[changed].additional_data.get("@removed") is None
    assert by_id[soft].additional_data["@removed"] == {"reason": "changed"}
    assert by_id[hard].additional_data["@removed"] == {"reason": "deleted"}
    assert "$select=" in user_link2

    groups, _ = await groups_delta_round(client, group_link)
    assert [g.id for g in groups] == [group]
    members = {str(m["id"]): m for m in groups[0].additional_data["members@delta"]}
    assert set(members) == {added, removed}
    assert members[added]["@odata.type"] == "#microsoft.graph.user"
    assert "@removed" not in members[added]
    assert members[removed]["@removed"] == {"reason": "deleted"}

    users, _, _ = await users_delta_round(client, user_link2)
    assert users == []  # nothing changed since the last round


async def test_deltatoken_latest_skips_history(graph: GraphEmulator, client: GraphServiceClient) -> None:
    latest = await client.users.delta.with_url(f"{graph.base_url}/users/delta()?$deltatoken=latest").get()
    assert latest is not None and latest.value == [] and latest.odata_delta_link
    target = graph.snapshot(full=True)["dump"]["users"][5]["id"]
    graph.update_user(target, jobTitle="Chief Sandbox Officer")
    users, _, _ = await users_delta_round(client, latest.odata_delta_link)
    assert [u.id for u in users] == [target]
    assert users[0].job_title == "Chief Sandbox Officer"


async def test_expired_delta_tokens_answer_410_sync_state_not_found(
    graph: GraphEmulator, client: GraphServiceClient
) -> None:
    _, link, _ = await users_delta_round(client, None)
    graph.expire_delta_tokens()
    error = await odata_error(client.users.delta.with_url(link).get())
    assert error.response_status_code == 410
    assert error.error is not None and error.error.code == "syncStateNotFound"

    _, fresh, _ = await users_delta_round(client, None)
    graph.delta_token_ttl_s = -1  # every token is older than the TTL
    error = await odata_error(client.users.delta.with_url(fresh).get())
    assert error.response_status_code == 410


# ----------------------------------------------------------------------------------------------
# Subscriptions and change notifications
# ----------------------------------------------------------------------------------------------


async def test_subscription_handshake_echo_succeeds(client: GraphServiceClient, receiver: Receiver) -> None:
    sub = await subscribe(client, receiver)
    assert sub.id and sub.client_state == "s3cret-state"
    assert len(receiver.tokens) == 2  # notificationUrl and lifecycleNotificationUrl
    assert all(t.startswith("Validation: ") and " " in t for t in receiver.tokens)  # arrived decoded
    listed = await client.subscriptions.get()
    assert listed is not None and [s.id for s in listed.value or []] == [sub.id]


async def test_subscription_refused_when_endpoint_does_not_echo(client: GraphServiceClient) -> None:
    wrong = Receiver(echo=False)
    try:
        error = await odata_error(subscribe(client, wrong))
    finally:
        wrong.close()
    assert error.response_status_code == 400
    assert error.error is not None and error.error.code == "ValidationError"
    assert "Subscription validation request failed" in (error.error.message or "")
    assert (await client.subscriptions.get()).value == []  # type: ignore[union-attr]


async def test_subscription_refused_when_the_echo_comes_too_late(
    graph: GraphEmulator, client: GraphServiceClient
) -> None:
    graph.handshake_timeout_s = 0.3
    slow = Receiver(delay_s=1.0)
    try:
        error = await odata_error(subscribe(client, slow))
    finally:
        slow.close()
    assert error.response_status_code == 400
    assert "could not be reached (ReadTimeout)" in (error.error.message or "")  # type: ignore[union-attr]


async def test_subscription_refused_when_nobody_listens(client: GraphServiceClient) -> None:
    closed = Receiver()
    closed.close()
    error = await odata_error(subscribe(client, closed))
    assert error.response_status_code == 400
    assert "validation request failed" in (error.error.message or "")  # type: ignore[union-attr]


async def test_subscription_limits(graph: GraphEmulator, client: GraphServiceClient, receiver: Receiver) -> None:
    error = await odata_error(subscribe(client, receiver, expires=in_minutes(41_760 + 5)))
    assert error.response_status_code == 400
    assert "41760 minutes" in (error.error.message or "")  # type: ignore[union-attr]
    error = await odata_error(subscribe(client, receiver, expires=in_minutes(-1)))
    assert error.response_status_code == 400
    error = await odata_error(subscribe(client, receiver, client_state="x" * 129))
    assert error.response_status_code == 400
    error = await odata_error(subscribe(client, receiver, resource="/me/messages"))
    assert error.response_status_code == 400
    outside = Subscription(
        change_type="updated",
        notification_url="https://example.com/notify",
        resource="users",
        expiration_date_time=in_minutes(60),
    )
    error = await odata_error(client.subscriptions.post(outside))
    assert error.response_status_code == 400
    assert "loopback" in (error.error.message or "")  # type: ignore[union-attr]
    assert receiver.tokens == []  # nothing was contacted for refused subscriptions

    sub = await subscribe(client, receiver, expires=in_minutes(41_700))
    assert sub.id is not None
    renewed = await client.subscriptions.by_subscription_id(sub.id).patch(
        Subscription(expiration_date_time=in_minutes(41_750))
    )
    assert renewed is not None and renewed.expiration_date_time is not None
    assert renewed.expiration_date_time > in_minutes(41_740)
    error = await odata_error(
        client.subscriptions.by_subscription_id(sub.id).patch(Subscription(expiration_date_time=in_minutes(50_000)))
    )
    assert error.response_status_code == 400

    await client.subscriptions.by_subscription_id(sub.id).delete()
    error = await odata_error(client.subscriptions.by_subscription_id(sub.id).get())
    assert error.response_status_code == 404


async def test_notifications_arrive_batched_with_client_state(
    graph: GraphEmulator, client: GraphServiceClient, receiver: Receiver
) -> None:
    users_sub = await subscribe(client, receiver)
    groups_sub = await subscribe(client, receiver, resource="/groups", client_state="group-state")
    dump = graph.snapshot(full=True)["dump"]
    targets = [u["id"] for u in dump["users"][:5]]
    for uid in targets:
        graph.update_user(uid, officeLocation="Remote")
    graph.soft_delete_user(dump["users"][6]["id"])
    graph.hard_delete_user(dump["users"][7]["id"])
    group = dump["groups"][2]["id"]
    graph.remove_member(group, dump["members"][group][0])
    assert graph.wait_notifications()

    items = receiver.wait_items(8, "/notify")
    user_items = [i for i in items if i["subscriptionId"] == users_sub.id]
    group_items = [i for i in items if i["subscriptionId"] == groups_sub.id]
    assert [i["resourceData"]["id"] for i in user_items] == [*targets, dump["users"][6]["id"], dump["users"][7]["id"]]
    assert [i["changeType"] for i in user_items] == ["updated"] * 6 + ["deleted"]
    assert {i["clientState"] for i in user_items} == {"s3cret-state"}
    first = user_items[0]
    assert first["resource"] == f"Users/{targets[0]}"
    assert first["tenantId"] == DEFAULT_TENANT_ID
    assert first["resourceData"]["organizationId"] == DEFAULT_TENANT_ID
    assert first["resourceData"]["@odata.type"] == "#Microsoft.Graph.User"
    assert first["subscriptionExpirationDateTime"].endswith("Z")
    assert [(i["changeType"], i["resource"], i["clientState"]) for i in group_items] == [
        ("updated", f"Groups/{group}", "group-state")
    ]
    user_posts = [
        body for path, body in receiver.posts if any(i["subscriptionId"] == users_sub.id for i in body["value"])
    ]
    assert len(user_posts) < len(user_items)  # a burst of changes shares POSTs


async def test_notification_drops_are_seeded_and_repeatable() -> None:
    def run_once() -> tuple[set[str], int]:
        rec = Receiver()
        emulator = GraphEmulator(fault_seed=5)
        emulator.start()
        try:
            emulator.seed({"users": 40, "groups": 2, "seed": 9})
            asyncio.run(subscribe(make_client(emulator.base_url), rec))
            emulator.configure_notifications(drop_rate=0.5)
            for user in emulator.snapshot(full=True)["dump"]["users"][:20]:
                emulator.update_user(user["id"], city="Oslo")
            assert emulator.wait_notifications()
            stats = emulator.snapshot()["notifications"]
            got = {i["resourceData"]["id"] for i in rec.wait_items(stats["delivered"], "/notify")}
            assert stats["queued"] == 20 and stats["delivered"] + stats["dropped"] == 20
            return got, stats["dropped"]
        finally:
            emulator.stop()
            rec.close()

    first, dropped = await _in_thread(run_once)
    second, _ = await _in_thread(run_once)
    assert 0 < dropped < 20
    assert len(first) == 20 - dropped
    assert first == second


async def _in_thread(fn: Any) -> Any:
    """Run a blocking scenario (it has its own event loop) off the test's loop."""
    return await anyio.to_thread.run_sync(fn)


async def test_failed_deliveries_are_retried(graph: GraphEmulator, client: GraphServiceClient) -> None:
    attempts: list[int] = []

    class Flaky(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            token = parse_qs(urlsplit(self.path).query).get("validationToken")
            if token:
                status, body = 200, token[0].encode()
            else:
                attempts.append(1)
                status, body = (503 if len(attempts) < 3 else 202), b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/n"
        await client.subscriptions.post(
            Subscription(
                change_type="updated", notification_url=url, resource="users", expiration_date_time=in_minutes(30)
            )
        )
        graph.update_user(graph.snapshot(full=True)["dump"]["users"][0]["id"], city="Oslo")
        assert graph.wait_notifications()
    finally:
        server.shutdown()
        server.server_close()
    stats = graph.snapshot()["notifications"]
    assert len(attempts) == 3
    assert stats["delivered"] == 1 and stats["failed"] == 0


async def test_reauthorization_required_and_reauthorize(
    graph: GraphEmulator, client: GraphServiceClient, receiver: Receiver
) -> None:
    sub = await subscribe(client, receiver)
    assert sub.id is not None
    assert graph.emit_reauthorization_required() == 1
    items = receiver.wait_items(1, "/lifecycle")
    assert len(items) == 1
    assert items[0]["lifecycleEvent"] == "reauthorizationRequired"
    assert items[0]["subscriptionId"] == sub.id
    assert items[0]["clientState"] == "s3cret-state"
    assert "changeType" not in items[0]
    await client.subscriptions.by_subscription_id(sub.id).reauthorize.post()


async def test_expired_subscription_receives_nothing(
    graph: GraphEmulator, client: GraphServiceClient, receiver: Receiver
) -> None:
    sub = await subscribe(client, receiver)
    assert sub.id is not None
    graph.expire_subscription(sub.id)
    graph.update_user(graph.snapshot(full=True)["dump"]["users"][0]["id"], city="Oslo")
    assert graph.wait_notifications()
    time.sleep(0.1)
    assert receiver.items("/notify") == []
    assert graph.snapshot()["notifications"]["queued"] == 0


# ----------------------------------------------------------------------------------------------
# Throttling
# ----------------------------------------------------------------------------------------------


async def test_429_with_retry_after_is_retried_by_the_sdk(graph: GraphEmulator, client: GraphServiceClient) -> None:
    uid = graph.snapshot(full=True)["dump"]["users"][0]["id"]
    graph.limits.configure({"users.get": RateLimit(burst=1, per_second=1.0)})
    assert (await client.users.by_user_id(uid).get()) is not None
    started = time.monotonic()
    again = await client.users.by_user_id(uid).get()
    elapsed = time.monotonic() - started
    assert again is not None and again.id == uid
    statuses = [e.status for e in graph.log.entries() if e.route == "users.get"]
    assert statuses == [200, 429, 200]
    assert elapsed >= 0.8  # it waited for Retry-After (a lower bound: load can only lengthen it)


async def test_429_body_is_graph_shaped() -> None:
    with GraphEmulator() as emulator:
        assert isinstance(emulator, GraphEmulator)
        emulator.limits.configure({"users.list": RateLimit(burst=0, per_second=0.5)})
        response = httpx.get(f"{emulator.base_url}/users", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    error = response.json()["error"]
    assert error["code"] == "TooManyRequests"
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}


# ----------------------------------------------------------------------------------------------
# Identity Protection and invitations
# ----------------------------------------------------------------------------------------------


async def test_risk_detections_filter_by_date_and_level(graph: GraphEmulator, client: GraphServiceClient) -> None:
    users = graph.snapshot(full=True)["dump"]["users"]
    old = graph.raise_risk(users[0]["id"], level="high", detected_at="2026-02-01T08:00:00Z")
    recent_high = graph.raise_risk(users[1]["id"], level="high", detected_at="2026-03-05T09:30:00Z")
    graph.raise_risk(users[2]["id"], level="low", detected_at="2026-03-06T10:00:00Z")
    late_high = graph.raise_risk(users[3]["id"], level="high", detected_at="2026-04-02T00:00:00.1234567Z")

    query = RiskDetectionsRequestBuilder.RiskDetectionsRequestBuilderGetQueryParameters(
        filter="detectedDateTime ge 2026-03-01T00:00:00Z and detectedDateTime lt 2026-04-02T00:00:00Z "
        "and riskLevel eq 'high'"
    )
    page = await client.identity_protection.risk_detections.get(RequestConfiguration(query_parameters=query))
    assert page is not None and [d.id for d in page.value or []] == [recent_high["id"]]
    found = page.value[0]  # type: ignore[index]
    assert found.user_id == users[1]["id"]
    assert found.user_principal_name == users[1]["userPrincipalName"]
    assert found.risk_event_type == "unfamiliarFeatures"

    query = RiskDetectionsRequestBuilder.RiskDetectionsRequestBuilderGetQueryParameters(
        filter="detectedDateTime gt 2026-01-01T00:00:00Z", top=2
    )
    page = await client.identity_protection.risk_detections.get(RequestConfiguration(query_parameters=query))
    assert page is not None and len(page.value or []) == 2 and page.odata_next_link
    rest = await client.identity_protection.risk_detections.with_url(page.odata_next_link).get()
    assert rest is not None
    assert [d.id for d in (page.value or []) + (rest.value or [])][-1] == late_high["id"]
    assert old["id"] in [d.id for d in page.value or []]

    risky_query = RiskyUsersRequestBuilder.RiskyUsersRequestBuilderGetQueryParameters(filter="riskLevel eq 'high'")
    risky = await client.identity_protection.risky_users.get(RequestConfiguration(query_parameters=risky_query))
    assert risky is not None
    assert {r.id for r in risky.value or []} == {users[0]["id"], users[1]["id"], users[3]["id"]}

    await client.identity_protection.risky_users.dismiss.post(DismissPostRequestBody(user_ids=[users[0]["id"]]))
    dismissed = await client.identity_protection.risky_users.by_risky_user_id(users[0]["id"]).get()
    assert dismissed is not None and dismissed.risk_level is not None
    assert dismissed.risk_level.value == "none" and dismissed.risk_state.value == "dismissed"  # type: ignore[union-attr]

    await client.identity_protection.risky_users.confirm_compromised.post(
        confirm_body.ConfirmCompromisedPostRequestBody(user_ids=[users[2]["id"]])
    )
    confirmed = await client.identity_protection.risky_users.by_risky_user_id(users[2]["id"]).get()
    assert confirmed is not None and confirmed.risk_state is not None and confirmed.risk_level is not None
    assert (confirmed.risk_state.value, confirmed.risk_level.value) == ("confirmedCompromised", "high")

    bad = RiskDetectionsRequestBuilder.RiskDetectionsRequestBuilderGetQueryParameters(filter="riskLevel ge 'high'")
    error = await odata_error(
        client.identity_protection.risk_detections.get(RequestConfiguration(query_parameters=bad))
    )
    assert error.response_status_code == 400


async def test_invitation_creates_a_pending_guest(graph: GraphEmulator, client: GraphServiceClient) -> None:
    invitation = await client.invitations.post(
        Invitation(invited_user_email_address="maria@partner.example", invite_redirect_url="https://example.com")
    )
    assert invitation is not None and invitation.invited_user is not None
    assert invitation.status == "PendingAcceptance" and invitation.invite_redeem_url
    guest_id = invitation.invited_user.id
    assert guest_id is not None
    guest = await client.users.by_user_id(guest_id).get(
        RequestConfiguration(
            query_parameters=UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
                select=["userType", "userPrincipalName", "mail", "externalUserState"]
            )
        )
    )
    assert guest is not None
    assert guest.user_type == "Guest"
    assert guest.user_principal_name == "maria_partner.example#EXT#@sandbox.onmicrosoft.com"
    assert guest.mail == "maria@partner.example"
    assert guest.external_user_state == "PendingAcceptance"


# ----------------------------------------------------------------------------------------------
# Control endpoints
# ----------------------------------------------------------------------------------------------


def test_control_endpoints_seed_change_and_snapshot(graph: GraphEmulator) -> None:
    control = f"{graph.origin}/_control"
    with httpx.Client() as http:
        summary = http.post(f"{control}/seed", json={"users": 30, "groups": 3, "seed": 1}).json()
        assert summary["users"] == 30 and summary["groups"] == 3
        created = http.post(f"{control}/users", json={"displayName": "Kim Ito", "mailNickname": "kim.ito"}).json()
        assert http.patch(f"{control}/users", json={"id": created["id"], "city": "Kyoto"}).json()["city"] == "Kyoto"
        assert http.post(f"{control}/users/soft-delete", json={"id": created["id"]}).status_code == 204
        detection = http.post(f"{control}/risk", json={"user_id": graph.snapshot(full=True)["dump"]["users"][0]["id"]})
        assert detection.status_code == 201 and detection.json()["riskLevel"] == "high"
        assert http.post(f"{control}/delta/expire").status_code == 204
        snap = http.get(f"{control}/snapshot").json()
        assert (snap["users"], snap["deleted_users"], snap["risky_users"]) == (30, 1, 1)
        assert "dump" not in snap and "dump" in http.get(f"{control}/snapshot/full").json()
        assert http.put(f"{control}/notifications", json={"drop_rate": 0.25}).json()["drop_rate"] == 0.25
        assert http.put(f"{control}/notifications", json={"nonsense": 1}).status_code == 400
        assert http.post(f"{control}/reset").status_code == 204
    assert graph.snapshot()["users"] == 0


async def test_change_type_decides_which_notifications_a_subscription_gets(
    graph: GraphEmulator, client: GraphServiceClient, receiver: Receiver
) -> None:
    deletes_only = await subscribe(client, receiver, change_type="deleted")
    users = graph.snapshot(full=True)["dump"]["users"]
    graph.update_user(users[0]["id"], city="Oslo")
    graph.soft_delete_user(users[1]["id"])  # a soft delete is an update for Graph
    graph.hard_delete_user(users[2]["id"])
    assert graph.wait_notifications()
    items = receiver.wait_items(1, "/notify")
    assert [(i["subscriptionId"], i["changeType"], i["resourceData"]["id"]) for i in items] == [
        (deletes_only.id, "deleted", users[2]["id"])
    ]
