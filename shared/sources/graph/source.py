"""The Entra side: reads through ``msgraph-sdk``.

Requests are built with the SDK's request builders and sent through its adapter (authentication,
retry middleware for 429/503/504 honouring ``Retry-After``, telemetry), and read as raw JSON: the
mapping speaks Graph's own property names, and parsing into the SDK's models costs milliseconds
per user for nothing we use.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

from shared.core.classify import classify
from shared.core.model import Identity, SourceState
from shared.core.ports import GroupDeltaPage
from shared.core.work import GUID
from shared.errors import DeltaExpired, NotFound, PermanentError, RateLimited, TransientError, unreachable
from shared.mapping.model import SyncMapping
from shared.sources.graph.schema import MANAGER_PROPERTIES, enabled
from shared.stores.keys import odata_string

ERRORS: Final[dict[str, Any]] = {"XXX": ODataError}
SUBSCRIPTION_MAX_MINUTES: Final = 41_760  # users and groups
GROUP_TYPE: Final = "#microsoft.graph.group"
USER_TYPE: Final = "#microsoft.graph.user"
# The manager's fields, the same for reading one user (the worker) and paging them all
# (reconciliation): were they to differ, a mapping of ``manager.mail`` would drift every night. The
# mapping validator accepts exactly these as ``manager.<property>``.
MANAGER_EXPAND: Final = f"manager($select={','.join(MANAGER_PROPERTIES)})"


class GroupNotFound(NotFound):
    """A group the mapping names does not exist in Entra ID (Graph answered 404). ``entries`` are the
    mapping entries that name it (``roles[2].group``)."""

    def __init__(self, group_id: str, op: str, mapping: SyncMapping):
        self.group_id = group_id
        self.entries = [entry for entry, group in mapping.group_entries() if group == group_id]
        named = f", named by {', '.join(self.entries)} in {mapping.source}," if self.entries else ""
        super().__init__(
            f"group {group_id}{named} does not exist in Entra ID (Graph {op}: 404): use the object id of an "
            "existing group or remove the entry (entra-sync check lists every such entry)"
        )


# The application permission each Graph call needs (what infra/scripts/grant-graph-permissions.sh
# grants), by the family of its operation name.
PERMISSIONS: Final = {
    "users": "User.Read.All",
    "deletedItems": "User.Read.All",
    "groups": "Group.Read.All",
    "subscriptions": "User.Read.All and Group.Read.All",
    "identityProtection.riskDetections": "IdentityRiskEvent.Read.All",
    "identityProtection.riskyUsers": "IdentityRiskyUser.Read.All",
}
GRANT_HINT: Final = (
    "grant it to the app's managed identity with infra/scripts/grant-graph-permissions.sh (an admin of the tenant)"
)


def permission_for(op: str) -> str:
    """The Graph application permission an operation needs, by its name (``users.list`` ...)."""
    return next((p for family, p in PERMISSIONS.items() if op == family or op.startswith(family + ".")), "")


def _translate(op: str, exc: Exception) -> Exception:
    if isinstance(exc, ODataError):
        status = exc.response_status_code or 0
        code = exc.error.code if exc.error is not None else ""
        message = f"Graph {op}: {status} {code}".strip()
        if status in (401, 403) and permission_for(op):
            message += f": the app needs the Graph application permission {permission_for(op)}; {GRANT_HINT}"
        if status == 404:
            return NotFound(message)
        if status == 410 or code in {"syncStateNotFound", "resyncRequired"}:
            return DeltaExpired(message)
        if status == 429:
            return RateLimited(message)
        if status >= 500:
            return TransientError(message)
        return PermanentError(message)
    if isinstance(exc, httpx.TimeoutException | httpx.TransportError):
        return TransientError(
            unreachable("Graph", op, exc, "GRAPH_BASE_URL (default https://graph.microsoft.com/v1.0)")
        )
    return exc


class GraphSource:
    name = "entra"

    def __init__(self, client: Any, mapping: SyncMapping):
        self.client = client
        self.mapping = mapping
        self.select, self.expand_manager = mapping.graph_select()
        self.expand = [MANAGER_EXPAND] if self.expand_manager else None
        self.calls: dict[str, int] = {}

    async def fetch_json(
        self,
        op: str,
        info: RequestInformation,
        *,
        before: Callable[[], Awaitable[None]] | None = None,
        sdk_retries: bool = True,
    ) -> dict[str, Any]:
        """One request as raw JSON. ``before`` runs first (pacing); ``sdk_retries=False`` switches the
        SDK's retry middleware off for this request (it retries 429s without waiting where no
        ``Retry-After`` comes back)."""
        if not sdk_retries:
            info.add_request_options([RetryHandlerOption(delay=0, max_retries=0, should_retry=False)])
        if before is not None:
            await before()
        self.calls[op] = self.calls.get(op, 0) + 1
        try:
            raw = await self.client.request_adapter.send_primitive_async(info, "bytes", ERRORS)
        except Exception as exc:
            translated = _translate(op, exc)
            if translated is exc:
                raise
            raise translated from exc
        return dict(json.loads(raw)) if raw else {}

    def link(self, url: str, method: Method = Method.GET) -> RequestInformation:
        """A request for a link Graph handed back (next or delta link), used as it is: set as the
        URL, not expanded as a template."""
        info = RequestInformation()
        info.http_method = method
        info.url = url
        info.headers.try_add("Accept", "application/json")
        return info

    async def pages(self, op: str, info: RequestInformation, **options: Any) -> AsyncIterator[list[dict[str, Any]]]:
        """The ``value`` of each page, following ``@odata.nextLink`` (``options`` as for fetch_json)."""
        page = await self.fetch_json(op, info, **options)
        while True:
            yield list(page.get("value", []))
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return
            page = await self.fetch_json(op, self.link(str(next_link)), **options)

    # -- users -------------------------------------------------------------------------------------

    async def read(self, source_id: str) -> Identity:
        """The user as Entra has it now, classified (a deleted one too)."""
        builder = self.client.users.by_user_id(source_id)
        params = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=self.select, expand=self.expand)
        try:
            props = await self.fetch_json(
                "users.get", builder.to_get_request_information(RequestConfiguration(query_parameters=params))
            )
        except NotFound:
            return await self._deleted(source_id)
        props.pop("@odata.context", None)
        # A disabled user is a leaver whatever its groups: the membership read is needed only to
        # decide scope and entitlements for an enabled one.
        can_sign_in = enabled(props)
        wanted = can_sign_in and self.mapping.relevant_groups
        groups = await self.relevant_groups_of(source_id) if wanted else frozenset()
        state = classify(can_sign_in, props, groups, self.mapping.scope)
        return Identity(source_id, state, props, groups, source=self.name)

    async def _deleted(self, source_id: str) -> Identity:
        builder = self.client.directory.deleted_items.by_directory_object_id(source_id)
        try:
            props = await self.fetch_json("deletedItems.get", builder.to_get_request_information())
        except NotFound:
            return Identity(source_id, SourceState.HARD_DELETED, source=self.name)
        props.pop("@odata.context", None)
        return Identity(source_id, SourceState.SOFT_DELETED, props, source=self.name)

    async def identities(self, page_size: int = 999) -> AsyncIterator[list[Identity]]:
        """Every user, classified, a page at a time: the relevant group memberships are read first
        (one paging per group), so no user costs a call of its own."""
        groups_of = await self.relevant_memberships()
        async for page in self.list_users(page_size):
            out = []
            for user in page:
                source_id = str(user["id"])
                groups = frozenset(groups_of.get(source_id, ()))
                state = classify(enabled(user), user, groups, self.mapping.scope)
                out.append(Identity(source_id, state, user, groups, source=self.name))
            yield out

    async def changed(self, cursor: str | None) -> tuple[set[str], str]:
        """Users changed since ``cursor`` (every user for None), and the delta link to go on from."""
        return await self.users_delta(cursor)

    async def list_users(self, page_size: int = 999) -> AsyncIterator[list[dict[str, Any]]]:
        """Every user, a page at a time, with the mapping's ``$select`` (and the manager's fields)."""
        builder = self.client.users
        params = builder.UsersRequestBuilderGetQueryParameters(select=self.select, top=page_size, expand=self.expand)
        page = await self.fetch_json(
            "users.list", builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        )
        while True:
            yield list(page.get("value", []))
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return
            page = await self.fetch_json("users.list", self.link(str(next_link)))

    async def find_ids(self, key: str) -> list[str]:
        """Ids of the users ``key`` names: an object id, else a UPN, else a mail address (Graph
        compares both without case; the value is an escaped OData string)."""
        key = key.strip()
        if GUID.fullmatch(key):
            return [key.lower()]
        builder = self.client.users
        for prop in ("userPrincipalName", "mail"):
            params = builder.UsersRequestBuilderGetQueryParameters(
                filter=f"{prop} eq {odata_string(key)}", select=["id"], top=10
            )
            page = await self.fetch_json(
                "users.list", builder.to_get_request_information(RequestConfiguration(query_parameters=params))
            )
            ids = sorted(str(u["id"]) for u in page.get("value", []) if u.get("id"))
            if ids:
                return ids
        return []

    async def relevant_groups_of(self, entra_id: str) -> frozenset[str]:
        """The mapping's relevant groups that the user is a member of, directly or nested."""
        builder = self.client.users.by_user_id(entra_id).transitive_member_of
        params = builder.TransitiveMemberOfRequestBuilderGetQueryParameters(select=["id"], top=999)
        info = builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        relevant = self.mapping.relevant_groups
        found: set[str] = set()
        async for item in self._pages("users.transitiveMemberOf", info):
            if item.get("@odata.type", GROUP_TYPE) == GROUP_TYPE and str(item.get("id")) in relevant:
                found.add(str(item["id"]))
        return frozenset(found)

    async def transitive_user_members(self, group_id: str) -> set[str]:
        """Users in the group, directly or through nested groups. Raises :class:`GroupNotFound`
        (permanent) when Entra ID has no such group."""
        return await self._transitive_members(group_id, USER_TYPE)

    async def nested_groups(self, group_id: str) -> set[str]:
        """The groups nested inside ``group_id``, at any depth (:class:`GroupNotFound` as above)."""
        return await self._transitive_members(group_id, GROUP_TYPE)

    async def _transitive_members(self, group_id: str, odata_type: str) -> set[str]:
        builder = self.client.groups.by_group_id(group_id).transitive_members
        params = builder.TransitiveMembersRequestBuilderGetQueryParameters(select=["id"], top=999)
        info = builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        try:
            return {
                str(item["id"])
                async for item in self._pages("groups.transitiveMembers", info)
                if item.get("@odata.type") == odata_type
            }
        except NotFound as exc:
            raise GroupNotFound(group_id, "groups.transitiveMembers", self.mapping) from exc

    async def read_group(self, group_id: str) -> dict[str, Any] | None:
        """The group's ``id`` and ``displayName``, or ``None`` when Entra ID has no such group."""
        builder = self.client.groups.by_group_id(group_id)
        params = builder.GroupItemRequestBuilderGetQueryParameters(select=["id", "displayName"])
        info = builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        try:
            group = await self.fetch_json("groups.get", info)
        except NotFound:
            return None
        group.pop("@odata.context", None)
        return group

    async def relevant_memberships(self) -> dict[str, set[str]]:
        """User id -> the mapping's relevant groups it belongs to (nested too), one paging per group."""
        groups_of: dict[str, set[str]] = {}
        for group_id in sorted(self.mapping.relevant_groups):
            for user_id in await self.transitive_user_members(group_id):
                groups_of.setdefault(user_id, set()).add(group_id)
        return groups_of

    async def _pages(self, op: str, info: RequestInformation) -> AsyncIterator[dict[str, Any]]:
        async for page in self.pages(op, info):
            for item in page:
                yield item

    # -- groups delta ------------------------------------------------------------------------------

    async def groups_delta(self, delta_link: str | None) -> GroupDeltaPage:
        """Follow one groups-delta round from ``delta_link`` (or a full round) to its delta link."""
        if delta_link:
            info = self.link(delta_link)
        else:
            builder = self.client.groups.delta
            params = builder.DeltaRequestBuilderGetQueryParameters(select=["id", "displayName", "members"])
            info = builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        result = GroupDeltaPage()
        page = await self.fetch_json("groups.delta", info)
        while True:
            for group in page.get("value", []):
                gid = str(group["id"])
                if "@removed" in group:
                    result.deleted_groups.add(gid)
                    continue
                for member in group.get("members@delta", []):
                    mid = str(member["id"])
                    if member.get("@odata.type") == GROUP_TYPE:
                        result.nested_groups.add(mid)
                    bucket = result.removed if "@removed" in member else result.added
                    bucket.setdefault(gid, set()).add(mid)
            if page.get("@odata.deltaLink"):
                result.delta_link = str(page["@odata.deltaLink"])
                return result
            next_link = page.get("@odata.nextLink")
            if not next_link:
                raise TransientError("Graph groups.delta: a page had neither a next nor a delta link")
            page = await self.fetch_json("groups.delta", self.link(str(next_link)))

    async def users_delta(self, delta_link: str | None) -> tuple[set[str], str]:
        """Ids of users changed since ``delta_link`` (every user for a full round), and the next link."""
        if delta_link:
            info = self.link(delta_link)
        else:
            builder = self.client.users.delta
            params = builder.DeltaRequestBuilderGetQueryParameters(select=["id"])
            info = builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        users: set[str] = set()
        page = await self.fetch_json("users.delta", info)
        while True:
            users.update(str(u["id"]) for u in page.get("value", []))
            if page.get("@odata.deltaLink"):
                return users, str(page["@odata.deltaLink"])
            next_link = page.get("@odata.nextLink")
            if not next_link:
                raise TransientError("Graph users.delta: a page had neither a next nor a delta link")
            page = await self.fetch_json("users.delta", self.link(str(next_link)))

    async def latest_delta_link(self, resource: str) -> str:
        """A delta link that starts from now (``$deltatoken=latest``), for a resource with no cursor."""
        if resource not in {"users", "groups"}:
            raise ValueError(f"no delta for {resource!r}")
        base = str(self.client.request_adapter.base_url).rstrip("/")
        page = await self.fetch_json(f"{resource}.delta", self.link(f"{base}/{resource}/delta()?$deltatoken=latest"))
        link = page.get("@odata.deltaLink")
        if not link:
            raise TransientError(f"Graph {resource}.delta: no delta link for $deltatoken=latest")
        return str(link)

    # -- subscriptions -----------------------------------------------------------------------------

    async def list_subscriptions(self) -> list[dict[str, Any]]:
        info = self.client.subscriptions.to_get_request_information()
        return [item async for item in self._pages("subscriptions.list", info)]

    async def create_subscription(
        self, resource: str, notification_url: str, lifecycle_url: str, client_state: str, minutes: int
    ) -> dict[str, Any]:
        body = Subscription(
            change_type="updated,deleted",
            notification_url=notification_url,
            lifecycle_notification_url=lifecycle_url,
            resource=resource,
            expiration_date_time=_expiry(minutes),
            client_state=client_state,
        )
        try:
            self.calls["subscriptions.create"] = self.calls.get("subscriptions.create", 0) + 1
            created = await self.client.subscriptions.post(body)
        except Exception as exc:
            raise _translate("subscriptions.create", exc) from exc
        return _subscription_dict(created)

    async def renew_subscription(self, subscription_id: str, minutes: int) -> dict[str, Any]:
        try:
            self.calls["subscriptions.renew"] = self.calls.get("subscriptions.renew", 0) + 1
            renewed = await self.client.subscriptions.by_subscription_id(subscription_id).patch(
                Subscription(expiration_date_time=_expiry(minutes))
            )
        except Exception as exc:
            raise _translate("subscriptions.renew", exc) from exc
        return _subscription_dict(renewed)

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        try:
            self.calls["subscriptions.reauthorize"] = self.calls.get("subscriptions.reauthorize", 0) + 1
            await self.client.subscriptions.by_subscription_id(subscription_id).reauthorize.post()
        except Exception as exc:
            raise _translate("subscriptions.reauthorize", exc) from exc

    async def delete_subscription(self, subscription_id: str) -> None:
        try:
            await self.client.subscriptions.by_subscription_id(subscription_id).delete()
        except Exception as exc:
            translated = _translate("subscriptions.delete", exc)
            if not isinstance(translated, NotFound):
                raise translated from exc


def _expiry(minutes: int) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=min(minutes, SUBSCRIPTION_MAX_MINUTES))


def _subscription_dict(sub: Any) -> dict[str, Any]:
    if sub is None:
        raise TransientError("Graph subscriptions: empty answer")
    expires = sub.expiration_date_time
    return {
        "id": str(sub.id),
        "resource": str(sub.resource),
        "expirationDateTime": expires.isoformat() if expires is not None else "",
        "notificationUrl": sub.notification_url,
        "lifecycleNotificationUrl": sub.lifecycle_notification_url,
    }
