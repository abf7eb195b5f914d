"""Auth0 Management API v2 emulator, wire-compatible with auth0-python 6.x.

Start it in-process and point the generated client at it::

    emulator = Auth0Emulator().start()
    client = Auth0(base_url=emulator.base_url, token=emulator.static_token)

What it models (facts from Auth0's documentation; the shape of every answer follows what the SDK
parses):

* ``POST /oauth/token`` (client credentials, JSON or form body) at the origin; management calls
  need ``Authorization: Bearer`` with an issued token or the static token.
* Users: create (database connections only, custom ``user_id`` stored as ``auth0|<id>``, emails
  stored lower-case, 409 on a duplicate), get, update (metadata merged one level deep, ``null``
  removes a key), delete; ``fields`` / ``include_fields``; ``users-by-email`` (exact and
  case-sensitive); search with the Lucene subset of :mod:`sandbox.lucene`, at most 1,000 results
  reachable, eventually consistent after ``search_lag_s``.
* Roles and role assignments; session and refresh-token revocation (Enterprise-plan features:
  403, or 404 when switched so, on other plans); export and import jobs processed by a background
  worker; export files served gzipped from ``/exports/...`` on loopback without authentication,
  like the pre-signed URL Auth0 hands out.
* Errors in Auth0's shape ``{"statusCode", "error", "message", "errorCode"}``; rate-limit headers
  ``x-ratelimit-limit``, ``-remaining``, ``-reset`` (epoch seconds) on limited routes; Auth0 sends
  no ``Retry-After``, so the presets do not either.

Route names (used by the request log, rate limits and faults) are ``oauth.token``,
``exports.download`` and ``mgmt.<resource>...``; the users write routes are
``mgmt.users.write.create|update|delete`` so one glob (``mgmt.users.write.*``) can stand for
Auth0's "write users" bucket.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import heapq
import io
import itertools
import json
import logging
import random
import secrets
import string
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from . import lucene
from .auth0_tenant import TenantSide
from .server import Emulator, HttpError, RateDecision, RateLimit, Request, Response

log = logging.getLogger("sandbox.auth0")

DATABASE_CONNECTION = "Username-Password-Authentication"
ENTERPRISE_CONNECTION = "entra"
PLANS = ("free", "essentials", "professional", "enterprise")

MAX_PER_PAGE = 100
SEARCH_WINDOW = 1000  # Auth0 lets a search page through the first 1,000 results only
IMPORT_MAX_BYTES = 500 * 1024
IMPORT_MAX_ACTIVE = 2
TOKEN_TTL_S = 86_400
PAGING_MESSAGE = (
    "You can only page through the first 1000 records. "
    "See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation"
)
SCOPES = (
    "read:users update:users delete:users create:users read:users_app_metadata update:users_app_metadata "
    "create:users_app_metadata read:roles create:roles update:roles delete:roles read:role_members "
    "create:role_members delete:role_members read:connections delete:sessions delete:refresh_tokens"
)

#: Per-plan limits as plain data: route-name glob -> RateLimit fields. The first matching glob
#: applies, so the narrower "write users" bucket comes first where a plan has one.
RATE_LIMIT_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    "free": {"mgmt.*": {"burst": 2, "per_second": 2.0, "retry_after": False}},
    "essentials": {"mgmt.users.write.*": {"burst": 20, "per_second": 200 / 60, "retry_after": False}},
    "professional": {"mgmt.users.write.*": {"burst": 20, "per_second": 200 / 60, "retry_after": False}},
    "enterprise": {"mgmt.*": {"burst": 50, "per_second": 16.0, "retry_after": False}},
}


def rate_limit_preset(plan: str) -> dict[str, RateLimit]:
    """The limits of ``plan`` ready for ``emulator.limits.configure(...)``."""
    if plan not in RATE_LIMIT_PRESETS:
        raise ValueError(f"unknown plan {plan!r}; one of {sorted(RATE_LIMIT_PRESETS)}")
    return {glob: RateLimit(**spec) for glob, spec in RATE_LIMIT_PRESETS[plan].items()}


_CREATE_FIELDS = frozenset(
    {
        "connection",
        "email",
        "phone_number",
        "user_metadata",
        "blocked",
        "email_verified",
        "phone_verified",
        "app_metadata",
        "given_name",
        "family_name",
        "name",
        "nickname",
        "picture",
        "user_id",
        "password",
        "verify_email",
        "username",
        "client_id",
    }
)
_UPDATE_FIELDS = (_CREATE_FIELDS - {"user_id"}) | {"verify_phone_number"}
_IMPORT_FIELDS = frozenset(
    {
        "email",
        "email_verified",
        "user_id",
        "given_name",
        "family_name",
        "name",
        "nickname",
        "picture",
        "blocked",
        "username",
        "app_metadata",
        "user_metadata",
        "password_hash",
        "custom_password_hash",
    }
)
_STRING_FIELDS = ("email", "given_name", "family_name", "name", "nickname", "picture", "username", "phone_number")
_BOOL_FIELDS = ("blocked", "email_verified", "phone_verified", "verify_email")
_DEFAULT_EXPORT_FIELDS = ("user_id", "email", "name", "given_name", "family_name", "created_at", "updated_at")

_ALNUM = string.ascii_letters + string.digits


def _now_iso() -> str:
    return _iso(time.time())


def _iso(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _stable_id(prefix: str, seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return prefix + "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:16])


def _gravatar(email: str) -> str:
    digest = hashlib.md5(email.encode(), usedforsecurity=False).hexdigest()
    return f"https://s.gravatar.com/avatar/{digest}?s=480&r=pg&d=https%3A%2F%2Fcdn.auth0.com%2Favatars%2Fdefault.png"


def _merge_metadata(current: dict[str, Any] | None, patch: dict[str, Any]) -> dict[str, Any]:
    """Auth0's rule: top-level keys are merged, ``null`` removes a key, ``{}`` clears all."""
    if not patch:
        return {}
    merged = dict(current or {})
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _project(user: dict[str, Any], fields: list[str] | None, include: bool) -> dict[str, Any]:
    if not fields:
        return user
    wanted = set(fields)
    if include:
        return {k: v for k, v in user.items() if k in wanted}
    return {k: v for k, v in user.items() if k not in wanted}


def _bad_request(message: str, code: str = "invalid_body") -> HttpError:
    return HttpError(400, code, message)


def _not_found_user() -> HttpError:
    return HttpError(404, "inexistent_user", "The user does not exist.")


def _user_exists() -> HttpError:
    return HttpError(409, "auth0_idp_error", "The user already exists.")


class _ImportProblem(Exception):
    def __init__(self, code: str, message: str, path: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path


@dataclass(order=True)
class _QueuedJob:
    due: float
    seq: int
    job_id: str = field(compare=False)
    run: Callable[[], None] = field(compare=False)


class Auth0Emulator(TenantSide, Emulator):
    api_prefix = "/api/v2"
    name = "auth0"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret",
        token: str = "sandbox-auth0-token",
        search_lag_s: float = 0.0,
        fault_seed: int = 0,
        plan: str = "enterprise",
        job_delay_s: float = 0.1,
    ):
        super().__init__(host, port, fault_seed)
        if plan not in PLANS:
            raise ValueError(f"unknown plan {plan!r}; one of {PLANS}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.static_token = token
        self.search_lag_s = float(search_lag_s)
        self.plan = plan
        self.job_delay_s = float(job_delay_s)
        #: feature -> forced status (200 enabled, 403, 404) or None to follow the plan
        self.features: dict[str, int | None] = {"sessions": None, "refresh_tokens": None}
        self._defaults = (plan, self.search_lag_s, self.job_delay_s)
        self._tokens: dict[str, float] = {}
        self._seq = itertools.count()
        self._jobs_cv = threading.Condition(self.lock)
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._init_state()
        self._register_routes()
        self._register_controls()

    # -- state -----------------------------------------------------------------------------

    def _init_state(self) -> None:
        self._generation = getattr(self, "_generation", 0) + 1
        self._ids = random.Random(f"auth0-ids-{self._generation}")
        self._connections: dict[str, dict[str, Any]] = {}
        self._users: dict[str, dict[str, Any]] = {}  # user_id -> user (never mutated once stored)
        self._by_email: dict[str, list[str]] = {}  # stored (lower-case) email -> user ids
        self._by_conn_email: dict[tuple[str, str], str] = {}
        self._index: dict[str, dict[str, Any]] = {}  # what search sees: user_id -> indexed copy
        self._index_seq: dict[str, int] = {}
        self._pending: list[tuple[float, int, str, dict[str, Any] | None]] = []  # heap
        self._roles: dict[str, dict[str, Any]] = {}
        self._user_roles: dict[str, dict[str, None]] = {}
        self._role_members: dict[str, dict[str, None]] = {}
        self._sessions: dict[str, int] = {}
        self._refresh_tokens: dict[str, int] = {}
        self.revoked: Counter[str] = Counter()  # "sessions" / "refresh_tokens" -> revoked count
        self._jobs: dict[str, dict[str, Any]] = {}
        self._job_errors: dict[str, list[dict[str, Any]]] = {}
        self._job_queue: list[_QueuedJob] = []
        self._exports: dict[str, bytes] = {}
        self._init_tenant()
        self.add_connection(DATABASE_CONNECTION, "auth0")
        self.add_connection(ENTERPRISE_CONNECTION, "waad")

    def reset(self) -> None:
        """Forget users, roles, jobs and tokens; plan, search lag and job delay return to the
        constructor's values, features follow the plan again."""
        with self.lock:
            self.plan, self.search_lag_s, self.job_delay_s = self._defaults
            self.features = dict.fromkeys(self.features)
            self._tokens.clear()
            self._init_state()
            self._jobs_cv.notify_all()

    def _new_id(self, prefix: str, length: int = 16, alphabet: str = _ALNUM) -> str:
        return prefix + "".join(self._ids.choice(alphabet) for _ in range(length))

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        self._stopping.clear()
        self._worker = threading.Thread(target=self._job_loop, name="auth0-jobs", daemon=True)
        self._worker.start()

    def on_stop(self) -> None:
        self._stopping.set()
        with self.lock:
            self._jobs_cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None

    def start(self) -> Auth0Emulator:
        super().start()
        return self

    def __enter__(self) -> Auth0Emulator:
        return self.start()

    # -- vendor hooks ----------------------------------------------------------------------

    def authenticate(self, request: Request) -> None:
        if request.route in {"oauth.token", "exports.download"}:
            return
        header = request.headers.get("authorization", "")
        if not header:
            raise HttpError(401, "missing_authentication", "Missing authentication")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(401, "invalid_authorization_header", "Bad HTTP authentication header format")
        token = token.strip()
        if token == self.static_token:
            return
        with self.lock:
            expires = self._tokens.get(token)
        if expires is None:
            raise HttpError(401, "invalid_token", "Invalid token")
        if expires < time.time():
            raise HttpError(401, "token_expired", "Expired token received for JSON Web Token validation")

    def error_response(self, error: HttpError) -> Response:
        try:
            phrase = HTTPStatus(error.status).phrase
        except ValueError:
            phrase = "Error"
        body = {"statusCode": error.status, "error": phrase, "message": error.message, "errorCode": error.code}
        return Response.json(body, error.status, error.headers)

    def rate_limited_response(self, route: str, decision: RateDecision) -> Response:
        headers = self.rate_limit_headers(decision)
        return self.error_response(HttpError(429, "too_many_requests", "Global limit has been reached", headers))

    def rate_limit_headers(self, decision: RateDecision) -> dict[str, str]:
        headers = super().rate_limit_headers(decision)  # Retry-After only when a rule asks for it
        headers["x-ratelimit-limit"] = str(decision.limit)
        headers["x-ratelimit-remaining"] = str(decision.remaining)
        headers["x-ratelimit-reset"] = str(decision.reset_epoch)
        return headers

    # -- routes ----------------------------------------------------------------------------

    def _route(
        self, method: str, pattern: str, name: str, handler: Callable[[Request], Response], write: bool | None = None
    ) -> None:
        def wrapped(request: Request) -> Response:
            # Render errors here so that the base adds rate-limit headers to them as well.
            try:
                return handler(request)
            except HttpError as err:
                return self.error_response(err)

        self.add_route(method, pattern, name, wrapped, write)

    def _register_routes(self) -> None:
        p = self.api_prefix
        uid = "(?P<id>[^/]+)"
        # A token and an export job are POSTs that change no user data: not counted as writes.
        self._route("POST", "/oauth/token", "oauth.token", self._oauth_token, write=False)
        self._route("GET", "/exports/(?P<name>[^/]+)", "exports.download", self._download_export)
        self._route("GET", p + "/connections", "mgmt.connections.list", self._list_connections)
        self._route("GET", p + "/connections/" + uid, "mgmt.connections.get", self._get_connection)
        self._route("GET", p + "/users", "mgmt.users.list", self._list_users)
        self._route("POST", p + "/users", "mgmt.users.write.create", self._create_user)
        self._route("GET", p + "/users-by-email", "mgmt.users.by_email", self._users_by_email)
        self._route("GET", p + "/users/" + uid, "mgmt.users.get", self._get_user)
        self._route("PATCH", p + "/users/" + uid, "mgmt.users.write.update", self._update_user)
        self._route("DELETE", p + "/users/" + uid, "mgmt.users.write.delete", self._delete_user)
        self._route("GET", p + "/users/" + uid + "/roles", "mgmt.users.roles.list", self._list_user_roles)
        self._route("POST", p + "/users/" + uid + "/roles", "mgmt.users.roles.assign", self._assign_user_roles)
        self._route("DELETE", p + "/users/" + uid + "/roles", "mgmt.users.roles.remove", self._remove_user_roles)
        self._route("DELETE", p + "/users/" + uid + "/sessions", "mgmt.users.sessions.delete", self._revoke_sessions)
        self._route(
            "DELETE",
            p + "/users/" + uid + "/refresh-tokens",
            "mgmt.users.refresh_tokens.delete",
            self._revoke_refresh_tokens,
        )
        self._route("GET", p + "/roles", "mgmt.roles.list", self._list_roles)
        self._route("POST", p + "/roles", "mgmt.roles.create", self._create_role)
        self._route("GET", p + "/roles/" + uid, "mgmt.roles.get", self._get_role)
        self._route("PATCH", p + "/roles/" + uid, "mgmt.roles.update", self._update_role)
        self._route("DELETE", p + "/roles/" + uid, "mgmt.roles.delete", self._delete_role)
        self._route("GET", p + "/roles/" + uid + "/users", "mgmt.roles.users.list", self._list_role_users)
        self._route("POST", p + "/roles/" + uid + "/users", "mgmt.roles.users.assign", self._assign_role_users)
        self._route("POST", p + "/jobs/users-exports", "mgmt.jobs.users_exports", self._create_export, write=False)
        self._route("POST", p + "/jobs/users-imports", "mgmt.jobs.users_imports", self._create_import)
        self._route("GET", p + "/jobs/" + uid, "mgmt.jobs.get", self._get_job)
        self._route("GET", p + "/jobs/" + uid + "/errors", "mgmt.jobs.errors", self._get_job_errors)
        self._register_tenant_routes()

    # -- token endpoint --------------------------------------------------------------------

    def issue_token(self, ttl_s: float = TOKEN_TTL_S) -> str:
        token = "sbx." + secrets.token_urlsafe(24)
        with self.lock:
            self._tokens[token] = time.time() + ttl_s
        return token

    def _oauth_token(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in ctype:
            form: Any = {k: v[0] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        else:
            try:
                form = json.loads(request.body or b"{}")
            except ValueError:
                form = None
        if not isinstance(form, dict):
            return Response.json({"error": "invalid_request", "error_description": "Malformed request body."}, 400)
        grant = form.get("grant_type")
        if grant != "client_credentials":
            description = f"Grant type '{grant}' not allowed for the client."
            return Response.json({"error": "unsupported_grant_type", "error_description": description}, 403)
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return Response.json({"error": "access_denied", "error_description": "Unauthorized"}, 401)
        token = self.issue_token()
        return Response.json(
            {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL_S, "scope": SCOPES}
        )

    # -- connections -----------------------------------------------------------------------

    def add_connection(self, name: str, strategy: str) -> dict[str, Any]:
        with self.lock:
            conn: dict[str, Any] = {
                "id": _stable_id("con_", name),
                "name": name,
                "display_name": name,
                "strategy": strategy,
                "enabled_clients": [self.client_id],
                "is_domain_connection": False,
                "realms": [name],
                "options": {},
            }
            self._connections[conn["id"]] = conn
            return conn

    def connection(self, name: str) -> dict[str, Any]:
        """The connection called ``name`` (KeyError if none)."""
        with self.lock:
            for conn in self._connections.values():
                if conn["name"] == name:
                    return conn
        raise KeyError(name)

    def _list_connections(self, request: Request) -> Response:
        name = request.arg("name")
        strategies = set(request.query.get("strategy", []))
        with self.lock:
            conns = [
                c
                for c in self._connections.values()
                if (name is None or c["name"] == name) and (not strategies or c["strategy"] in strategies)
            ]
        fields, include = _fields_arg(request)
        items = [_project(c, fields, include) for c in conns]
        if "from" in request.query or "take" in request.query:
            return _checkpoint(request, "connections", items)
        return _offset(request, "connections", items)

    def _get_connection(self, request: Request) -> Response:
        with self.lock:
            conn = self._connections.get(request.params["id"])
        if conn is None:
            raise HttpError(404, "inexistent_connection", "The connection does not exist")
        fields, include = _fields_arg(request)
        return Response.json(_project(conn, fields, include))

    # -- users: state helpers (call with self.lock held) -----------------------------------

    def _build_user(self, conn: dict[str, Any], body: dict[str, Any], raw_id: str, now: str) -> dict[str, Any]:
        provider = "auth0" if conn["strategy"] == "auth0" else conn["strategy"]
        email = body.get("email")
        user: dict[str, Any] = {"user_id": f"{provider}|{raw_id}"}
        if email is not None:
            email = email.lower()
            user["email"] = email
            user["email_verified"] = bool(body.get("email_verified", False))
        for key in ("username", "phone_number", "given_name", "family_name"):
            if body.get(key) is not None:
                user[key] = body[key]
        if "phone_verified" in body:
            user["phone_verified"] = bool(body["phone_verified"])
        local = email.split("@", 1)[0] if email else raw_id
        user["name"] = body.get("name") or email or raw_id
        user["nickname"] = body.get("nickname") or local
        user["picture"] = body.get("picture") or _gravatar(email or raw_id)
        if "blocked" in body and body["blocked"] is not None:
            user["blocked"] = bool(body["blocked"])
        user["identities"] = [{"connection": conn["name"], "user_id": raw_id, "provider": provider, "isSocial": False}]
        if body.get("app_metadata"):
            user["app_metadata"] = dict(body["app_metadata"])
        if body.get("user_metadata"):
            user["user_metadata"] = dict(body["user_metadata"])
        user["created_at"] = body.get("created_at") or now
        user["updated_at"] = body.get("updated_at") or user["created_at"]
        user["logins_count"] = int(body.get("logins_count") or 0)
        for key in ("last_login", "last_ip"):
            if body.get(key):
                user[key] = body[key]
        return user

    def _store_user(self, user: dict[str, Any], indexed_now: bool = False) -> None:
        user_id = user["user_id"]
        old = self._users.get(user_id)
        if old is not None:
            self._unlink_email(old)
        self._users[user_id] = user
        email = user.get("email")
        if email:
            self._by_email.setdefault(email, []).append(user_id)
            self._by_conn_email[(user["identities"][0]["connection"], email)] = user_id
        self._reindex(user_id, user, immediate=indexed_now)

    def _unlink_email(self, user: dict[str, Any]) -> None:
        email = user.get("email")
        if not email:
            return
        ids = self._by_email.get(email, [])
        if user["user_id"] in ids:
            ids.remove(user["user_id"])
        if not ids:
            self._by_email.pop(email, None)
        key = (user["identities"][0]["connection"], email)
        if self._by_conn_email.get(key) == user["user_id"]:
            del self._by_conn_email[key]

    def _drop_user(self, user_id: str) -> None:
        user = self._users.pop(user_id, None)
        if user is None:
            return
        self._unlink_email(user)
        for role_id in self._user_roles.pop(user_id, {}):
            self._role_members.get(role_id, {}).pop(user_id, None)
        self._sessions.pop(user_id, None)
        self._refresh_tokens.pop(user_id, None)
        self._reindex(user_id, None)

    def _reindex(self, user_id: str, doc: dict[str, Any] | None, immediate: bool = False) -> None:
        seq = next(self._seq)
        if immediate or self.search_lag_s <= 0:
            self._apply_index(user_id, doc, seq)
        else:
            heapq.heappush(self._pending, (time.monotonic() + self.search_lag_s, seq, user_id, doc))

    def _apply_index(self, user_id: str, doc: dict[str, Any] | None, seq: int) -> None:
        if seq < self._index_seq.get(user_id, -1):
            return  # a newer version is already visible
        self._index_seq[user_id] = seq
        if doc is None:
            self._index.pop(user_id, None)
        else:
            self._index[user_id] = doc

    def _catch_up_index(self, everything: bool = False) -> None:
        now = time.monotonic()
        while self._pending and (everything or self._pending[0][0] <= now):
            _, seq, user_id, doc = heapq.heappop(self._pending)
            self._apply_index(user_id, doc, seq)

    def _require_user(self, user_id: str) -> dict[str, Any]:
        user = self._users.get(user_id)
        if user is None:
            raise _not_found_user()
        return user

    # -- users: routes ---------------------------------------------------------------------

    def _create_user(self, request: Request) -> Response:
        body = _json_object(request)
        _check_properties(body, _CREATE_FIELDS)
        if "connection" not in body:
            raise _bad_request("Payload validation error: 'Missing required property: connection'.")
        _check_types(body)
        with self.lock:
            conn = self._connection_by_name(body["connection"])
            if conn["strategy"] != "auth0":
                raise HttpError(400, "operation_not_supported", "Connection is not supported for this operation.")
            email = body.get("email")
            if not email:
                raise _bad_request("Payload validation error: 'Missing required property: email'.")
            if "@" not in email:
                raise _bad_request(
                    f"Payload validation error: 'Object didn't pass validation for format email: {email}'"
                )
            raw_id = body.get("user_id")
            if raw_id is None:
                raw_id = self._new_id("", 24, "0123456789abcdef")
            elif not isinstance(raw_id, str) or not raw_id or "|" in raw_id:
                raise _bad_request("Payload validation error: 'user_id' must be a string without '|'.")
            if f"auth0|{raw_id}" in self._users or (conn["name"], email.lower()) in self._by_conn_email:
                raise _user_exists()
            user = self._build_user(conn, body, raw_id, _now_iso())
            self._store_user(user)
        return Response.json(user, 201)

    def _get_user(self, request: Request) -> Response:
        with self.lock:
            user = self._require_user(request.params["id"])
        fields, include = _fields_arg(request)
        return Response.json(_project(user, fields, include))

    def _update_user(self, request: Request) -> Response:
        body = _json_object(request)
        _check_properties(body, _UPDATE_FIELDS)
        if not body:
            raise _bad_request("Payload validation error: 'Too few properties defined (0), minimum 1'.")
        _check_types(body)
        with self.lock:
            user = self._apply_update(self._require_user(request.params["id"]), body)
        return Response.json(user)

    def _apply_update(self, old: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """Store and return the updated copy of ``old`` (with self.lock held)."""
        new = dict(old)
        connection = old["identities"][0]["connection"]
        if "email" in body:
            email = body["email"]
            if not email or "@" not in email:
                raise _bad_request("Payload validation error: 'email' must be an email address.")
            email = email.lower()
            holder = self._by_conn_email.get((connection, email))
            if holder is not None and holder != old["user_id"]:
                raise _user_exists()
            new["email"] = email
            if "email_verified" not in body:
                new["email_verified"] = False
        for key in ("given_name", "family_name", "name", "nickname", "picture", "username", "phone_number"):
            if key in body:
                if body[key] is None:
                    new.pop(key, None)
                else:
                    new[key] = body[key]
        for key in ("blocked", "email_verified", "phone_verified"):
            if key in body and body[key] is not None:
                new[key] = bool(body[key])
        for key in ("app_metadata", "user_metadata"):
            if key in body:
                merged = _merge_metadata(old.get(key), body[key] or {})
                if merged:
                    new[key] = merged
                else:
                    new.pop(key, None)
        new["updated_at"] = _now_iso()
        self._store_user(new)
        return new

    def _delete_user(self, request: Request) -> Response:
        # Auth0 answers 204 whether or not the user existed.
        with self.lock:
            self._drop_user(request.params["id"])
        return Response.empty(204)

    def _users_by_email(self, request: Request) -> Response:
        email = request.arg("email")
        if not email:
            raise _bad_request("Query validation error: 'Missing required property: email'.", "invalid_query_string")
        fields, include = _fields_arg(request)
        with self.lock:
            users = [self._users[uid] for uid in self._by_email.get(email, [])]
        return Response.json([_project(u, fields, include) for u in users])

    def _list_users(self, request: Request) -> Response:
        page = _int_arg(request, "page", 0, 0, None)
        per_page = _int_arg(request, "per_page", 50, 0, MAX_PER_PAGE)
        include_totals = _bool_arg(request, "include_totals", False)
        engine = request.arg("search_engine")
        if engine not in (None, "v2", "v3"):
            raise _bad_request(f"Query validation error: 'Invalid search_engine {engine}'.", "invalid_query_string")
        if (page + 1) * per_page > SEARCH_WINDOW:
            raise HttpError(400, "invalid_paging", PAGING_MESSAGE)
        q = request.arg("q") or ""
        try:
            query = lucene.parse(q)
        except lucene.QuerySyntaxError as exc:
            raise _bad_request(f"Bad Request: Invalid query string: {exc}", "invalid_query_string") from exc
        sort = _sort_arg(request)
        fields, include = _fields_arg(request)
        with self.lock:
            self._catch_up_index()
            docs = list(self._index.values())
        hits = [d for d in docs if query.matches(d)]
        if sort is not None:
            path, descending = sort
            present = [(v, d) for d in hits for v in [next(lucene.field_values(d, path), None)] if v is not None]
            absent = [d for d in hits if next(lucene.field_values(d, path), None) is None]
            present.sort(key=lambda pair: pair[0], reverse=descending)
            hits = [d for _, d in present] + absent
        start = page * per_page
        window = [_project(d, fields, include) for d in hits[start : start + per_page]]
        if include_totals:
            body: Any = {"start": start, "limit": per_page, "length": len(window), "total": len(hits), "users": window}
            return Response.json(body)
        return Response.json(window)

    # -- roles -----------------------------------------------------------------------------

    def _require_role(self, role_id: str) -> dict[str, Any]:
        role = self._roles.get(role_id)
        if role is None:
            raise HttpError(404, "inexistent_role", "The role does not exist.")
        return role

    def add_role(self, name: str, description: str = "") -> dict[str, Any]:
        with self.lock:
            if any(r["name"] == name for r in self._roles.values()):
                raise HttpError(409, "conflict", "Role already exists.")
            role = {"id": self._new_id("rol_"), "name": name, "description": description or name}
            self._roles[role["id"]] = role
            self._role_members[role["id"]] = {}
            return role

    def _create_role(self, request: Request) -> Response:
        body = _json_object(request)
        _check_properties(body, {"name", "description", "type", "owner_id"})
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _bad_request("Payload validation error: 'Missing required property: name'.")
        return Response.json(self.add_role(name, body.get("description") or ""))

    def _list_roles(self, request: Request) -> Response:
        name_filter = (request.arg("name_filter") or "").lower()
        with self.lock:
            roles = [r for r in self._roles.values() if name_filter in r["name"].lower()]
        return _offset(request, "roles", roles)

    def _get_role(self, request: Request) -> Response:
        with self.lock:
            return Response.json(self._require_role(request.params["id"]))

    def _update_role(self, request: Request) -> Response:
        body = _json_object(request)
        _check_properties(body, {"name", "description"})
        with self.lock:
            role = dict(self._require_role(request.params["id"]))
            role.update({k: v for k, v in body.items() if v is not None})
            self._roles[role["id"]] = role
        return Response.json(role)

    def _delete_role(self, request: Request) -> Response:
        with self.lock:
            role_id = self._require_role(request.params["id"])["id"]
            del self._roles[role_id]
            for user_id in self._role_members.pop(role_id, {}):
                self._user_roles.get(user_id, {}).pop(role_id, None)
        return Response.empty(204)

    def _list_role_users(self, request: Request) -> Response:
        with self.lock:
            role = self._require_role(request.params["id"])
            members = [u for u in self._role_members.get(role["id"], {}) if u in self._users]
            users = self._users
        keys = ("user_id", "email", "picture", "name")

        def render(page: list[str]) -> list[dict[str, Any]]:
            # Only the requested page is rendered: a role held by 100,000 users pages in O(page).
            return [{k: users[u][k] for k in keys if k in users[u]} for u in page if u in users]

        if "from" in request.query or "take" in request.query:
            return _checkpoint(request, "users", members, render)
        return _offset(request, "users", render(members))

    def _assign_role_users(self, request: Request) -> Response:
        body = _json_object(request)
        user_ids = body.get("users")
        if not isinstance(user_ids, list) or not user_ids:
            raise _bad_request("Payload validation error: 'Missing required property: users'.")
        with self.lock:
            role = self._require_role(request.params["id"])
            for user_id in user_ids:
                self._require_user(user_id)
            for user_id in user_ids:
                self._link_role(user_id, role["id"])
        return Response.empty(201)

    def _link_role(self, user_id: str, role_id: str) -> None:
        self._user_roles.setdefault(user_id, {})[role_id] = None
        self._role_members.setdefault(role_id, {})[user_id] = None

    def _role_ids_from_body(self, request: Request) -> list[str]:
        body = _json_object(request)
        _check_properties(body, {"roles"})
        role_ids = body.get("roles")
        if not isinstance(role_ids, list) or not role_ids or not all(isinstance(r, str) for r in role_ids):
            raise _bad_request("Payload validation error: 'roles' must be a non-empty array of role ids.")
        for role_id in role_ids:
            if role_id not in self._roles:
                raise HttpError(404, "inexistent_role", f"The role does not exist: {role_id}")
        return role_ids

    def _list_user_roles(self, request: Request) -> Response:
        with self.lock:
            self._require_user(request.params["id"])
            roles = [self._roles[r] for r in self._user_roles.get(request.params["id"], {}) if r in self._roles]
        return _offset(request, "roles", roles)

    def _assign_user_roles(self, request: Request) -> Response:
        with self.lock:
            self._require_user(request.params["id"])
            for role_id in self._role_ids_from_body(request):
                self._link_role(request.params["id"], role_id)
        return Response.empty(204)

    def _remove_user_roles(self, request: Request) -> Response:
        with self.lock:
            user_id = request.params["id"]
            self._require_user(user_id)
            for role_id in self._role_ids_from_body(request):
                self._user_roles.get(user_id, {}).pop(role_id, None)
                self._role_members.get(role_id, {}).pop(user_id, None)
        return Response.empty(204)

    def user_role_names(self, user_id: str) -> list[str]:
        with self.lock:
            return [self._roles[r]["name"] for r in self._user_roles.get(user_id, {}) if r in self._roles]

    # -- sessions and refresh tokens -------------------------------------------------------

    def _gate(self, feature: str) -> None:
        forced = self.features.get(feature)
        status = forced if forced is not None else (200 if self.plan == "enterprise" else 403)
        if status == 403:
            raise HttpError(403, "feature_not_enabled", "This feature is not enabled for this tenant's plan.")
        if status == 404:
            raise HttpError(404, "not_found", "Not Found")

    def _revoke(self, request: Request, feature: str, store: dict[str, int]) -> Response:
        with self.lock:
            self._gate(feature)
            user_id = request.params["id"]
            self._require_user(user_id)
            self.revoked[feature] += store.pop(user_id, 0)
        return Response.empty(202)

    def _revoke_sessions(self, request: Request) -> Response:
        return self._revoke(request, "sessions", self._sessions)

    def _revoke_refresh_tokens(self, request: Request) -> Response:
        return self._revoke(request, "refresh_tokens", self._refresh_tokens)

    def add_sessions(self, user_id: str, n: int = 1, refresh_tokens: int = 0) -> dict[str, int]:
        """Give ``user_id`` ``n`` more sessions and ``refresh_tokens`` more refresh tokens."""
        with self.lock:
            self._require_user(user_id)
            self._sessions[user_id] = self._sessions.get(user_id, 0) + n
            self._refresh_tokens[user_id] = self._refresh_tokens.get(user_id, 0) + refresh_tokens
            return self.sessions_of(user_id)

    def sessions_of(self, user_id: str) -> dict[str, int]:
        with self.lock:
            return {
                "sessions": self._sessions.get(user_id, 0),
                "refresh_tokens": self._refresh_tokens.get(user_id, 0),
            }

    # -- jobs ------------------------------------------------------------------------------

    def _enqueue(self, job_id: str, run: Callable[[], None]) -> None:
        heapq.heappush(self._job_queue, _QueuedJob(time.monotonic() + self.job_delay_s, next(self._seq), job_id, run))
        self._jobs_cv.notify_all()

    def _job_loop(self) -> None:
        while not self._stopping.is_set():
            with self.lock:
                if not self._job_queue:
                    self._jobs_cv.wait(0.5)
                    continue
                delay = self._job_queue[0].due - time.monotonic()
                if delay > 0:
                    self._jobs_cv.wait(min(delay, 0.5))
                    continue
                queued = heapq.heappop(self._job_queue)
                job = self._jobs.get(queued.job_id)
                if job is None:
                    continue
                job["status"] = "processing"
            try:
                queued.run()
            except Exception as exc:  # a job that crashes fails, the worker goes on
                log.exception("auth0 emulator job %s failed", queued.job_id)
                with self.lock:
                    job = self._jobs.get(queued.job_id)
                    if job is not None:
                        job["status"] = "failed"
                        job["status_details"] = repr(exc)

    def _finish_job(self, job_id: str, generation: int, **fields: Any) -> None:
        with self.lock:
            if generation != self._generation or job_id not in self._jobs:
                return
            job = self._jobs[job_id]
            job.update(fields)
            job["status"] = "completed"
            job["percentage_done"] = 100
            job["time_left_seconds"] = 0

    def _create_export(self, request: Request) -> Response:
        body = _json_object(request) if request.body else {}
        _check_properties(body, {"connection_id", "format", "limit", "fields"})
        fmt = body.get("format", "csv")
        if fmt not in ("json", "csv"):
            raise _bad_request("Payload validation error: 'format' must be one of json, csv.")
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise _bad_request("Payload validation error: 'limit' must be a positive integer.")
        fields = body.get("fields")
        if fields is not None and (
            not isinstance(fields, list)
            or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in fields)
        ):
            raise _bad_request("Payload validation error: 'fields' must be an array of {name, export_as}.")
        with self.lock:
            conn = None
            if body.get("connection_id") is not None:
                conn = self._connections.get(body["connection_id"])
                if conn is None:
                    raise HttpError(400, "inexistent_connection", "The connection does not exist.")
            job_id = self._new_id("job_")
            job: dict[str, Any] = {
                "type": "users_export",
                "status": "pending",
                "connection_id": conn["id"] if conn else None,
                "connection": conn["name"] if conn else None,
                "format": fmt,
                "created_at": _now_iso(),
                "id": job_id,
            }
            if limit is not None:
                job["limit"] = limit
            if fields is not None:
                job["fields"] = fields
            job = {k: v for k, v in job.items() if v is not None}
            self._jobs[job_id] = job
            generation = self._generation
            conn_name = conn["name"] if conn else None
            self._enqueue(job_id, lambda: self._run_export(job_id, generation, conn_name, fmt, fields, limit))
            return Response.json(dict(job), 201)

    def _run_export(
        self,
        job_id: str,
        generation: int,
        connection: str | None,
        fmt: str,
        fields: list[dict[str, Any]] | None,
        limit: int | None,
    ) -> None:
        with self.lock:
            users = list(self._users.values())  # references only: stored users are never mutated
        columns = [(f["name"], f.get("export_as") or f["name"]) for f in fields or []]
        if fmt == "csv" and not columns:
            columns = [(name, name) for name in _DEFAULT_EXPORT_FIELDS]
        buffer = io.BytesIO()
        written = 0
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=1, mtime=0) as gz:
            text = io.TextIOWrapper(gz, encoding="utf-8", newline="")
            writer = csv.writer(text) if fmt == "csv" else None
            if writer is not None:
                writer.writerow([alias for _, alias in columns])
            for user in users:
                if connection is not None and user["identities"][0]["connection"] != connection:
                    continue
                if limit is not None and written >= limit:
                    break
                if writer is not None:
                    writer.writerow([_csv_cell(_export_value(user, name)) for name, _ in columns])
                else:
                    record = user if not columns else {alias: _export_value(user, name) for name, alias in columns}
                    text.write(json.dumps(record, separators=(",", ":")))
                    text.write("\n")
                written += 1
            text.flush()
            text.detach()
        name = f"{job_id}.{fmt}.gz"
        with self.lock:
            if generation != self._generation:
                return
            self._exports[name] = buffer.getvalue()
        self._finish_job(job_id, generation, location=f"{self.origin}/exports/{name}", exported=written)

    def _download_export(self, request: Request) -> Response:
        with self.lock:
            data = self._exports.get(request.params["name"])
        if data is None:
            raise HttpError(404, "not_found", "The export file does not exist or has expired.")
        return Response(200, data, {"Content-Type": "application/gzip"})

    def _create_import(self, request: Request) -> Response:
        form, files = _parse_multipart(request)
        if "users" not in files:
            raise _bad_request("Payload validation error: 'Missing required property: users'.")
        payload = files["users"]
        if len(payload) > IMPORT_MAX_BYTES:
            raise HttpError(413, "too_large", "The users file exceeds the maximum size of 500KB.")
        connection_id = form.get("connection_id")
        if not connection_id:
            raise _bad_request("Payload validation error: 'Missing required property: connection_id'.")
        upsert = form.get("upsert", "false").lower() == "true"
        try:
            users = json.loads(payload)
        except ValueError as exc:
            raise _bad_request(f"The users file is not valid JSON: {exc}") from exc
        if not isinstance(users, list):
            raise _bad_request("The users file must hold a JSON array of users.")
        with self.lock:
            conn = self._connections.get(connection_id)
            if conn is None:
                raise HttpError(400, "inexistent_connection", "The connection does not exist.")
            if conn["strategy"] != "auth0":
                raise HttpError(400, "operation_not_supported", "Imports need a database connection.")
            active = sum(
                1
                for j in self._jobs.values()
                if j["type"] == "users_import" and j["status"] in ("pending", "processing")
            )
            if active >= IMPORT_MAX_ACTIVE:
                raise HttpError(
                    429,
                    "too_many_requests",
                    f"There are {active} active import users jobs, please wait until some of them are finished "
                    "and try again",
                )
            job_id = self._new_id("job_")
            job: dict[str, Any] = {
                "type": "users_import",
                "status": "pending",
                "connection_id": conn["id"],
                "connection": conn["name"],
                "upsert": upsert,
                "created_at": _now_iso(),
                "id": job_id,
            }
            if form.get("external_id"):
                job["external_id"] = form["external_id"]
            self._jobs[job_id] = job
            generation = self._generation
            self._enqueue(job_id, lambda: self._run_import(job_id, generation, conn, users, upsert))
            return Response.json(dict(job), 202)

    def _run_import(self, job_id: str, generation: int, conn: dict[str, Any], users: list[Any], upsert: bool) -> None:
        summary = Counter({"failed": 0, "updated": 0, "inserted": 0, "total": 0})
        errors: list[dict[str, Any]] = []
        for raw in users:
            summary["total"] += 1
            with self.lock:
                if generation != self._generation:
                    return
                try:
                    summary[self._import_one(conn, raw, upsert)] += 1
                except _ImportProblem as problem:
                    summary["failed"] += 1
                    errors.append(
                        {
                            "user": raw if isinstance(raw, dict) else {"value": raw},
                            "errors": [{"code": problem.code, "message": problem.message, "path": problem.path}],
                        }
                    )
        with self.lock:
            if generation == self._generation:
                self._job_errors[job_id] = errors
        self._finish_job(job_id, generation, summary=dict(summary))

    def _import_one(self, conn: dict[str, Any], raw: Any, upsert: bool) -> str:
        if not isinstance(raw, dict):
            raise _ImportProblem("INVALID_FORMAT", "A user must be a JSON object.")
        unknown = sorted(set(raw) - _IMPORT_FIELDS)
        if unknown:
            raise _ImportProblem("OBJECT_ADDITIONAL_PROPERTIES", f"Additional properties not allowed: {unknown[0]}")
        email = raw.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise _ImportProblem("OBJECT_MISSING_REQUIRED_PROPERTY", "Missing required property: email", "email")
        for key in ("app_metadata", "user_metadata"):
            if key in raw and not isinstance(raw[key], dict):
                raise _ImportProblem("INVALID_TYPE", f"Expected type object but found {type(raw[key]).__name__}", key)
        existing_id = self._by_conn_email.get((conn["name"], email.lower()))
        raw_id = raw.get("user_id")
        if existing_id is None and raw_id is not None:
            existing_id = f"auth0|{raw_id}" if f"auth0|{raw_id}" in self._users else None
        if existing_id is not None:
            if not upsert:
                raise _ImportProblem("DUPLICATED_USER", "The user already exist", "email")
            patch = {k: v for k, v in raw.items() if k in _UPDATE_FIELDS}
            self._apply_update(self._users[existing_id], patch)
            return "updated"
        body = {k: v for k, v in raw.items() if k not in ("password_hash", "custom_password_hash")}
        body.setdefault("email_verified", False)
        user_id = str(raw_id) if raw_id is not None else self._new_id("", 24, "0123456789abcdef")
        self._store_user(self._build_user(conn, body, user_id, _now_iso()))
        return "inserted"

    def _get_job(self, request: Request) -> Response:
        with self.lock:
            job = self._jobs.get(request.params["id"])
            if job is None:
                raise HttpError(404, "inexistent_job", "The job does not exist.")
            return Response.json(dict(job))

    def _get_job_errors(self, request: Request) -> Response:
        with self.lock:
            job = self._jobs.get(request.params["id"])
            if job is None:
                raise HttpError(404, "inexistent_job", "The job does not exist.")
            errors = self._job_errors.get(job["id"])
        if not errors:
            return Response.empty(204)
        return Response.json(errors)

    def job(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self._jobs[job_id])

    # -- helpers for tests and control endpoints -------------------------------------------

    def _connection_by_name(self, name: Any) -> dict[str, Any]:
        for conn in self._connections.values():
            if conn["name"] == name:
                return conn
        raise HttpError(400, "inexistent_connection", "The connection does not exist.")

    def add_user(self, spec: dict[str, Any], indexed: bool = True) -> dict[str, Any]:
        """Store a user directly (test setup): ``spec`` is a create body plus optional
        ``created_at``, ``last_login``, ``logins_count``, ``sessions``, ``refresh_tokens`` and
        ``roles`` (role names or ids). Any connection is allowed; ``user_id`` is the raw id
        (generated when absent). ``indexed``: visible to search at once, whatever the lag."""
        spec = dict(spec)
        sessions = int(spec.pop("sessions", 0))
        refresh_tokens = int(spec.pop("refresh_tokens", 0))
        roles = spec.pop("roles", [])
        with self.lock:
            conn = self._connection_by_name(spec.pop("connection", DATABASE_CONNECTION))
            raw_id = spec.pop("user_id", None) or self._new_id("", 24, "0123456789abcdef")
            provider = "auth0" if conn["strategy"] == "auth0" else conn["strategy"]
            email = (spec.get("email") or "").lower()
            if f"{provider}|{raw_id}" in self._users or (email and (conn["name"], email) in self._by_conn_email):
                raise _user_exists()
            user = self._build_user(conn, spec, str(raw_id), _now_iso())
            self._store_user(user, indexed_now=indexed)
            if sessions:
                self._sessions[user["user_id"]] = sessions
            if refresh_tokens:
                self._refresh_tokens[user["user_id"]] = refresh_tokens
            for role in roles:
                role_id = (
                    role
                    if role in self._roles
                    else next((r["id"] for r in self._roles.values() if r["name"] == role), None)
                )
                if role_id is None:
                    role_id = self.add_role(role)["id"]
                self._link_role(user["user_id"], role_id)
            return user

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        with self.lock:
            return self._users.get(user_id)

    def seed(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Replace all state. ``spec``: ``users`` (list of :meth:`add_user` specs), ``roles``
        (names), ``count`` generated users with ``seed`` (default 0), ``connection`` (default the
        database connection), ``email_domain`` (default ``example.com``) and ``app_metadata``
        (merged into every generated user)."""
        with self.lock:
            self._init_state()
            for role in spec.get("roles", []):
                if isinstance(role, str):
                    self.add_role(role)
                else:
                    self.add_role(role["name"], role.get("description", ""))
            count = int(spec.get("count", 0))
            if count:
                self._generate_users(
                    count,
                    int(spec.get("seed", 0)),
                    self._connection_by_name(spec.get("connection", DATABASE_CONNECTION)),
                    str(spec.get("email_domain", "example.com")),
                    dict(spec.get("app_metadata") or {}),
                )
            for user in spec.get("users", []):
                self.add_user(user)
            return {"users": len(self._users), "roles": len(self._roles), "connections": len(self._connections)}

    def _generate_users(
        self, count: int, seed: int, conn: dict[str, Any], domain: str, extra_metadata: dict[str, Any]
    ) -> None:
        rng = random.Random(seed)
        given_names = ("Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Radia", "Edsger")
        family_names = ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Hamilton", "Ritchie")
        provider = "auth0" if conn["strategy"] == "auth0" else conn["strategy"]
        base = time.time() - count - 86_400
        for i in range(count):
            given = given_names[rng.randrange(len(given_names))]
            family = family_names[rng.randrange(len(family_names))]
            raw_id = f"{rng.getrandbits(96):024x}"
            email = f"{given}.{family}.{i}@{domain}".lower()
            stamp = _iso(base + i)
            user: dict[str, Any] = {
                "user_id": f"{provider}|{raw_id}",
                "email": email,
                "email_verified": True,
                "given_name": given,
                "family_name": family,
                "name": f"{given} {family}",
                "nickname": email.split("@", 1)[0],
                "picture": "https://cdn.auth0.com/avatars/default.png",
                "identities": [
                    {"connection": conn["name"], "user_id": raw_id, "provider": provider, "isSocial": False}
                ],
                "app_metadata": {"entra_oid": str(uuid.UUID(int=rng.getrandbits(128), version=4)), **extra_metadata},
                "created_at": stamp,
                "updated_at": stamp,
                "logins_count": 0,
            }
            self._users[user["user_id"]] = user
            self._by_email.setdefault(email, []).append(user["user_id"])
            self._by_conn_email[(conn["name"], email)] = user["user_id"]
            self._index[user["user_id"]] = user

    def set_plan(self, plan: str, apply_limits: bool = False) -> None:
        """Switch the plan (decides the session/refresh-token features); with ``apply_limits``
        also configure the plan's rate-limit preset."""
        if plan not in PLANS:
            raise ValueError(f"unknown plan {plan!r}; one of {PLANS}")
        with self.lock:
            self.plan = plan
        if apply_limits:
            self.limits.configure(rate_limit_preset(plan))

    def set_feature(self, feature: str, status: int | None) -> None:
        """Force ``sessions`` / ``refresh_tokens`` to answer 200 (enabled), 403 or 404; None: by plan."""
        if feature not in self.features:
            raise ValueError(f"unknown feature {feature!r}; one of {sorted(self.features)}")
        if status not in (None, 200, 403, 404):
            raise ValueError("status must be None, 200, 403 or 404")
        with self.lock:
            self.features[feature] = status

    def set_search_lag(self, seconds: float) -> None:
        with self.lock:
            self.search_lag_s = float(seconds)

    def flush_search_index(self) -> int:
        """Make every pending change visible to search now; returns how many were pending."""
        with self.lock:
            pending = len(self._pending)
            self._catch_up_index(everything=True)
            return pending

    def set_job_delay(self, seconds: float) -> None:
        with self.lock:
            self.job_delay_s = float(seconds)

    def snapshot(self, dump: bool = False) -> dict[str, Any]:
        with self.lock:
            jobs = Counter(f"{j['type']}:{j['status']}" for j in self._jobs.values())
            snap: dict[str, Any] = {
                "plan": self.plan,
                "search_lag_s": self.search_lag_s,
                "users": len(self._users),
                "indexed_users": len(self._index),
                "pending_index": len(self._pending),
                "connections": len(self._connections),
                "roles": len(self._roles),
                "role_assignments": sum(len(r) for r in self._user_roles.values()),
                "sessions": sum(self._sessions.values()),
                "refresh_tokens": sum(self._refresh_tokens.values()),
                "revoked": dict(self.revoked),
                "jobs": dict(jobs),
            }
            if dump:
                snap["dump"] = {
                    "users": list(self._users.values()),
                    "roles": list(self._roles.values()),
                    "user_roles": {u: list(r) for u, r in self._user_roles.items() if r},
                    "connections": list(self._connections.values()),
                    "jobs": [dict(j) for j in self._jobs.values()],
                }
            return snap

    # -- control endpoints -----------------------------------------------------------------

    def _register_controls(self) -> None:
        def snapshot(request: Request) -> Response:
            return Response.json(self.snapshot(dump=_truthy(request.arg("dump", "false") or "false")))

        def add_user(request: Request) -> Response:
            body = request.control_body()
            indexed = bool(body.pop("_indexed", True))
            return Response.json(self.add_user(body, indexed=indexed), 201)

        def sessions(request: Request) -> Response:
            body = request.control_body()
            counts = self.add_sessions(
                body["user_id"], int(body.get("sessions", 0)), int(body.get("refresh_tokens", 0))
            )
            return Response.json(counts)

        def plan(request: Request) -> Response:
            body = request.control_body()
            self.set_plan(body["plan"], bool(body.get("apply_limits", False)))
            return Response.json({"plan": self.plan, "limits": self.limits.rules()})

        def features(request: Request) -> Response:
            for name, status in request.control_body().items():
                self.set_feature(name, status)
            return Response.json(self.features)

        def lag(request: Request) -> Response:
            self.set_search_lag(float(request.control_body()["seconds"]))
            return Response.json({"search_lag_s": self.search_lag_s})

        def flush(request: Request) -> Response:
            return Response.json({"flushed": self.flush_search_index()})

        def jobs(request: Request) -> Response:
            self.set_job_delay(float(request.control_body()["delay_s"]))
            return Response.json({"job_delay_s": self.job_delay_s})

        def token(request: Request) -> Response:
            return Response.json({"access_token": self.issue_token()})

        self.add_control_route("GET", "/_control/snapshot", snapshot)
        self.add_control_route("POST", "/_control/users", add_user)
        self.add_control_route("POST", "/_control/sessions", sessions)
        self.add_control_route("PUT", "/_control/plan", plan)
        self.add_control_route("PUT", "/_control/features", features)
        self.add_control_route("PUT", "/_control/search-lag", lag)
        self.add_control_route("POST", "/_control/search-index/flush", flush)
        self.add_control_route("PUT", "/_control/jobs", jobs)
        self.add_control_route("POST", "/_control/token", token)


# --------------------------------------------------------------------------------------------
# Request parsing helpers
# --------------------------------------------------------------------------------------------


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"true", "1", "yes"}


def _json_object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise _bad_request("Payload validation error: 'Expected type object but found type array'.")
    return body


def _check_properties(body: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _bad_request(f"Payload validation error: 'Additional properties not allowed: {', '.join(unknown)}'.")


def _check_types(body: dict[str, Any]) -> None:
    for key in _STRING_FIELDS:
        if key in body and body[key] is not None and not isinstance(body[key], str):
            raise _bad_request(f"Payload validation error: 'Expected type string' on property {key}.")
    for key in _BOOL_FIELDS:
        if key in body and body[key] is not None and not isinstance(body[key], bool):
            raise _bad_request(f"Payload validation error: 'Expected type boolean' on property {key}.")
    for key in ("app_metadata", "user_metadata"):
        if key in body and body[key] is not None and not isinstance(body[key], dict):
            raise _bad_request(f"Payload validation error: 'Expected type object' on property {key}.")


def _int_arg(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise _bad_request(
            f"Query validation error: 'Expected type integer but found type string' on property {name}.",
            "invalid_query_string",
        ) from exc
    if value < low:
        raise _bad_request(
            f"Query validation error: 'Value {value} is less than minimum {low}' on property {name}.",
            "invalid_query_string",
        )
    if high is not None and value > high:
        raise _bad_request(
            f"Query validation error: 'Value {value} is greater than maximum {high}' on property {name}.",
            "invalid_query_string",
        )
    return value


def _bool_arg(request: Request, name: str, default: bool) -> bool:
    raw = request.arg(name)
    if raw is None or raw == "":
        return default
    return _truthy(raw)


def _fields_arg(request: Request) -> tuple[list[str] | None, bool]:
    raw = request.arg("fields")
    fields = [f.strip() for f in raw.split(",") if f.strip()] if raw else None
    return fields, _bool_arg(request, "include_fields", True)


def _sort_arg(request: Request) -> tuple[str, bool] | None:
    raw = request.arg("sort")
    if not raw:
        return None
    path, _, order = raw.rpartition(":")
    if not path or order not in ("1", "-1"):
        raise _bad_request("Query validation error: 'sort' must look like field:1 or field:-1.", "invalid_query_string")
    return path, order == "-1"


def _offset(request: Request, key: str, items: list[dict[str, Any]]) -> Response:
    """Page/per_page paging; a plain list unless include_totals."""
    page = _int_arg(request, "page", 0, 0, None)
    per_page = _int_arg(request, "per_page", 50, 0, MAX_PER_PAGE)
    start = page * per_page
    window = items[start : start + per_page]
    if _bool_arg(request, "include_totals", False):
        return Response.json({key: window, "start": start, "limit": per_page, "total": len(items)})
    return Response.json(window)


def _checkpoint(
    request: Request, key: str, items: list[Any], render: Callable[[list[Any]], list[dict[str, Any]]] | None = None
) -> Response:
    """from/take paging; ``next`` is present while more items remain. ``render`` turns the page's
    items into the answer's objects (default: they already are)."""
    raw_from = request.arg("from") or "0"
    try:
        start = int(raw_from)
    except ValueError as exc:
        raise _bad_request("Query validation error: 'from' is not a valid checkpoint.", "invalid_query_string") from exc
    take = _int_arg(request, "take", 50, 1, MAX_PER_PAGE)
    window = items[start : start + take]
    body: dict[str, Any] = {key: render(window) if render is not None else window}
    if start + take < len(items):
        body["next"] = str(start + take)
    return Response.json(body)


def _export_value(user: dict[str, Any], name: str) -> Any:
    if name in user:
        return user[name]
    node: Any = user
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _csv_cell(value: Any) -> Any:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else value


def _parse_multipart(request: Request) -> tuple[dict[str, str], dict[str, bytes]]:
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise _bad_request("The request must be multipart/form-data.")
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + request.body
    )
    if not message.is_multipart():
        raise _bad_request("The multipart body could not be parsed.")
    form: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None:
            files[name] = data
        else:
            form[name] = data.decode("utf-8", errors="replace")
    return form, files
