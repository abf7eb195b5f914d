"""Auth0 as a target: the :class:`~shared.core.ports.Target` port over ``auth0-python``'s async client.

Retries belong to the worker, not the SDK (the client is built with ``max_retries=0``): a retried
POST after a 5xx could create a duplicate, and a 409 would be retried for seconds. A 429 closes the
target's rate gate (shared by every instance) until Auth0's ``x-ratelimit-reset``, so concurrent
invocations wait instead of hammering; a short wait is absorbed here, a longer one becomes
:class:`RateLimited`, which the worker waits out by re-scheduling the item. A 5xx's ``Retry-After``
rides on the :class:`TransientError` for the worker's retry.

Auth0's meaning of the neutral actions: disable = ``blocked: true``, enable = ``blocked: false``,
grant/ungrant = role assignment, the revocations = ``DELETE /users/{id}/sessions`` and
``/refresh-tokens`` (Enterprise-plan features: elsewhere Auth0 answers 403/404, the account stays
blocked and the result says what could not be done). An update that Auth0 refuses with 409
because another account holds a unique value (email, username) sends the other changes alone and
returns the refused values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import string
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import httpx
from auth0.management.core.api_error import ApiError

from shared.core.model import Account, Action, ActionKind
from shared.core.ports import Applied, Fence
from shared.errors import Conflict, NotFound, PermanentError, RateLimited, Refused, TransientError, unreachable
from shared.mapping.check import nearest
from shared.mapping.model import TargetSection
from shared.services.ratelimit import RateGate, retry_after
from shared.targets.auth0.lucene import lucene_phrase
from shared.targets.auth0.ratelimit import throttled
from shared.targets.auth0.rules import CAPABILITIES, Auth0Rules, nest

T = TypeVar("T")


MAX_INLINE_WAIT_S = 10.0  # wait out a rate limit this long in-process; longer goes back to the queue


RETRIES_AFTER_RATE_LIMIT = 8  # with pacing a retry rarely meets a second 429


PAGE = 100  # the Management API's largest page
LIST_LIMIT = 1000  # Auth0's list and search stop here; past it, an export job
BASE_FIELDS = ("user_id", "email", "name", "blocked", "app_metadata", "last_login", "created_at")


def _dump(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if hasattr(obj, "model_dump"):
        return dict(obj.model_dump(mode="json", exclude_none=True, by_alias=True))
    return dict(obj)


def random_password() -> str:
    """A throwaway password for database users created by sync (they sign in through reset or SSO).
    It is never stored, logged or audited."""
    alphabet = string.ascii_letters + string.digits + "!#%+-.:=@^_~"
    core = "".join(secrets.choice(alphabet) for _ in range(28))
    return core + secrets.choice(string.ascii_uppercase) + secrets.choice(string.digits) + "!a"


class Auth0Target:
    capabilities = CAPABILITIES

    def __init__(
        self,
        section: TargetSection,
        client: Any,
        gate: RateGate | None = None,
        max_inline_wait_s: float = MAX_INLINE_WAIT_S,
    ):
        self.name = section.name
        self.section = section
        self.rules = Auth0Rules(section)
        self.client = client
        self.gate = gate or RateGate()
        self.max_inline_wait_s = max_inline_wait_s
        self.read_by = ""  # how accounts() read them last: "list" or "export job"
        self._role_ids: dict[str, str] | None = None
        self._role_lock = asyncio.Lock()
        self.calls: dict[str, int] = {}

    # -- plumbing ----------------------------------------------------------------------------------

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]], fence: Fence | None = None) -> T:
        """One Management API call. A write passes its ``fence``, checked after any rate-limit wait and
        right before the request leaves, so a worker that lost its lease meanwhile sends nothing."""
        for attempt in range(RETRIES_AFTER_RATE_LIMIT + 1):
            await self.gate.wait(self.max_inline_wait_s)
            if fence is not None:
                fence()
            self.calls[op] = self.calls.get(op, 0) + 1
            try:
                return await fn()
            except ApiError as exc:
                status = exc.status_code or 0
                if status == 429:
                    await throttled(self.gate, exc.headers or {})
                    if attempt < RETRIES_AFTER_RATE_LIMIT:
                        continue
                    wait = max(0.0, self.gate.open_at - self.gate.clock.now())
                    raise RateLimited(f"Auth0 {op}: rate limited", wait) from exc
                raise _translate(op, exc, self.gate.clock.now()) from exc
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                raise TransientError(unreachable("Auth0", op, exc, "AUTH0_DOMAIN (or AUTH0_BASE_URL)")) from exc
        raise AssertionError("unreachable")

    # -- the Target port -----------------------------------------------------------------------------

    async def read(self, target_id: str, *, entitlements: bool = True) -> Account | None:
        data = await self.get(target_id)
        if data is None:
            return None
        # Roles are read only where they are planned (an active identity, a mapping that grants some).
        roles = await self.roles_of(target_id) if entitlements and self.section.managed else frozenset()
        return self.rules.account(data, roles)

    async def find(self, matcher: str, key: str) -> list[Account]:
        if matcher == "app_metadata":
            users = await self.by_app_metadata(self.rules.options.app_metadata_key, key)
        elif matcher == "enterprise_identity":
            connection = self.rules.options.enterprise_connection
            assert connection is not None  # validated with the mapping
            users = await self.search(
                f"identities.connection:{lucene_phrase(connection)} AND identities.user_id:{lucene_phrase(key)}"
            )
        elif matcher == "email":
            users = await self.by_email(key)
        else:
            raise PermanentError(f"Auth0 has no matcher {matcher!r}")
        return [self.rules.account(u) for u in users]

    async def apply(self, target_id: str, action: Action, fence: Fence) -> Applied:
        kind = action.kind
        if kind is ActionKind.CREATE:
            created = await self.create(action.payload, fence)
            return Applied(target_id=str(created["user_id"]))
        if kind is ActionKind.UPDATE:
            return await self._update(target_id, action, fence)
        if kind in {ActionKind.DISABLE, ActionKind.ENABLE}:
            await self.update(target_id, {"blocked": kind is ActionKind.DISABLE}, fence)
        elif kind in {ActionKind.REVOKE_SESSIONS, ActionKind.REVOKE_REFRESH_TOKENS}:
            return await self._revoke(target_id, kind, fence)
        elif kind is ActionKind.DELETE:
            await self.delete(target_id, fence)
        elif kind is ActionKind.GRANT:
            await self.assign_roles(target_id, action.entitlements, fence)
        elif kind is ActionKind.UNGRANT:
            await self.remove_roles(target_id, action.entitlements, fence)
        else:
            raise PermanentError(f"{kind.value} is not an Auth0 write")
        return Applied()

    async def _update(self, target_id: str, action: Action, fence: Fence) -> Applied:
        try:
            await self.update(target_id, action.payload, fence)
            return Applied()
        except Conflict as exc:
            refused = {p: pair[1] for p, pair in action.diff.items() if self.rules.unique(p)}
            if not refused:
                raise PermanentError(f"Auth0 refused the update of {target_id} with a conflict: {exc}") from exc
        rest = nest({p: pair[1] for p, pair in action.diff.items() if p not in refused})
        if rest:
            await self.update(target_id, rest, fence)
        return Applied(refused=refused)

    async def _revoke(self, target_id: str, kind: ActionKind, fence: Fence) -> Applied:
        what = "sessions" if kind is ActionKind.REVOKE_SESSIONS else "refresh tokens"
        try:
            if kind is ActionKind.REVOKE_SESSIONS:
                await self.revoke_sessions(target_id, fence)
            else:
                await self.revoke_refresh_tokens(target_id, fence)
        except (Refused, NotFound) as exc:
            status = exc.status if isinstance(exc, Refused) else 404
            return Applied(
                warning=f"Auth0 refused ({status}; revocation needs the Enterprise plan): the account is blocked, "
                f"but existing {what} stay valid until they expire"
            )
        return Applied()

    async def accounts(self) -> AsyncIterator[Account]:
        """Every account with its managed roles: the holders of each managed role first (checkpoint
        paging, no call per user), then every user through the list API up to 1,000 accounts and an
        export job beyond (streamed), with only the fields the mapping compares."""
        holders: dict[str, set[str]] = {}
        if self.section.managed:
            for name, role_id in (await self.role_ids(sorted(self.section.managed))).items():
                for user_id in await self.role_members(role_id):
                    holders.setdefault(user_id, set()).add(name)
        shared: dict[frozenset[str], frozenset[str]] = {}  # one frozenset per distinct set of roles
        total = await self.count_users()
        paths = [a.target for a in self.section.attributes] + [self.rules.options.owner_path]
        extra = ("identities",) if self.rules.options.enterprise_connection else ()
        fields = sorted({*BASE_FIELDS, *extra, *(p.split(".", 1)[0] for p in paths)})
        users = self.export_users(fields) if total > LIST_LIMIT else self.list_users(fields)
        self.read_by = "export job" if total > LIST_LIMIT else "list"
        async for user in users:
            names = frozenset(holders.get(str(user["user_id"]), ()))
            yield self.rules.account(user, shared.setdefault(names, names))

    async def total(self) -> int:
        return await self.count_users()

    # -- reads -------------------------------------------------------------------------------------

    async def get(self, user_id: str) -> dict[str, Any] | None:
        try:
            user = await self._call("users.get", lambda: self.client.users.get(user_id))
        except NotFound:
            return None
        return _dump(user)

    async def by_email(self, email: str) -> list[dict[str, Any]]:
        # Auth0 keeps database emails in lower case and this lookup is exact: normalise first.
        found = await self._call("users.by_email", lambda: self.client.users.list_users_by_email(email=email.lower()))
        return [_dump(u) for u in found or []]

    async def search(self, q: str) -> list[dict[str, Any]]:
        """First page of a v3 search (eventually consistent; used for matching, never to decide a
        create on its own)."""
        pager = await self._call(
            "users.search",
            lambda: self.client.users.list(q=q, search_engine="v3", per_page=PAGE, page=0, include_totals=True),
        )
        return [_dump(u) for u in pager.items or []]

    async def by_app_metadata(self, key: str, entra_id: str) -> list[dict[str, Any]]:
        return await self.search(f"app_metadata.{key}:{lucene_phrase(entra_id)}")

    async def roles_of(self, user_id: str) -> frozenset[str]:
        names: set[str] = set()
        page = 0
        while True:
            pager = await self._call(
                "users.roles.list",
                lambda p=page: self.client.users.roles.list(user_id, per_page=PAGE, page=p, include_totals=True),  # type: ignore[misc]
            )
            items = pager.items or []
            names.update(str(r.name) for r in items)
            total = getattr(pager.response, "total", None)
            if len(items) < PAGE or (total is not None and (page + 1) * PAGE >= total):
                return frozenset(names)
            page += 1

    async def role_ids(self, names: Iterable[str]) -> dict[str, str]:
        """Role name (or ``rol_`` id) -> id, from a cached list of the tenant's roles."""
        wanted = list(names)
        ids = await self._roles()
        missing = [n for n in wanted if not n.startswith("rol_") and n not in ids]
        if missing:
            async with self._role_lock:
                self._role_ids = None  # a role may have been created since: read once more
            ids = await self._roles()
            missing = [n for n in wanted if not n.startswith("rol_") and n not in ids]
            if missing:
                raise PermanentError(f"the mapping names Auth0 roles that do not exist: {', '.join(sorted(missing))}")
        return {n: (n if n.startswith("rol_") else ids[n]) for n in wanted}

    async def _roles(self) -> dict[str, str]:
        async with self._role_lock:
            if self._role_ids is None:
                ids: dict[str, str] = {}
                page = 0
                while True:
                    pager = await self._call(
                        "roles.list",
                        lambda p=page: self.client.roles.list(per_page=PAGE, page=p, include_totals=True),  # type: ignore[misc]
                    )
                    items = pager.items or []
                    ids.update({str(r.name): str(r.id) for r in items})
                    total = getattr(pager.response, "total", None)
                    if len(items) < PAGE or (total is not None and (page + 1) * PAGE >= total):
                        break
                    page += 1
                self._role_ids = ids
            return self._role_ids

    # -- the operator's check ----------------------------------------------------------------------

    async def live_check(self) -> tuple[list[str], list[str]]:
        """The roles the section grants and the connections it names, looked up in the tenant."""
        ran: list[str] = []
        problems: list[str] = []
        wanted = sorted(n for n in self.section.managed if not n.startswith("rol_"))
        known = await self._roles()
        missing = [n for n in wanted if n not in known]
        ran.append(f"roles: {len(wanted) - len(missing)} of {len(wanted)} the mapping grants exist in Auth0")
        for name in missing:
            hint = nearest(name, sorted(known))
            problems.append(
                f"{self.name}: the mapping grants the role {name!r}, which Auth0 does not have"
                + (f" (did you mean {hint!r}?)" if hint else "")
            )
        options = self.rules.options
        named = {"connection": options.connection, "enterprise_connection": options.enterprise_connection or ""}
        for what, connection in named.items():
            if not connection:
                continue
            try:
                await self.connection_id(connection)
                ran.append(f"{what}: {connection!r} exists in Auth0")
            except PermanentError:
                problems.append(f"{self.name}: {what} {connection!r} is not a connection of this Auth0 tenant")
        return ran, problems

    # -- bulk reads (reconciliation) -----------------------------------------------------------------

    async def count_users(self) -> int:
        pager = await self._call(
            "users.list", lambda: self.client.users.list(per_page=1, page=0, include_totals=True, fields="user_id")
        )
        return int(getattr(pager.response, "total", 0) or 0)

    async def list_users(self, fields: list[str]) -> AsyncIterator[dict[str, Any]]:
        """Every user by paging the list (Auth0 serves at most the first 1,000 this way)."""
        page = 0
        while True:
            pager = await self._call(
                "users.list",
                lambda p=page: self.client.users.list(  # type: ignore[misc]
                    per_page=PAGE, page=p, include_totals=True, fields=",".join(fields), include_fields=True
                ),
            )
            items = pager.items or []
            for user in items:
                yield _dump(user)
            total = getattr(pager.response, "total", None)
            if len(items) < PAGE or (total is not None and (page + 1) * PAGE >= total):
                return
            page += 1

    async def export_users(
        self, fields: list[str], timeout_s: float = 3600.0, poll_s: float = 1.0
    ) -> AsyncIterator[dict[str, Any]]:
        """Every user through an export job (gzipped NDJSON), streamed line by line: the way past the
        1,000-user ceiling of search and list."""
        job = await self._call(
            "jobs.users_exports",
            lambda: self.client.jobs.users_exports.create(format="json", fields=[{"name": f} for f in fields]),
        )
        job_id = str(job.id)
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self._call("jobs.get", lambda: self.client.jobs.get(job_id))
            state = str(status.status)
            if state == "completed":
                location = str(getattr(status, "location", "") or "")
                break
            if state == "failed":
                raise TransientError(f"Auth0 export job {job_id} failed")
            if time.monotonic() > deadline:
                raise TransientError(f"Auth0 export job {job_id} did not finish within {timeout_s:.0f} s")
            await asyncio.sleep(poll_s)
        if not location:
            raise TransientError(f"Auth0 export job {job_id} completed without a file location")
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)  # gzip
        buffer = b""
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http, http.stream("GET", location) as answer:
            if answer.status_code != 200:
                raise TransientError(f"Auth0 export download answered {answer.status_code}")
            async for chunk in answer.aiter_bytes():
                buffer += decompressor.decompress(chunk)
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        buffer += decompressor.flush()
        for line in buffer.split(b"\n"):
            if line.strip():
                yield json.loads(line)

    async def role_members(self, role_id: str) -> set[str]:
        """User ids holding a role (checkpoint paging), for role drift without one call per user."""
        members: set[str] = set()
        cursor: str | None = None
        while True:
            pager = await self._call(
                "roles.users.list",
                lambda c=cursor: self.client.roles.users.list(role_id, take=PAGE, from_=c),  # type: ignore[misc]
            )
            members.update(str(u.user_id) for u in pager.items or [])
            cursor = getattr(pager.response, "next", None)
            if not cursor or not pager.items:
                return members

    # -- bulk writes (import-job backfill) -------------------------------------------------------------

    async def connection_id(self, name: str) -> str:
        """The id of the connection called ``name`` (import jobs address connections by id)."""
        pager = await self._call("connections.list", lambda: self.client.connections.list(name=name, take=PAGE))
        for conn in pager.items or []:
            if str(conn.name) == name:
                return str(conn.id)
        raise PermanentError(f"Auth0 has no connection named {name!r}")

    async def start_import(self, connection_id: str, users_json: bytes, external_id: str = "") -> str:
        """Start a ``/jobs/users-imports`` job for one JSON array file; returns the job id."""
        extra: dict[str, Any] = {"external_id": external_id} if external_id else {}
        job = await self._call(
            "jobs.users_imports",
            lambda: self.client.jobs.users_imports.create(
                users=("users.json", users_json, "application/json"),
                connection_id=connection_id,
                upsert=False,
                send_completion_email=False,
                **extra,
            ),
        )
        return str(job.id)

    async def job(self, job_id: str) -> dict[str, Any]:
        return _dump(await self._call("jobs.get", lambda: self.client.jobs.get(job_id)))

    async def job_errors(self, job_id: str) -> list[dict[str, Any]]:
        """The per-user errors of a finished import job (empty when none failed)."""
        found = await self._call("jobs.errors", lambda: self.client.jobs.errors.get(job_id))
        if found is None:
            return []
        return [_dump(e) for e in found] if isinstance(found, list) else [_dump(found)]

    async def assign_role_users(self, role_id: str, user_ids: list[str]) -> None:
        """Give one role to many users in one call (``POST /roles/{id}/users``)."""
        await self._call("roles.users.assign", lambda: self.client.roles.users.assign(role_id, users=user_ids))

    # -- writes ------------------------------------------------------------------------------------
    # Each takes the caller's ``fence`` (see ``_call``).

    async def create(self, payload: Mapping[str, Any], fence: Fence | None = None) -> dict[str, Any]:
        body = dict(payload)
        body.setdefault("password", random_password())
        created = await self._call("users.create", lambda: self.client.users.create(**body), fence)
        return _dump(created)

    async def update(self, user_id: str, patch: Mapping[str, Any], fence: Fence | None = None) -> None:
        await self._call("users.update", lambda: self.client.users.update(user_id, **patch), fence)

    async def delete(self, user_id: str, fence: Fence | None = None) -> None:
        with contextlib.suppress(NotFound):  # already gone: the goal is reached
            await self._call("users.delete", lambda: self.client.users.delete(user_id), fence)

    async def revoke_sessions(self, user_id: str, fence: Fence | None = None) -> None:
        await self._call("users.sessions.delete", lambda: self.client.users.sessions.delete(user_id), fence)

    async def revoke_refresh_tokens(self, user_id: str, fence: Fence | None = None) -> None:
        await self._call("users.refresh_tokens.delete", lambda: self.client.users.refresh_token.delete(user_id), fence)

    async def assign_roles(self, user_id: str, names: Iterable[str], fence: Fence | None = None) -> None:
        ids = list((await self.role_ids(names)).values())
        await self._call("users.roles.assign", lambda: self.client.users.roles.assign(user_id, roles=ids), fence)

    async def remove_roles(self, user_id: str, names: Iterable[str], fence: Fence | None = None) -> None:
        ids = list((await self.role_ids(names)).values())
        await self._call("users.roles.delete", lambda: self.client.users.roles.delete(user_id, roles=ids), fence)


# The Management API scope each call needs, by its operation name.
SCOPES: Final = {
    "users.get": "read:users", "users.list": "read:users", "users.search": "read:users",
    "users.by_email": "read:users", "users.roles.list": "read:users and read:roles", "users.create": "create:users",
    "users.update": "update:users and update:users_app_metadata", "users.delete": "delete:users",
    "users.roles.assign": "update:users", "users.roles.delete": "update:users", "roles.list": "read:roles",
    "roles.users.assign": "update:roles", "roles.users.list": "read:roles and read:users",
    "users.sessions.delete": "delete:sessions", "users.refresh_tokens.delete": "delete:refresh_tokens",
    "connections.list": "read:connections", "jobs.users_imports": "create:users", "jobs.users_exports": "read:users",
    "jobs.get": "read:users", "jobs.errors": "read:users",
}  # fmt: skip


def scope_for(op: str) -> str:
    return SCOPES.get(op, "")


def _translate(op: str, exc: ApiError, now: float) -> Exception:
    status = exc.status_code or 0
    body = exc.body if isinstance(exc.body, dict) else {}
    message = f"Auth0 {op}: {status} {body.get('errorCode') or body.get('error') or ''} {body.get('message') or ''}"
    message = message.strip()
    if status in (401, 403) and scope_for(op):
        message += (
            f" (the Management API client needs the scope {scope_for(op)}: grant it under Applications > APIs >"
            " Auth0 Management API > Machine to Machine Applications in the Auth0 dashboard)"
        )
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status == 403:
        return Refused(message, status)
    if status >= 500 or status in (408, 0):
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        return TransientError(message, retry_after(headers.get("retry-after"), now))
    return PermanentError(message)
