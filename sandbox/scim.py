"""A SCIM 2.0 application on loopback, served by the real scim2-server.

The SCIM target is tested against a server this repository did not write: every SCIM request is
answered by scim2-server (its ``WSGIApplication`` and ``ScimHandler`` over an ``InMemoryStorage``,
the provider of :func:`scim2_server.utils.load_default_provider`). This layer only stands in front
of it, on the ground of :mod:`sandbox.server`: it authenticates, names routes, logs, limits,
injects faults and applies the profile::

    app = ScimApp(profile="entra").start()
    httpx.get(app.base_url + "/Users", headers={"Authorization": f"Bearer {app.token}"})

Route names (request log, rate limits, fault rules): ``scim.discovery`` (ServiceProviderConfig,
Schemas, ResourceTypes), ``scim.users.create|get|list|replace|patch|delete``, the same for
``scim.groups.*``, and ``scim.bulk``. ``POST /Users/.search`` counts as ``scim.users.list`` (a read).

Authentication: ``Authorization: Bearer <token>``, compared in constant time; anything else gets
a 401 SCIM error with ``WWW-Authenticate``. ``/ServiceProviderConfig`` is public, as scim2-server
serves it and RFC 7643 §5 recommends (a client reads its authentication schemes there).

Profiles, chosen at construction and switched with :meth:`ScimApp.set_profile` (the resources
stay):

* ``full``: scim2-server's defaults: PATCH, PUT, bulk, ETags (``If-Match`` answers 412 on a
  stale version), filter, sort, change password.
* ``entra``: the shape of Entra's own SCIM API: PATCH only (PUT answers 405 with ``Allow: DELETE,
  GET, PATCH``, the way scim2-server answers any method an endpoint does not serve; bulk answers
  scim2-server's 501), no ETags (no ``ETag`` header, no ``meta.version``, conditional headers are
  ignored as a server without versions does), no sort (501), filters with ``eq`` and ``and`` only
  (anything else is a 400 ``invalidFilter``).

* ``put-only``: ``full`` without PATCH (ServiceProviderConfig says ``patch: false``; PATCH answers
  405 with ``Allow: DELETE, GET, PUT``): a client must replace whole resources, with ETags.

``externalid_filter=False`` (any profile) refuses any filter on ``externalId`` with a 400
``invalidFilter``: a server where a client must fall back to ``userName``.

``paging`` (any profile) is how lists page, as the ``pagination`` block of the
ServiceProviderConfig announces (RFC 9865) and scim2-server serves: ``index`` (``startIndex`` and
``count`` only, no ``pagination`` block: RFC 7644's default), ``cursor`` (cursors only, sealed by
scim2-server; a ``startIndex`` answers 501) or ``both`` (either; index by default).
``max_page_size`` announces and enforces a page limit.

:meth:`ScimApp.break_listing` makes the unfiltered user listing misbehave the way some servers do,
from its n-th page on: ``repeat`` answers that page with the page before it again (its resources,
``startIndex`` and ``nextCursor``), ``short`` answers half of that page while ``totalResults``
still counts the rest, and the users left out are never listed (later pages start after them).

Every request with a body is counted by its media type (:meth:`ScimApp.media_types`).

The ServiceProviderConfig says what the server then does: ``patch``, ``bulk``, ``etag``,
``filter``, ``sort`` and ``changePassword`` follow the profile, and scim2-server enforces the ones
it knows (bulk, ETags, sort); this layer enforces the rest (PUT, filter operators, externalId).

Error bodies are scim2-server's ``Error`` (``schemas``, ``status`` as a string, ``scimType``,
``detail``) for every answer, including 401, 429 (with ``Retry-After``) and injected faults.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    Error,
    ETag,
    Meta,
    Pagination,
    Patch,
    Path,
    Resource,
    SCIMException,
    ScimFilter,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    UniquenessException,
)
from scim2_models.path import (
    AttrPath,
    CompareOperator,
    Comparison,
    FilterNode,
    LogicalExpr,
    LogicalOperator,
    Not,
    Present,
    ValuePath,
)
from scim2_server.applications.wsgi import WSGIApplication
from scim2_server.errors import MethodNotAllowedException
from scim2_server.memory import InMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.service import ScimService
from scim2_server.utils import load_default_provider, load_default_service_provider_config, parametrize

from .server import Emulator, HttpError, Request, Response

FULL = "full"
ENTRA = "entra"
PUT_ONLY = "put-only"
PROFILES = (FULL, ENTRA, PUT_ONLY)
INDEX = "index"
CURSOR = "cursor"
BOTH = "both"
PAGINGS = (INDEX, CURSOR, BOTH)
LISTING_FAULTS = ("repeat", "short")
CURSOR_SECRET = "sandbox-scim-cursor-secret"  # seals scim2-server's cursors: a loopback test server's

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

#: The scimType values of RFC 7644 Table 9: an ``HttpError`` whose code is one of them carries it.
SCIM_TYPES = frozenset(
    {
        "invalidFilter",
        "tooMany",
        "uniqueness",
        "mutability",
        "invalidSyntax",
        "invalidPath",
        "noTarget",
        "invalidValue",
        "invalidVers",
        "sensitive",
    }
)

BEARER_SCHEME = AuthenticationScheme(
    type=AuthenticationScheme.Type.oauthbearertoken,
    name="OAuth Bearer Token",
    description="A long-lived bearer token in the Authorization header.",
    primary=True,
)

_ENTRA_ALLOWED_ON_RESOURCE = ("DELETE", "GET", "PATCH")
_PUT_ONLY_ALLOWED_ON_RESOURCE = ("DELETE", "GET", "PUT")
_CONDITIONAL_HEADERS = frozenset({"if-match", "if-none-match"})


@functools.cache
def _default_provider() -> ScimProvider:
    """RFC 7643's schemas and resource types, built once: the models are immutable and shared."""
    return load_default_provider()


def service_provider_config(
    profile: str, paging: str = INDEX, max_page_size: int | None = None
) -> ServiceProviderConfig:
    """What ``/ServiceProviderConfig`` announces under ``profile`` and ``paging``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown SCIM profile {profile!r}; one of {PROFILES}")
    if paging not in PAGINGS:
        raise ValueError(f"unknown SCIM paging {paging!r}; one of {PAGINGS}")
    config = load_default_service_provider_config()
    if paging != INDEX or max_page_size is not None:
        method = Pagination.DefaultPaginationMethod
        config.pagination = Pagination(
            cursor=paging != INDEX,
            index=paging != CURSOR,
            default_pagination_method=method.cursor if paging == CURSOR else method.index,
            default_page_size=min(100, max_page_size or 100),
            max_page_size=max_page_size or 1000,
            cursor_timeout=3600 if paging != INDEX else None,
        )
    config.authentication_schemes = [BEARER_SCHEME]
    if profile == ENTRA:
        config.bulk = Bulk(supported=False, max_operations=0, max_payload_size=0)
        config.etag = ETag(supported=False)
        config.sort = Sort(supported=False)
        config.change_password = ChangePassword(supported=False)
    if profile == PUT_ONLY:
        config.patch = Patch(supported=False)
    return config


def _attr_paths(node: FilterNode) -> Iterator[AttrPath]:
    if isinstance(node, Comparison | Present):
        yield node.attr_path
    elif isinstance(node, Not):
        yield from _attr_paths(node.expr)
    elif isinstance(node, LogicalExpr):
        for term in node.terms:
            yield from _attr_paths(term)
    elif isinstance(node, ValuePath):
        yield node.attr_path
        yield from _attr_paths(node.val_filter)


def _entra_refusal(node: FilterNode) -> str | None:
    """What the entra profile refuses in a filter: anything but ``eq`` comparisons joined by ``and``."""
    if isinstance(node, Comparison):
        return None if node.op == CompareOperator.eq else f"the {node.op.value!r} operator"
    if isinstance(node, LogicalExpr):
        if node.op != LogicalOperator.and_:
            return f"the {node.op.value!r} operator"
        return next((problem for term in node.terms if (problem := _entra_refusal(term))), None)
    if isinstance(node, Present):
        return "the 'pr' operator"
    if isinstance(node, Not):
        return "the 'not' operator"
    return "a value path"


def filter_problem(expression: str, *, profile: str, externalid_filter: bool) -> str | None:
    """Why this server refuses a filter (the ``detail`` of a 400 ``invalidFilter``), or ``None``.

    A filter that does not parse is left to scim2-server, which answers its own ``invalidFilter``.
    """
    try:
        ast = ScimFilter(expression).ast
    except SCIMException:
        return None
    if not externalid_filter and any(p.attr.casefold() == "externalid" for p in _attr_paths(ast)):
        return "This service provider cannot filter on externalId."
    if profile == ENTRA:
        refused = _entra_refusal(ast)
        if refused is not None:
            return f"Filters support only 'eq' comparisons joined by 'and', not {refused}."
    return None


@dataclass
class _BrokenListing:
    """How the unfiltered user listing misbehaves (:meth:`ScimApp.break_listing`)."""

    kind: str
    page: int  # the n-th page asked for (1-based) from which it misbehaves
    asked: int = 0  # pages asked for so far
    lost: int = 0  # users the short pages left out: later index pages start after them
    last: bytes = b""  # the body of the page answered before


class ScimApp(Emulator):
    """A SCIM 2.0 service provider on loopback, answered by scim2-server.

    ``token`` is the one bearer token accepted. ``profile`` is ``full`` or ``entra`` (see the
    module documentation); ``externalid_filter=False`` refuses filters on ``externalId``.
    """

    api_prefix = "/scim/v2"
    name = "scim"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "sandbox-scim-token",
        profile: str = FULL,
        externalid_filter: bool = True,
        fault_seed: int = 0,
        paging: str = INDEX,
        max_page_size: int | None = None,
    ):
        super().__init__(host, port, fault_seed)
        if not token:
            raise ValueError("the SCIM application needs a bearer token")
        self.token = token
        self._defaults = (profile, externalid_filter, paging)
        self.max_page_size = max_page_size
        self._paging = paging
        self._storage = InMemoryStorage()
        self._application = self._build_application(profile)
        self._profile = profile
        self.externalid_filter = externalid_filter
        self._broken: _BrokenListing | None = None
        self._media_types: Counter[tuple[str, str]] = Counter()
        self._register_routes()
        self.add_control_route("PUT", "/_control/profile", self._control_profile)

    # -- profile -------------------------------------------------------------------------------

    def _build_application(self, profile: str) -> WSGIApplication:
        base = _default_provider()
        provider = ScimProvider(
            models=base.models,
            resource_types=base.resource_types,
            config=service_provider_config(profile, self._paging, self.max_page_size),
            policy=base.policy,
        )
        return WSGIApplication(self._storage, provider, ScimService(provider, secret=CURSOR_SECRET))

    def set_profile(self, profile: str, externalid_filter: bool | None = None, paging: str | None = None) -> None:
        """Serve under ``profile`` from now on; ``externalid_filter`` and ``paging`` change only
        when given.

        The stored resources stay: the new scim2-server application serves the same storage.
        """
        with self.lock:
            if paging is not None:
                self._paging = paging
            self._application = self._build_application(profile)
            self._profile = profile
            if externalid_filter is not None:
                self.externalid_filter = externalid_filter

    @property
    def paging(self) -> str:
        """``index``, ``cursor`` or ``both`` (see the module documentation)."""
        return self._paging

    def break_listing(self, kind: str | None, page: int = 2) -> None:
        """From the ``page``-th page asked for on, the unfiltered user listing misbehaves as
        ``kind`` says (``repeat`` or ``short``, see the module documentation); ``None`` mends it."""
        if kind is not None and kind not in LISTING_FAULTS:
            raise ValueError(f"unknown listing fault {kind!r}; one of {LISTING_FAULTS}")
        with self.lock:
            self._broken = None if kind is None else _BrokenListing(kind, max(1, page))

    def media_types(self) -> dict[tuple[str, str], int]:
        """Requests with a body so far, by (route, ``Content-Type`` as sent)."""
        with self.lock:
            return dict(self._media_types)

    def dispatch(self, request: Request) -> Response:
        response = super().dispatch(request)
        if request.body and request.route:
            with self.lock:
                self._media_types[(request.route, request.headers.get("content-type", ""))] += 1
        return response

    @property
    def profile(self) -> str:
        """``full`` or ``entra``; change it with :meth:`set_profile`, which also changes what
        ``/ServiceProviderConfig`` says."""
        return self._profile

    @property
    def application(self) -> WSGIApplication:
        """The scim2-server application that answers the requests (for its service and storage)."""
        return self._application

    # -- vendor hooks ---------------------------------------------------------------------------

    def authenticate(self, request: Request) -> None:
        if request.method == "GET" and request.path == self.api_prefix + "/ServiceProviderConfig":
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(401, "unauthorized", "A bearer token is required.")
        if not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            raise HttpError(401, "unauthorized", "The bearer token is not valid.")

    def error_response(self, error: HttpError) -> Response:
        scim_type = error.code if error.code in SCIM_TYPES else None
        exception = SCIMException.from_error(Error(status=error.status, scim_type=scim_type, detail=error.message))
        response = self._scim_error(exception)
        response.headers.update(error.headers)
        return response

    def _scim_error(self, exception: SCIMException) -> Response:
        """An error answered the way scim2-server answers its own (``Allow``, ``WWW-Authenticate``)."""
        return _to_response(self._application.service.error_response(exception))

    # -- routes --------------------------------------------------------------------------------

    def _register_routes(self) -> None:
        p = self.api_prefix
        for endpoint in ("ServiceProviderConfig", "Schemas", "ResourceTypes"):
            self.add_route("GET", f"{p}/{endpoint}(?:/[^/]+)?", "scim.discovery", self._forward)
        for kind, endpoint in (("users", "Users"), ("groups", "Groups")):
            resource = f"{p}/{endpoint}/(?P<id>[^/]+)"
            self.add_route("POST", f"{p}/{endpoint}", f"scim.{kind}.create", self._forward)
            self.add_route("GET", f"{p}/{endpoint}", f"scim.{kind}.list", self._search)
            self.add_route("POST", rf"{p}/{endpoint}/\.search", f"scim.{kind}.list", self._search_with_body, False)
            self.add_route("GET", resource, f"scim.{kind}.get", self._forward)
            self.add_route("PUT", resource, f"scim.{kind}.replace", self._replace)
            self.add_route("PATCH", resource, f"scim.{kind}.patch", self._patch)
            self.add_route("DELETE", resource, f"scim.{kind}.delete", self._forward)
        self.add_route("POST", f"{p}/Bulk", "scim.bulk", self._forward)

    def _forward(self, request: Request, query: dict[str, str] | None = None) -> Response:
        """Hand the request to scim2-server (with ``query`` instead of its own, when given) and
        send back what it answers."""
        headers = [
            (name, value)
            for name, value in request.headers.items()
            if not (self.profile == ENTRA and name in _CONDITIONAL_HEADERS)
        ]
        scim_request = ScimRequest(
            method=request.method,
            base_url=self.base_url,
            path=unquote(request.path.removeprefix(self.api_prefix)),
            query=_query(request) if query is None else query,
            headers=headers,
            body=request.body,
        )
        return _to_response(self._application.serve(scim_request))

    def _search(self, request: Request) -> Response:
        query = _query(request)
        self._check_filter(query.get("filter"))
        broken = self._broken
        if broken is None or request.route != "scim.users.list" or "filter" in query:
            return self._forward(request)
        with self.lock:
            broken.asked += 1
            if broken.kind == "repeat" and broken.asked >= broken.page and broken.last:
                return Response(200, broken.last, {"Content-Type": "application/scim+json"})
            if broken.lost and "startIndex" in query:
                query["startIndex"] = str(int(query["startIndex"]) + broken.lost)
            response = self._forward(request, query)
            if broken.kind == "short" and broken.asked >= broken.page and response.status == 200:
                listed = json.loads(response.body)
                resources = listed.get("Resources") or []
                kept = resources[: len(resources) // 2]
                broken.lost += len(resources) - len(kept)
                response.body = json.dumps(listed | {"Resources": kept, "itemsPerPage": len(kept)}).encode()
            broken.last = response.body
            return response

    def _search_with_body(self, request: Request) -> Response:
        try:
            payload = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None  # scim2-server answers the syntax error
        if isinstance(payload, dict):
            expression = next((v for k, v in payload.items() if k.casefold() == "filter"), None)
            self._check_filter(expression if isinstance(expression, str) else None)
        return self._forward(request)

    def _check_filter(self, expression: str | None) -> None:
        if expression is None:
            return
        problem = filter_problem(expression, profile=self.profile, externalid_filter=self.externalid_filter)
        if problem is not None:
            raise HttpError(400, "invalidFilter", problem)

    def _replace(self, request: Request) -> Response:
        if self.profile == ENTRA:
            detail = "PUT is not supported by this service provider: update the resource with PATCH."
            return self._scim_error(MethodNotAllowedException(allowed=_ENTRA_ALLOWED_ON_RESOURCE, detail=detail))
        return self._forward(request)

    def _patch(self, request: Request) -> Response:
        if self.profile == PUT_ONLY:
            detail = "PATCH is not supported by this service provider: replace the resource with PUT."
            return self._scim_error(MethodNotAllowedException(allowed=_PUT_ONLY_ALLOWED_ON_RESOURCE, detail=detail))
        return self._forward(request)

    # -- helpers for tests ---------------------------------------------------------------------

    def _serve(self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None) -> Any:
        """One request straight to scim2-server (no log, limit or fault); its body, or the SCIM
        error raised as scim2-models' exception (``UniquenessException``, ``NotFoundException``...)."""
        scim_request = ScimRequest(
            method=method,
            base_url=self._location_base(),
            path=path,
            query=dict(query or {}),
            headers={"Content-Type": "application/scim+json"},
            body=b"" if body is None else json.dumps(body).encode(),
        )
        response = self._application.serve(scim_request)
        if response.status >= 400:
            raise SCIMException.from_error(Error.model_validate(response.body))
        return response.body

    def _location_base(self) -> str:
        return self.base_url if self._httpd is not None else f"http://{self.host}:{self._port}{self.api_prefix}"

    def add_user(
        self, userName: str, externalId: str | None = None, active: bool = True, **attrs: Any
    ) -> dict[str, Any]:
        """A pre-existing user, created by scim2-server from a SCIM payload (``attrs`` are more
        attributes in SCIM's spelling, e.g. ``displayName``, ``emails``, an extension URN)."""
        payload: dict[str, Any] = {"schemas": [USER_SCHEMA], "userName": userName, "active": active, **attrs}
        if externalId is not None:
            payload["externalId"] = externalId
        if any(key.startswith("urn:") for key in attrs):
            payload["schemas"] = [USER_SCHEMA, *(key for key in attrs if key.startswith("urn:"))]
        return cast(dict[str, Any], self._serve("POST", "/Users", payload))

    def add_group(self, displayName: str, members: Iterable[str] = (), **attrs: Any) -> dict[str, Any]:
        """A pre-existing group with ``members`` (resource ids), created by scim2-server."""
        payload = {"schemas": [GROUP_SCHEMA], "displayName": displayName, **attrs}
        payload["members"] = [{"value": member} for member in members]
        return cast(dict[str, Any], self._serve("POST", "/Groups", payload))

    def edit_user(self, user_id: str, **attrs: Any) -> dict[str, Any]:
        """Change a user the way an administrator of the application would (a PUT straight to
        scim2-server, whatever the profile): ``attrs`` replace top-level attributes."""
        current = dict(self._serve("GET", f"/Users/{user_id}"))
        current.pop("meta", None)
        current.pop("groups", None)
        return cast(dict[str, Any], self._serve("PUT", f"/Users/{user_id}", current | attrs))

    def users(self) -> list[dict[str, Any]]:
        """Every user as a client reads it, ordered by userName (scim2-server publishes each one:
        about half a millisecond a user; :meth:`snapshot` counts without it)."""
        return sorted(self._published("User"), key=lambda u: (str(u["userName"]).casefold(), u["id"]))

    def groups(self) -> list[dict[str, Any]]:
        """Every group as a client reads it, ordered by displayName."""
        return sorted(self._published("Group"), key=lambda g: (str(g["displayName"]).casefold(), g["id"]))

    def _published(self, resource_type: str) -> list[dict[str, Any]]:
        with self._storage.lock:
            stored = [
                r for r in self._storage.resources if r.meta is not None and r.meta.resource_type == resource_type
            ]
        service = self._application.service
        base_url = self._location_base()
        with service.provider:
            return [
                service.publish(base_url, resource).model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
                for resource in stored
            ]

    def user_by_username(self, name: str) -> dict[str, Any] | None:
        """The user whose userName equals ``name`` under scim2-server's comparison (case-insensitive)."""
        return self._only("Users", f"userName eq {ScimFilter.quote(name)}")

    def group_by_name(self, displayName: str) -> dict[str, Any] | None:
        """The group with this displayName; ``ValueError`` when several share it (RFC 7643 allows it)."""
        return self._only("Groups", f"displayName eq {ScimFilter.quote(displayName)}")

    def _only(self, endpoint: str, expression: str) -> dict[str, Any] | None:
        found = self._serve("GET", f"/{endpoint}", query={"filter": expression})
        resources: list[dict[str, Any]] = found.get("Resources", [])
        if len(resources) > 1:
            raise ValueError(f"{len(resources)} {endpoint.lower()} match {expression}")
        return resources[0] if resources else None

    def members_of(self, group_id: str) -> set[str]:
        """The member ids of a group (``NotFoundException`` when there is no such group)."""
        group = self._serve("GET", f"/Groups/{group_id}")
        return {member["value"] for member in group.get("members", [])}

    def add_users(self, payloads: Iterable[Mapping[str, Any]], *, validated_shape: bool = False) -> list[str]:
        """Many pre-existing users at once, fast; their ids in order.

        Each payload is validated by scim2-models as a creation request and stored in
        scim2-server's storage in one load (``InMemoryStorage.resources``), with the ids, dates and
        versions the storage itself hands out. That load skips the storage's uniqueness check, so
        ``userName`` clashes are checked here first (``UniquenessException``). With
        ``validated_shape`` only the first payload gets the creation-request checks (required and
        read-only attributes) and the others are checked for types only: for payloads of one shape
        (:meth:`seed_users`), that check cannot differ and costs most of the time.
        """
        service = self._application.service
        resource_type = service.get_resource_type("User")
        model = service.get_model(resource_type)
        user_name = parametrize(Path, model)("userName").resolve()
        assert user_name is not None
        with service.provider:
            resources: list[Resource[Any]] = []
            for payload in payloads:
                context = None if validated_shape and resources else Context.RESOURCE_CREATION_REQUEST
                resources.append(model.model_validate(payload, scim_ctx=context))
            with self._storage.lock:
                existing = self._storage.resources
                taken = {
                    user_name.comparable(cast(Any, r).user_name)
                    for r in existing
                    if r.meta is not None and r.meta.resource_type == "User"
                }
                now = self._storage.clock()
                for resource in resources:
                    key = user_name.comparable(cast(Any, resource).user_name)
                    if key in taken:
                        raise UniquenessException(detail=f"userName {cast(Any, resource).user_name!r} is taken")
                    taken.add(key)
                    resource.id = self._storage.generate_id(resource_type, resource)
                    resource.meta = Meta(
                        resource_type=resource_type.name,
                        created=now,
                        last_modified=now,
                        version=self._storage.next_version(),
                    )
                self._storage.resources = [*existing, *resources]
        return [cast(str, r.id) for r in resources]

    def seed_users(
        self,
        n: int,
        *,
        user_name: str = "user{i:05d}@example.com",
        external_id: str | None = None,
        active: bool = True,
        start: int = 0,
    ) -> list[str]:
        """``n`` generated users (``user_name`` and ``external_id`` are templates of ``{i}``, from
        ``start``; no externalId by default, as users the application had before any sync); their
        ids in order. 10,000 take about two seconds (see :meth:`add_users`)."""

        def payload(i: int) -> dict[str, Any]:
            name = user_name.format(i=i)
            user: dict[str, Any] = {
                "schemas": [USER_SCHEMA],
                "userName": name,
                "active": active,
                "displayName": f"User {i}",
                "name": {"givenName": "User", "familyName": str(i)},
                "emails": [{"value": name, "type": "work", "primary": True}],
            }
            if external_id is not None:
                user["externalId"] = external_id.format(i=i)
            return user

        return self.add_users((payload(i) for i in range(start, start + n)), validated_shape=True)

    # -- state hooks (control endpoints) -------------------------------------------------------

    def reset(self) -> None:
        """Forget every resource and media type counted, mend the listing; the profile,
        externalid_filter and paging return to the constructor's."""
        with self.lock:
            self._storage = InMemoryStorage()
            self._broken = None
            self._media_types.clear()
            profile, externalid_filter, paging = self._defaults
            self.set_profile(profile, externalid_filter, paging)

    def seed(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Replace all resources. ``spec``: ``count`` generated users (:meth:`seed_users`),
        ``users`` (:meth:`add_user` keyword arguments), ``groups`` (``displayName`` and
        ``members`` as userNames)."""
        with self.lock:
            self.reset()
            self.seed_users(int(spec.get("count", 0)))
            for user in spec.get("users", []):
                self.add_user(**user)
            for group in spec.get("groups", []):
                ids = []
                for name in group.get("members", []):
                    member = self.user_by_username(name)
                    if member is None:
                        raise ValueError(f"group {group['displayName']!r}: no user {name!r}")
                    ids.append(member["id"])
                self.add_group(group["displayName"], ids)
            return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        with self._storage.lock:
            kinds = [r.meta.resource_type if r.meta else None for r in self._storage.resources]
        return {
            "profile": self.profile,
            "externalid_filter": self.externalid_filter,
            "paging": self.paging,
            "users": kinds.count("User"),
            "groups": kinds.count("Group"),
        }

    def _control_profile(self, request: Request) -> Response:
        body = request.json()
        self.set_profile(body["profile"], body.get("externalid_filter"), body.get("paging"))
        return Response.json(self.snapshot())


def _query(request: Request) -> dict[str, str]:
    """The query as scim2-server's WSGI application reads it: the last of repeated names wins."""
    return dict(parse_qsl(urlsplit(request.raw_path).query, keep_blank_values=True))


def _to_response(response: ScimResponse) -> Response:
    body = b"" if response.body is None else json.dumps(response.body, separators=(",", ":")).encode()
    return Response(int(response.status), body, dict(response.headers))
