"""Auth0 as a target: the :class:`~shared.core.ports.Target` port over ``auth0-python``'s async client.

Retries belong to the worker, not the SDK (the client is built with ``max_retries=0``): a retried
POST after a 5xx could create a duplicate, and a 409 would be retried for seconds. A 429 or a spent
budget closes the target's rate gate until Auth0's bucket serves the next call and paces the calls
after it (:mod:`.ratelimit`), so concurrent invocations wait instead of hammering; a closing of a
second or more holds every instance; a short wait is absorbed here, a longer one becomes
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
from shared.targets.auth0.baseline import WIRE, Difference, Tenant, differences
from shared.targets.auth0.lucene import lucene_phrase
from shared.targets.auth0.policy import ORGANIZATIONS, PENDING, SENT, WELCOME_KEY, Welcome, only_managed
from shared.targets.auth0.ratelimit import throttled
from shared.targets.auth0.rules import CAPABILITIES, Auth0Rules, nest
from shared.targets.auth0.welcome import Sends, WelcomeDesk

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
        welcome: WelcomeDesk | None = None,
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
        self._org_ids: dict[str, str] = {}
        self.desk = welcome
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
        if self.rules.options.policy.organizations:
            data[ORGANIZATIONS] = await self.memberships(target_id)
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
            body, orgs, _ = _split(action.payload)
            created = await self.create(body, fence)
            user_id = str(created["user_id"])
            meta = body.get("app_metadata") or {}
            due, mfa = meta.get(WELCOME_KEY) == PENDING, bool(meta.get("mfa_required"))
            await self._follow_up(user_id, orgs or None, due, mfa, fence)  # a new user is in no organization yet
            return Applied(target_id=user_id)
        if kind is ActionKind.UPDATE:
            return await self._update(target_id, action, fence)
        if kind is ActionKind.ENABLE:
            await self._enable(target_id, fence)
        elif kind is ActionKind.DISABLE:
            await self.update(target_id, {"blocked": True}, fence)
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
        before = action.diff.get("app_metadata.mfa_required", (None, None))[0]
        try:
            await self._write(target_id, action.payload, not before, fence)
            return Applied()
        except Conflict as exc:
            refused = {p: pair[1] for p, pair in action.diff.items() if self.rules.unique(p)}
            if not refused:
                raise PermanentError(f"Auth0 refused the update of {target_id} with a conflict: {exc}") from exc
        rest = nest({p: pair[1] for p, pair in action.diff.items() if p not in refused})
        if rest:
            await self._write(target_id, rest, not before, fence)
        return Applied(refused=refused)

    async def _write(self, user_id: str, payload: Mapping[str, Any], mfa_was_off: bool, fence: Fence) -> None:
        """An update: the user's own fields, then what the policy keeps beside them."""
        patch, orgs, welcome_due = _split(payload)
        if patch:
            await self.update(user_id, patch, fence)
        mfa_now = bool((patch.get("app_metadata") or {}).get("mfa_required")) and mfa_was_off
        await self._follow_up(user_id, orgs, welcome_due, mfa_now, fence)

    async def _follow_up(
        self, user_id: str, orgs: Mapping[str, list[str]] | None, welcome_due: bool, mfa_now: bool, fence: Fence
    ) -> None:
        """After a create or an update: organization membership, the Guardian enrollment ticket when
        MFA just became required (where the section asks), and the welcome when it is due."""
        if orgs is not None:
            await self.set_memberships(user_id, orgs, fence)
        policy = self.rules.options.policy
        if mfa_now and policy.mfa_enrollment_ticket:
            await self.enrollment_ticket(user_id, fence)
        if welcome_due:
            await self._welcome(user_id, "joiner", fence)

    async def _welcome(self, user_id: str, occasion: str, fence: Fence, user: dict[str, Any] | None = None) -> None:
        user = user or await self.get(user_id)
        if user is None:
            raise NotFound(f"Auth0 has no user {user_id} to welcome")
        if self.desk is None:
            raise PermanentError(f"{self.name}: the section sends a welcome, but no welcome desk was built")
        owner = str((user.get("app_metadata") or {}).get(self.rules.options.app_metadata_key) or "")
        sends = Sends(lambda u, w: self.password_ticket(u, w, fence), lambda u: self.verification_email(u, fence))
        await self.desk.welcome(user, owner, self.rules.options.policy.welcome_for(_connection(user)), sends, occasion)
        if occasion == "joiner":
            await self.update(user_id, {"app_metadata": {WELCOME_KEY: SENT}}, fence)

    async def _enable(self, user_id: str, fence: Fence) -> None:
        """An unblock; a welcome again where the connection's ``again_on_enable`` says so (once per
        re-enable: the claim is named after the account's last change before it)."""
        user = await self.get(user_id) if self.rules.options.policy.welcome else None
        await self.update(user_id, {"blocked": False}, fence)
        if user is not None and (user.get("app_metadata") or {}).get(WELCOME_KEY) == SENT:
            welcome = self.rules.options.policy.welcome_for(_connection(user))
            if welcome.again_on_enable and welcome.send != "none":
                await self._welcome(user_id, f"enable:{user.get('updated_at', '')}", fence, user)

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
        members = await self.org_members() if self.rules.options.policy.organizations else None
        users = self.export_users(fields) if total > LIST_LIMIT else self.list_users(fields)
        self.read_by = "export job" if total > LIST_LIMIT else "list"
        async for user in users:
            if members is not None:
                user[ORGANIZATIONS] = members.get(str(user["user_id"]), {})
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
        ran.append(f"scopes the section needs: {', '.join(needed_scopes(self.section))}")
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
        await self._check_policy(ran, problems)
        return ran, problems

    async def _check_policy(self, ran: list[str], problems: list[str]) -> None:
        """The connections, organizations and organization roles the per-user policy names."""
        policy = self.rules.options.policy
        for pick in policy.connections:
            try:
                await self.connection_id(pick.connection)
            except PermanentError:
                entry = pick.entry.removesuffix(".group") + ".connection"
                problems.append(f"{self.name}: {entry} {pick.connection!r} is not a connection of this Auth0 tenant")
        known = await self._roles()
        for org, roles in sorted(policy.managed_roles.items()):
            try:
                await self.org_id(org)
                ran.append(f"organization: {org!r} exists in Auth0")
            except PermanentError:
                problems.append(f"{self.name}: the mapping names the organization {org!r}, which Auth0 does not have")
            problems += [
                f"{self.name}: the organization role {role!r} ({org}) is not a role of this Auth0 tenant"
                for role in sorted(roles) if role not in known
            ]  # fmt: skip

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

    # -- organizations, tickets, emails ----------------------------------------------------------------

    async def org_id(self, name: str) -> str:
        if name not in self._org_ids:
            try:
                org = await self._call("organizations.by_name", lambda: self.client.organizations.get_by_name(name))
            except NotFound:
                raise PermanentError(f"the mapping names an Auth0 organization that does not exist: {name}") from None
            self._org_ids[name] = str(org.id)
        return self._org_ids[name]

    async def memberships(self, user_id: str) -> dict[str, list[str]]:
        """The user's managed organizations and, in each, their managed organization roles."""
        managed = self.rules.options.policy.managed_roles
        pager = await self._call(
            "users.organizations", lambda: self.client.users.organizations.list(user_id, per_page=PAGE, page=0)
        )
        held: dict[str, list[str]] = {}
        for org in pager.items or []:
            name = str(org.name)
            if name not in managed:
                continue
            self._org_ids[name] = str(org.id)
            roles = await self._call(
                "organizations.members.roles.list",
                lambda o=str(org.id): self.client.organizations.members.roles.list(o, user_id, per_page=PAGE),  # type: ignore[misc]
            )
            held[name] = [str(r.name) for r in roles.items or []]
        return only_managed(held, managed)

    async def org_members(self) -> dict[str, dict[str, list[str]]]:
        """User id -> their managed memberships, from each managed organization's member list
        (checkpoint paging, roles included): reconciliation's read, no call per user."""
        managed = self.rules.options.policy.managed_roles
        out: dict[str, dict[str, list[str]]] = {}
        for name in sorted(managed):
            org_id = await self.org_id(name)
            cursor: str | None = None
            while True:
                pager = await self._call(
                    "organizations.members.list",
                    lambda c=cursor, o=org_id: self.client.organizations.members.list(  # type: ignore[misc]
                        o, from_=c, take=PAGE, fields="user_id,roles", include_fields=True
                    ),
                )
                for member in pager.items or []:
                    roles = [str(r.name) for r in getattr(member, "roles", None) or []]
                    out.setdefault(str(member.user_id), {})[name] = sorted(set(roles) & managed[name])
                cursor = getattr(pager.response, "next", None)
                if not cursor or not pager.items:
                    break
        return out

    async def set_memberships(self, user_id: str, want: Mapping[str, list[str]], fence: Fence | None = None) -> None:
        """Converge the user's managed memberships to ``want``, from a fresh read (a remembered
        ``before`` may be stale; every write here is idempotent)."""
        have = await self.memberships(user_id)
        orgs = self.client.organizations
        for name in sorted(set(have) - set(want)):
            org_id = await self.org_id(name)
            await self._call(
                "organizations.members.delete",
                lambda o=org_id: orgs.members.delete(o, members=[user_id]),  # type: ignore[misc]
                fence,
            )
        for name, roles in sorted(want.items()):
            org_id = await self.org_id(name)
            if name not in have:
                await self._call(
                    "organizations.members.create",
                    lambda o=org_id: orgs.members.create(o, members=[user_id]),  # type: ignore[misc]
                    fence,
                )
            held = set(have.get(name, ()))
            if add := sorted(set(roles) - held):
                ids = list((await self.role_ids(add)).values())
                await self._call(
                    "organizations.members.roles.assign",
                    lambda o=org_id, r=ids: orgs.members.roles.assign(o, user_id, roles=r),  # type: ignore[misc]
                    fence,
                )
            if remove := sorted(held - set(roles)):
                ids = list((await self.role_ids(remove)).values())
                await self._call(
                    "organizations.members.roles.delete",
                    lambda o=org_id, r=ids: orgs.members.roles.delete(o, user_id, roles=r),  # type: ignore[misc]
                    fence,
                )

    async def password_ticket(self, user_id: str, welcome: Welcome, fence: Fence | None = None) -> str:
        extra: dict[str, Any] = {"result_url": welcome.result_url} if welcome.result_url else {}
        answer = await self._call(
            "tickets.password_change",
            lambda: self.client.tickets.change_password(
                user_id=user_id, ttl_sec=welcome.ttl_s, mark_email_as_verified=True, **extra
            ),
            fence,
        )
        return str(answer.ticket)

    async def verification_email(self, user_id: str, fence: Fence | None = None) -> None:
        await self._call(
            "jobs.verification_email", lambda: self.client.jobs.verification_email.create(user_id=user_id), fence
        )

    async def enrollment_ticket(self, user_id: str, fence: Fence | None = None) -> None:
        """A Guardian enrollment ticket, emailed by Auth0 (the URL is not kept)."""
        await self._call(
            "guardian.enrollments.ticket",
            lambda: self.client.guardian.enrollments.create_ticket(user_id=user_id, send_mail=True),
            fence,
        )

    # -- the tenant's baseline (reconciliation) ------------------------------------------------------

    @property
    def enforces_baseline(self) -> bool:
        baseline = self.rules.options.baseline
        return baseline is not None and baseline.enforce

    async def baseline_drift(self) -> list[Difference]:
        """Every setting the section's baseline names that the tenant has otherwise (none without one)."""
        baseline = self.rules.options.baseline
        if baseline is None:
            return []
        connections: dict[str, Mapping[str, Any]] = {}
        for name in baseline.connections:
            found = await self._connection(name)
            if found is not None:
                connections[name] = dict(found.get("options") or {})
        factors: dict[str, bool] = {}
        if baseline.factors:
            listed = await self._call("guardian.factors.list", lambda: self.client.guardian.factors.list())
            factors = {str(f.name): bool(f.enabled) for f in listed or []}
        policies: tuple[str, ...] = ()
        if baseline.policies is not None:
            answer = await self._call("guardian.policies.list", lambda: self.client.guardian.policies.list())
            policies = tuple(str(p) for p in answer or [])
        organizations: dict[str, Mapping[str, bool] | None] = {}
        for org in baseline.organizations:
            try:
                org_id = await self.org_id(org)
            except PermanentError:
                organizations[org] = None
                continue
            pager = await self._call(
                "organizations.enabled_connections.list",
                lambda o=org_id: self.client.organizations.enabled_connections.list(o, per_page=PAGE),  # type: ignore[misc]
            )
            organizations[org] = {
                str(c.connection.name): bool(c.assign_membership_on_login) for c in pager.items or [] if c.connection
            }
        return differences(baseline, Tenant(connections, factors, policies, organizations))

    async def enforce_baseline(self, fence: Fence | None = None) -> list[str]:
        """Correct every difference entra-sync can write (read again now: what an operator approved
        is the baseline, not an older reading of the tenant); what was done, a line each."""
        done: list[str] = []
        found = await self.baseline_drift()
        baseline = self.rules.options.baseline
        assert baseline is not None or not found
        for name in sorted({d.subject for d in found if d.kind == "connection" and d.fixable}):
            conn = await self._connection(name)
            assert conn is not None and baseline is not None
            options = dict(conn.get("options") or {})  # sent back whole: Auth0 replaces options whole
            for key, want in baseline.connections[name].items():
                wire = WIRE.get(key, key)
                options[wire] = {**(options.get(wire) or {}), **want} if isinstance(want, Mapping) else want
            await self._call(
                "connections.update",
                lambda c=str(conn["id"]), o=options: self.client.connections.update(c, options=o),  # type: ignore[misc]
                fence,
            )
        for d in found:
            if not d.fixable:
                done.append(f"not corrected (entra-sync does not create it): {d.line()}")
                continue
            if d.kind == "factor":
                await self._call(
                    "guardian.factors.set",
                    lambda n=d.subject, e=bool(d.want): self.client.guardian.factors.set(n, enabled=e),  # type: ignore[misc]
                    fence,
                )
            elif d.kind == "policies":
                await self._call(
                    "guardian.policies.set",
                    lambda r=list(d.want): self.client.guardian.policies.set(request=r),  # type: ignore[misc]
                    fence,
                )
            elif d.kind == "organization":
                await self._org_connection(d, fence)
            done.append(f"corrected: {d.line()}")
        return done

    async def _org_connection(self, d: Difference, fence: Fence | None) -> None:
        org_id = await self.org_id(d.subject)
        name = d.setting.removeprefix("connection ")
        conn_id = await self.connection_id(name)
        enabled = self.client.organizations.enabled_connections
        if d.want == "not enabled":
            await self._call("organizations.enabled_connections.delete", lambda: enabled.delete(org_id, conn_id), fence)
            return
        auto = d.want != "enabled"
        if d.have != "not enabled":
            await self._call(
                "organizations.enabled_connections.update",
                lambda: enabled.update(org_id, conn_id, assign_membership_on_login=auto),
                fence,
            )
            return
        await self._call(
            "organizations.enabled_connections.add",
            lambda: enabled.add(org_id, connection_id=conn_id, assign_membership_on_login=auto),
            fence,
        )

    async def _connection(self, name: str) -> dict[str, Any] | None:
        pager = await self._call("connections.list", lambda: self.client.connections.list(name=name, take=PAGE))
        for conn in pager.items or []:
            if str(conn.name) == name:
                return _dump(conn)
        return None

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


def _split(payload: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]] | None, bool]:
    """(the user's own fields, the organizations wanted or None, whether the welcome is due): the
    welcome's ``sent`` stamp is written only once the welcome went out."""
    body = dict(payload)
    orgs = body.pop(ORGANIZATIONS, None)
    meta = dict(body.get("app_metadata") or {})
    due = meta.get(WELCOME_KEY) == SENT
    if due:
        del meta[WELCOME_KEY]
        if meta:
            body["app_metadata"] = meta
        else:
            body.pop("app_metadata")
    return body, orgs, due


def _connection(user: Mapping[str, Any]) -> str:
    identities = user.get("identities") or [{}]
    return str(identities[0].get("connection") or "")


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
    "organizations.by_name": "read:organizations", "users.organizations": "read:organizations",
    "organizations.members.list": "read:organization_members and read:organization_member_roles",
    "organizations.members.create": "create:organization_members",
    "organizations.members.delete": "delete:organization_members",
    "organizations.members.roles.list": "read:organization_member_roles",
    "organizations.members.roles.assign": "create:organization_member_roles",
    "organizations.members.roles.delete": "delete:organization_member_roles",
    "tickets.password_change": "create:user_tickets", "jobs.verification_email": "update:users",
    "guardian.enrollments.ticket": "create:guardian_enrollment_tickets",
    "connections.update": "update:connections", "guardian.factors.list": "read:guardian_factors",
    "guardian.factors.set": "update:guardian_factors", "guardian.policies.list": "read:mfa_policies",
    "guardian.policies.set": "update:mfa_policies",
    "organizations.enabled_connections.list": "read:organization_connections",
    "organizations.enabled_connections.add": "create:organization_connections",
    "organizations.enabled_connections.update": "update:organization_connections",
    "organizations.enabled_connections.delete": "delete:organization_connections",
}  # fmt: skip


def needed_scopes(section: TargetSection) -> list[str]:
    """The Management API scopes the section needs: the base ones, and each feature's only when the
    section configures it."""
    options = Auth0Rules(section).options
    policy, baseline = options.policy, options.baseline
    needed = {"read:users", "create:users", "update:users", "update:users_app_metadata", "read:connections"}
    if section.managed:
        needed |= {"read:roles", "create:role_members", "delete:role_members"}
    if section.deprovision.action == "delete" or section.deprovision.hard_delete == "delete":
        needed.add("delete:users")
    if section.deprovision.revoke_sessions:
        needed.add("delete:sessions")
    if section.deprovision.revoke_refresh_tokens:
        needed.add("delete:refresh_tokens")
    if policy.organizations:
        needed |= {"read:organizations", "read:organization_members", "read:organization_member_roles",
                   "create:organization_members", "delete:organization_members",
                   "create:organization_member_roles", "delete:organization_member_roles", "read:roles"}  # fmt: skip
    if any(w.send == "password_change_ticket" for w in policy.welcome.values()):
        needed.add("create:user_tickets")
    if policy.mfa_enrollment_ticket:
        needed.add("create:guardian_enrollment_tickets")
    if baseline is not None:
        writes = baseline.enforce
        if baseline.connections and writes:
            needed.add("update:connections")
        if baseline.factors:
            needed |= {"read:guardian_factors", *(["update:guardian_factors"] if writes else [])}
        if baseline.policies is not None:
            needed |= {"read:mfa_policies", *(["update:mfa_policies"] if writes else [])}
        if baseline.organizations:
            needed |= {"read:organizations", "read:organization_connections"}
            if writes:
                needed |= {f"{verb}:organization_connections" for verb in ("create", "update", "delete")}
    return sorted(needed)


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
