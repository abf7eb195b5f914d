"""A SCIM 2.0 application as a :class:`~shared.core.ports.Target`, through scim2-client.

**Discovery.** ``/ServiceProviderConfig`` is read on first use and again after
:data:`DISCOVERY_TTL_S` (and at the start of every reconciliation or backfill, through
:meth:`ScimTarget.discover`); ``/Schemas`` is read where the server serves it. Updates go as PATCH
with only what differs where the server supports PATCH, else as a PUT of the whole resource (PUT
is mandatory in RFC 7644, PATCH is not; Entra's own SCIM API is the other way round, and gets
PATCH). With ETags, writes carry ``If-Match`` of the version read, and a 412 is a read that went
stale: read again and write again, up to :data:`STALE_ATTEMPTS` times, then the share goes back to
the queue.

**Correlation.** ``externalId`` is the Entra object id. A server that refuses ``externalId eq``
filters (400 ``invalidFilter``) is matched by ``userName`` from then on, and every create says in
its audit row that a rename of the user cannot then be followed.

**Groups.** Each ``groups`` entry of the section is one SCIM group with ``externalId`` = the Entra
group's object id, found by that (else adopted by its ``displayName``), created with no members
when missing, renamed when the section gives it another name. Members are added and removed with
PATCH (removal in the RFC form ``members[value eq "<id>"]``), or on a server without PATCH by a
PUT of the group read just before (with ``If-Match`` where versions are kept); this process's
writes of one group take turns, and the member changes asked for meanwhile go in the next write
together (at most :data:`MEMBER_BATCH`). No other group is ever touched.
Groups this target created or adopted are remembered in the state table, so that
``delete_unmapped_groups`` deletes one once the section drops it, and nothing else.

**Errors.** 429 and 503 are waited out per ``Retry-After`` (:mod:`shared.targets.scim.client`);
answers that mean bad data (``invalidValue``, ``invalidSyntax``, ``mutability``, ...) are
permanent and carry the server's ``detail``; a 2xx that is not a valid SCIM resource is an error;
a refused token is transient (nothing is lost; the circuit breaker stops calling).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import httpx2
from pydantic import ValidationError
from scim2_client import SCIMClientException
from scim2_models import (
    Context,
    Group,
    ListResponse,
    NotFoundException,
    PatchOp,
    PreconditionFailedException,
    Schema,
    SCIMException,
    SearchRequest,
    ServiceProviderConfig,
    UniquenessException,
)

from shared.clock import Clock
from shared.core.model import Account, Action, ActionKind
from shared.core.ports import Applied, Fence, StateStore
from shared.errors import Conflict, NotFound, PermanentError, TransientError, TryLater
from shared.mapping.model import TargetSection
from shared.services.ratelimit import RateGate
from shared.targets.scim import paging, paths
from shared.targets.scim.client import USER, ScimClient
from shared.targets.scim.filters import eq, quote
from shared.targets.scim.rules import CAPABILITIES, OWNER, ScimOptions, ScimRules

log = logging.getLogger("entra_sync.scim")

T = TypeVar("T")
DISCOVERY_TTL_S: Final = 900.0
GROUPS_TTL_S: Final = 600.0
REMEMBERED: Final = 4096  # resources read recently (a PATCH of a typed element needs to know it exists)
STATE_KIND: Final = "scim_groups"
PATCH_ANSWER: Final = {"excludedAttributes": "groups"}  # asks a user PATCH to answer with the resource
NO_EXTERNAL_ID: Final = (
    "this SCIM server refuses externalId filters: accounts are matched by userName, so a change of "
    "the user's userName (an email change) cannot be followed"
)
_SIMPLE: Final = frozenset({OWNER, "active"})
_BAD_DATA: Final = frozenset(
    {"invalidValue", "invalidSyntax", "mutability", "invalidPath", "noTarget", "invalidFilter", "tooMany",
     "sensitive", "invalidVers"}
)  # fmt: skip


@dataclass
class Server:
    """What the server said it supports (ServiceProviderConfig), and what it was found to refuse."""

    patch: bool = True
    etag: bool = False
    bulk_max: int = 0
    filter: bool = True
    max_results: int = 1000  # the most resources one answer holds (filter.maxResults, pagination.maxPageSize)
    cursor: bool = False  # pages by cursor (RFC 9865), as the pagination block offers
    enterprise: bool | None = None  # whether /Schemas lists the enterprise extension (None: not served)
    externalid_filter: bool | None = None  # None until a filter on externalId was tried
    members_filter: bool | None = None


@dataclass
class GroupRef:
    id: str
    display_name: str
    external_id: str | None


@dataclass
class _Resolved:
    """What a lookup of one section group found (``None``: no such group then), and when."""

    ref: GroupRef | None
    at: float


@dataclass
class _Index:
    """The section's groups as the server has them, by Entra group id."""

    by_group: dict[str, GroupRef] = field(default_factory=dict)

    def name_of(self, scim_id: str, names: Mapping[str, str]) -> str | None:
        for gid, ref in self.by_group.items():
            if ref.id == scim_id:
                return names.get(gid)
        return None


MEMBER_BATCH: Final = 100  # member changes of one group sent in one request, at most


@dataclass
class _MemberChange:
    user_id: str
    add: bool
    fence: Fence
    done: asyncio.Future[None]


@dataclass
class _GroupWriter:
    """The member changes of one group waiting for its next write, and whose turn it is."""

    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: list[_MemberChange] = field(default_factory=list)


class Stale(TransientError):
    """412: the version sent in ``If-Match`` is no longer the resource's; read it again."""


STALE_ATTEMPTS = 3  # reads and writes of one resource before a 412 goes back to the queue


class ScimTarget:
    capabilities = CAPABILITIES

    def __init__(
        self,
        section: TargetSection,
        http: httpx2.AsyncClient,
        *,
        clock: Clock,
        state: StateStore | None = None,
        gate: RateGate | None = None,
    ):
        self.name = section.name
        self.section = section
        self.rules = ScimRules(section)
        self.options: ScimOptions = self.rules.options
        self.http = http
        self.scim = ScimClient(http, section.name, gate or RateGate(clock, name=section.name))
        self.clock = clock
        self.state = state
        self.server = Server()
        self.notes: list[str] = []  # what discovery found worth telling (once each)
        self.read_by = "list"
        self._discovered_at = -math.inf
        self._discovery = asyncio.Lock()
        self._resolved: dict[str, _Resolved] = {}  # Entra group id -> its SCIM group, see _resolve()
        self._groups_lock = asyncio.Lock()
        self._making: dict[str, asyncio.Lock] = {}  # Entra group id -> held while it is made right
        self._writers: dict[str, _GroupWriter] = {}  # SCIM group id -> its member changes
        self.linger_s = 0.0  # see gathering()
        self._seen: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Entra group id -> the SCIM group's name, and the other way round (case-insensitive).
        self.group_names: dict[str, str] = {g.group: g.entitlements[0] for g in section.grants}
        self._group_of: dict[str, str] = {n.casefold(): gid for gid, n in self.group_names.items()}

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- plumbing ------------------------------------------------------------------------------------

    async def _call(
        self, op: str, fn: Callable[..., Awaitable[T]], *args: Any, fence: Fence | None = None, **kwargs: Any
    ) -> T:
        """One request: ``fn(*args, **kwargs)``, fenced right before it leaves, its errors translated."""
        if fence is not None:
            fence()
        try:
            return await fn(*args, **kwargs)
        except TryLater:
            raise
        except TransientError:
            raise
        except UniquenessException as exc:
            raise Conflict(f"{self.name} {op}: 409 uniqueness: {_detail(exc)}") from exc
        except NotFoundException as exc:
            raise NotFound(f"{self.name} {op}: 404 {_detail(exc)}") from exc
        except PreconditionFailedException as exc:
            raise Stale(f"{self.name} {op}: 412: the resource changed since it was read") from exc
        except SCIMException as exc:
            raise _translate(self.name, op, exc) from exc
        except ValidationError as exc:
            raise PermanentError(f"{self.name} {op}: a value the SCIM schema refuses: {_first_error(exc)}") from exc
        except SCIMClientException as exc:  # a 2xx that is not a valid SCIM resource, a wrong content type
            raise TransientError(f"{self.name} {op}: the answer is not valid SCIM: {exc}") from exc

    def _valid(self, model: Any, data: Mapping[str, Any], context: Context | None = None) -> Any:
        """``data`` as a scim2-models resource or message; a value the schema refuses (an email
        that is not one) is bad data: permanent, naming the attribute, never retried."""
        try:
            return model.model_validate(data, scim_ctx=context) if context else model.model_validate(data)
        except ValidationError as exc:
            raise PermanentError(f"{self.name}: a value the SCIM schema refuses: {_first_error(exc)}") from exc

    async def discover(self, *, force: bool = False) -> Server:
        """Read what the server supports (once per :data:`DISCOVERY_TTL_S`, or now with ``force``)."""
        async with self._discovery:
            if not force and self.clock.now() - self._discovered_at < DISCOVERY_TTL_S:
                return self.server
            config = await self._call("discovery", self.scim.query, ServiceProviderConfig)
            if not isinstance(config, ServiceProviderConfig):
                raise TransientError(f"{self.name}: /ServiceProviderConfig is not a ServiceProviderConfig")
            known = self.server
            pagination = config.pagination
            max_results = [config.filter.max_results if config.filter else None]
            max_results.append(pagination.max_page_size if pagination else None)
            self.server = Server(
                patch=bool(config.patch and config.patch.supported),
                etag=bool(config.etag and config.etag.supported),
                bulk_max=int(config.bulk.max_operations or 0) if config.bulk and config.bulk.supported else 0,
                filter=bool(config.filter and config.filter.supported),
                max_results=min((int(n) for n in max_results if n), default=1000),
                cursor=bool(pagination and pagination.cursor),
                enterprise=await self._serves_enterprise(),
                externalid_filter=known.externalid_filter,
                members_filter=known.members_filter,
            )
            self._discovered_at = self.clock.now()
            if not self.server.filter:
                self._note(f"{self.name} does not support filters: only the link finds an account, joiners are created")
            uses_enterprise = any(p.extension for p in self.rules.paths.values())
            if uses_enterprise and self.server.enterprise is False:
                self._note(
                    f"{self.name} does not list the enterprise extension in /Schemas; its attributes may be lost"
                )
            return self.server

    async def _serves_enterprise(self) -> bool | None:
        try:
            listed = await self._call("discovery", self.scim.query, Schema)
        except (PermanentError, TransientError):
            return None  # /Schemas is optional: go by ServiceProviderConfig alone
        if not isinstance(listed, ListResponse):
            return None
        return any(str(s.id) == paths.ENTERPRISE for s in listed.resources or ())

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.warning("%s", text)

    def _remember(self, resource: dict[str, Any]) -> dict[str, Any]:
        rid = str(resource.get("id") or "")
        if rid:
            self._seen[rid] = resource
            self._seen.move_to_end(rid)
            while len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
        return resource

    async def _current(self, target_id: str) -> dict[str, Any]:
        known = self._seen.get(target_id)
        if known is not None:
            return known
        account = await self.read(target_id, entitlements=False)
        if account is None:
            raise NotFound(f"{self.name}: no user {target_id}")
        return dict(account.data)

    # -- the Target port -----------------------------------------------------------------------------

    async def read(self, target_id: str, *, entitlements: bool = True) -> Account | None:
        await self.discover()
        try:
            user = await self._call("users.get", self.scim.query, USER, target_id)
        except NotFound:
            self._seen.pop(target_id, None)
            return None
        data = self._remember(_dump(user))
        groups = await self._groups_of(data) if entitlements and self.group_names else frozenset()
        return self.rules.account(data, groups)

    async def find(self, matcher: str, key: str) -> list[Account]:
        server = await self.discover()
        attribute = {"externalId": OWNER, "userName": "userName", "email": "emails.value"}.get(matcher)
        if attribute is None:
            raise PermanentError(f"{self.name} has no matcher {matcher!r}")
        if not server.filter or (matcher == "externalId" and server.externalid_filter is False):
            return []
        request = _search(filter=eq(attribute, key), count=10)
        try:
            found = await self._call(f"users.find.{matcher}", self.scim.query, USER, query_parameters=request)
        except PermanentError as exc:
            if matcher == "externalId" and "invalidFilter" in str(exc):
                server.externalid_filter = False
                self._note(f"{self.name}: {NO_EXTERNAL_ID}")
                return []
            raise
        if matcher == "externalId":
            server.externalid_filter = True
        return [self.rules.account(self._remember(_dump(r))) for r in _resources(found)]

    async def apply(self, target_id: str, action: Action, fence: Fence) -> Applied:
        server = await self.discover()
        kind = action.kind
        if kind is ActionKind.CREATE:
            user = self._valid(USER, dict(action.payload), Context.RESOURCE_CREATION_REQUEST)
            created = await self._call("users.create", self.scim.create, USER, user, fence=fence)
            data = self._remember(_dump(created))
            warning = NO_EXTERNAL_ID if server.externalid_filter is False else ""
            return Applied(target_id=str(data["id"]), warning=warning)
        if kind is ActionKind.UPDATE:
            return await self._update(target_id, dict(action.payload), fence)
        if kind in {ActionKind.DISABLE, ActionKind.ENABLE}:
            return await self._update(target_id, {"active": kind is ActionKind.ENABLE}, fence)
        if kind is ActionKind.DELETE:
            with contextlib.suppress(NotFound):  # already gone: what was wanted
                await self._call("users.delete", self.scim.delete, USER, target_id, fence=fence)
            self._seen.pop(target_id, None)
            return Applied()
        if kind is ActionKind.GRANT:
            for name in sorted(action.entitlements):
                ref = await self._group(name, fence)
                try:
                    await self._member(ref.id, target_id, fence, add=True)
                except NotFound:  # the group was deleted on the server since it was resolved: make it again
                    self._forget_group(ref.id)
                    ref = await self._group(name, fence)
                    await self._member(ref.id, target_id, fence, add=True)
            return Applied()
        if kind is ActionKind.UNGRANT:
            for name in sorted(action.entitlements):
                gid = self._group_of.get(name.casefold(), "")
                held = await self._resolve(gid, self.group_names.get(gid, name)) if gid else None
                if held is None:
                    continue  # no such group on the server: nobody is in it
                try:
                    await self._member(held.id, target_id, fence, add=False)
                except NotFound:  # deleted on the server meanwhile: nobody is in it any more
                    self._forget_group(held.id)
            return Applied()
        raise PermanentError(f"a SCIM target cannot {kind.value}")

    async def live_check(self) -> tuple[list[str], list[str]]:
        """The server's ServiceProviderConfig, and a listing of one user with the token (a server
        may serve its configuration to anyone)."""
        ran: list[str] = []
        server = await self.discover(force=True)
        features = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in
                             (("PATCH", server.patch), ("ETags", server.etag), ("cursors", server.cursor)))  # fmt: skip
        ran.append(f"ServiceProviderConfig read ({features})")
        listed = await self._call("users.list", self.scim.query, USER, query_parameters=_search(count=1))
        total = listed.total_results if isinstance(listed, ListResponse) else None
        ran.append(f"the token lists users ({total if total is not None else 'an unknown number'} in all)")
        return ran, []

    async def accounts(self) -> AsyncIterator[Account]:
        """Every user, a page at a time (by cursor where the server offers it, else by
        ``startIndex``), with the section's groups read once each (their members) instead of a
        call per user. A listing the server cannot give whole raises
        :class:`~shared.targets.scim.paging.PartialListing` (see :mod:`~shared.targets.scim.paging`):
        reconciliation and backfill never act on part of it as if it were all."""
        server = await self.discover(force=True)
        members: dict[str, set[str]] = {}
        if self.group_names:
            index = await self._index(force=True)
            for gid, ref in index.by_group.items():
                group = await self._call("groups.get", self.scim.query, Group, ref.id)
                for member in _dump(group).get("members") or ():
                    value = member.get("value") if isinstance(member, Mapping) else None
                    if value:
                        members.setdefault(str(value), set()).add(self.group_names[gid])
        self.read_by = "list by cursor" if server.cursor else "list by startIndex"

        async def fetch(start: int | None, cursor: str | None, count: int) -> paging.Page:
            request = _search(startIndex=start, cursor=cursor, count=count)
            listed = await self._call("users.list", self.scim.query, USER, query_parameters=request)
            resources = [_dump(r) for r in _resources(listed)]  # a ListResponse, or TransientError
            assert isinstance(listed, ListResponse)
            return paging.Page(resources, listed.total_results, listed.next_cursor)

        count = max(1, min(self.options.page_size, server.max_results or self.options.page_size))
        shared: dict[frozenset[str], frozenset[str]] = {}
        async for resources in paging.walk(fetch, count=count, by_cursor=server.cursor, what=f"{self.name} users"):
            for data in resources:
                names = frozenset(members.get(str(data.get("id")), ()))
                yield self.rules.account(data, shared.setdefault(names, names))

    # -- updates -----------------------------------------------------------------------------------

    async def _update(self, target_id: str, changes: dict[str, Any], fence: Fence) -> Applied:
        try:
            await self._write(target_id, changes, fence)
        except Conflict:
            if "userName" not in changes or len(changes) == 1:
                if "userName" in changes:
                    return Applied(refused={"userName": changes["userName"]})
                raise
            # Another user holds the new userName: apply the rest, report that one.
            refused = {"userName": changes.pop("userName")}
            await self._write(target_id, changes, fence)
            return Applied(refused=refused)
        return Applied()

    async def _write(self, target_id: str, changes: Mapping[str, Any], fence: Fence) -> None:
        for attempt in range(1, STALE_ATTEMPTS + 1):
            try:
                return await self._write_once(target_id, changes, fence)
            except Stale:
                self._seen.pop(target_id, None)  # the version remembered is old: read it again
                if attempt == STALE_ATTEMPTS:
                    raise

    async def _write_once(self, target_id: str, changes: Mapping[str, Any], fence: Fence) -> None:
        current = await self._current(target_id)
        headers = self._if_match(current)
        if self.server.patch:
            ops = self._operations(current, changes)
            patch = self._valid(PatchOp[USER], {"Operations": ops})  # type: ignore[valid-type]
            # RFC 7644 section 3.5.2: a PATCH may answer 204 unless attributes are asked for, and a
            # 200 carries the resource as it now is: asked for (without its groups, which a write
            # never needs), it saves the read before this user's next write.
            patched = await self._call(
                "users.patch", self.scim.modify, USER, target_id, patch,
                headers=headers, params=PATCH_ANSWER, fence=fence,
            )  # fmt: skip
            if patched is None:  # a 204 has no body: read it again next time
                self._seen.pop(target_id, None)
            else:
                self._remember(_dump(patched))
            return
        body = paths.merged(current, {self._path(p): v for p, v in changes.items() if p not in _SIMPLE})
        for key in _SIMPLE & set(changes):
            body[key] = changes[key]
        for key in ("meta", "groups"):
            body.pop(key, None)
        user = self._valid(USER, body)  # no request context: it keeps the id the PUT is addressed to
        replaced = await self._call("users.replace", self.scim.replace, USER, user, headers=headers, fence=fence)
        self._remember(_dump(replaced))

    def _if_match(self, current: Mapping[str, Any]) -> dict[str, str]:
        meta = current.get("meta") or {}
        version = meta.get("version") if isinstance(meta, Mapping) else None
        return {"If-Match": str(version)} if self.server.etag and version else {}

    def _path(self, text: str) -> paths.Path:
        return self.rules.paths.get(text) or paths.must(text)

    def _operations(self, current: Mapping[str, Any], changes: Mapping[str, Any]) -> list[dict[str, Any]]:
        """PATCH operations for ``changes`` (RFC 7644 section 3.5.2): a replace per value, a remove per
        value mapped to nothing; a typed element that is not there yet is added whole (a replace
        through a value filter that matches nothing is a 400 noTarget)."""
        ops: list[dict[str, Any]] = []
        for text, value in changes.items():
            if text in _SIMPLE:
                ops.append(_op("replace", text, value))
                continue
            path = self._path(text)
            if path.type:
                exists = paths.read(current, path) is not None or _has_element(current, path)
                if value is None:
                    if exists:
                        ops.append(_op("remove", path.element_path))
                elif exists:
                    ops.append(_op("replace", path.patch_path, value))
                else:
                    primary = {"primary": True} if not current.get(path.attribute) else {}
                    element = {"type": path.type, path.sub: value, **primary}
                    ops.append(_op("add", path.attribute, [element]))
            elif value is None:
                ops.append(_op("remove", path.patch_path))
            else:
                ops.append(_op("replace", path.patch_path, value))
        return ops

    # -- groups ------------------------------------------------------------------------------------

    async def _groups_of(self, user: Mapping[str, Any]) -> frozenset[str]:
        """The section's groups this user is in: from the user's ``groups`` where the server keeps
        it, else one ``members.value eq`` query, else (a server that refuses that filter) a read
        of each group. A group stamped with a section group's ``externalId`` is named by it; the
        section's groups are resolved only for the others."""
        uid = str(user.get("id"))
        listed = user.get("groups")
        if isinstance(listed, list):
            ids = {str(g.get("value")) for g in listed if isinstance(g, Mapping)}
            index = await self._index()
            return frozenset(n for i in ids if (n := index.name_of(i, self.group_names)))
        if self.server.members_filter is not False and self.server.filter:
            request = _search(filter=eq("members.value", uid), attributes=["id", "displayName", OWNER])
            try:
                found = await self._call("groups.find", self.scim.query, Group, query_parameters=request)
            except PermanentError as exc:
                if "invalidFilter" not in str(exc):
                    raise
                self.server.members_filter = False
                self._note(f"{self.name} refuses members.value filters: each group is read to know its members")
            else:
                self.server.members_filter = True
                names = set()
                for group in _resources(found):
                    data = _dump(group)
                    name = self.group_names.get(str(data.get(OWNER)))
                    if name is None:
                        name = (await self._index()).name_of(str(data.get("id")), self.group_names)
                    if name:
                        names.add(name)
                return frozenset(names)
        names = set()
        index = await self._index()
        for gid, ref in index.by_group.items():
            group = await self._call("groups.get", self.scim.query, Group, ref.id)
            if any(isinstance(m, Mapping) and str(m.get("value")) == uid for m in _dump(group).get("members") or ()):
                names.add(self.group_names[gid])
        return frozenset(names)

    async def _index(self, *, force: bool = False) -> _Index:
        """The section's groups on the server, each resolved as :meth:`_resolve` does (``force``:
        every one looked up again now); nothing is created here."""
        index = _Index()
        for gid, name in self.group_names.items():
            ref = await self._resolve(gid, name, fresh=force)
            if ref is not None:
                index.by_group[gid] = ref
        return index

    async def _resolve(self, gid: str, name: str, *, fresh: bool = False) -> GroupRef | None:
        """The SCIM group the section pushes Entra group ``gid`` as (found by ``externalId``, else
        by ``displayName``), or None when the server has none.

        What a lookup found is kept for :data:`GROUPS_TTL_S` and trusted for reads, member
        changes and removals: a group's id does not change, and a write to a group deleted since
        answers 404, which forgets it (:meth:`_forget_group`) and resolves it again. That the
        server had *no* such group is trusted only to know who is not in it: before a group is
        created it is looked up again (:meth:`_make_group`), as another process may have made it."""
        async with self._groups_lock:  # one lookup of a group at a time: concurrent readers share it
            known = self._resolved.get(gid)
            if not fresh and known is not None and self.clock.now() - known.at < GROUPS_TTL_S:
                return known.ref
            ref = await self._find_group(gid, name)
            self._keep(gid, ref)
            return ref

    def _found(self, gid: str) -> GroupRef | None:
        """The group resolved for ``gid`` within :data:`GROUPS_TTL_S`, if one was found."""
        known = self._resolved.get(gid)
        fresh = known is not None and self.clock.now() - known.at < GROUPS_TTL_S
        return known.ref if fresh and known is not None else None

    def _keep(self, gid: str, ref: GroupRef | None) -> None:
        self._resolved[gid] = _Resolved(ref, self.clock.now())

    def _forget_group(self, scim_id: str) -> None:
        for gid, known in list(self._resolved.items()):
            if known.ref is not None and known.ref.id == scim_id:
                del self._resolved[gid]

    async def _find_group(self, gid: str, name: str) -> GroupRef | None:
        for attribute, value in ((OWNER, gid), ("displayName", name)):
            if attribute == OWNER and self.server.externalid_filter is False:
                continue
            request = _search(filter=eq(attribute, value), excludedAttributes=["members"], count=10)
            try:
                found = await self._call("groups.find", self.scim.query, Group, query_parameters=request)
            except PermanentError as exc:
                if attribute == OWNER and "invalidFilter" in str(exc):
                    self.server.externalid_filter = False
                    continue
                raise
            groups = [_dump(g) for g in _resources(found)]
            if attribute == "displayName":  # adopt only one that is not another group's
                groups = [g for g in groups if not g.get(OWNER) or g.get(OWNER) == gid]
            if len(groups) > 1:
                raise PermanentError(
                    f"{self.name}: {len(groups)} groups have {attribute} {value!r}; not guessing which is {name!r}"
                )
            if groups:
                g = groups[0]
                return GroupRef(str(g["id"]), str(g.get("displayName") or ""), g.get(OWNER))
        return None

    async def _group(self, name: str, fence: Fence) -> GroupRef:
        """The section's group ``name`` on the server, made right first: created with no members when
        missing, its ``externalId`` stamped, renamed to the section's name."""
        gid = self._group_of.get(name.casefold())
        if gid is None:
            raise PermanentError(f"{self.name}: the section pushes no group {name!r}")
        # One maker per group in this process: the backfill's concurrent joiners would otherwise
        # each create it (servers seldom keep group names unique).
        async with self._making.setdefault(gid, asyncio.Lock()):
            return await self._make_group(gid, name, fence)

    async def _make_group(self, gid: str, name: str, fence: Fence) -> GroupRef:
        # A group found is trusted; that there was none is not, before a create: look it up now.
        ref = self._found(gid) or await self._resolve(gid, name, fresh=True)
        if ref is None:
            body = self._valid(
                Group, {"displayName": name, OWNER: gid, "members": []}, Context.RESOURCE_CREATION_REQUEST
            )
            try:
                created = _dump(await self._call("groups.create", self.scim.create, Group, body, fence=fence))
            except Conflict:
                ref = await self._find_group(gid, name)
                if ref is None:
                    raise PermanentError(
                        f"{self.name}: a group named {name!r} exists that belongs to another"
                    ) from None
            else:
                ref = GroupRef(str(created["id"]), name, gid)
            await self._pushed(gid)
        attributes: dict[str, str] = {}
        if ref.external_id != gid:
            attributes[OWNER] = gid
        if ref.display_name != name:
            attributes["displayName"] = name
        if attributes:
            await self._change_group(ref.id, fence, attributes=attributes)
            log.info("%s: group %s is now %r (externalId %s)", self.name, ref.id, name, gid)
            ref = GroupRef(ref.id, name, gid)
            await self._pushed(gid)
        self._keep(gid, ref)
        return ref

    async def _member(self, group_id: str, user_id: str, fence: Fence, *, add: bool) -> None:
        """Add ``user_id`` to a group, or remove it, in the next write of that group.

        Writes of one group take turns in this process; every change asked for while one is on
        its way goes in the next, so a group many users join at once (a backfill, a mass move)
        costs one request per :data:`MEMBER_BATCH` members instead of one each. Each change's
        own fence is checked right before the write it goes in, and its caller learns that
        write's outcome: nothing is reported done before the server said so."""
        writer = self._writers.setdefault(group_id, _GroupWriter())
        change = _MemberChange(user_id, add, fence, asyncio.get_running_loop().create_future())
        writer.waiting.append(change)
        async with writer.turn:
            if self.linger_s and not change.done.done() and len(writer.waiting) < MEMBER_BATCH:
                await self.clock.sleep(self.linger_s)  # bulk work: let the changes of others join this write
            while not change.done.done():  # not yet in a write another caller made
                batch, writer.waiting = writer.waiting[:MEMBER_BATCH], writer.waiting[MEMBER_BATCH:]
                await self._write_members(group_id, batch)
        await change.done

    @contextlib.contextmanager
    def gathering(self, seconds: float) -> Iterator[None]:
        """For bulk work (a backfill): each write of a group's members waits up to ``seconds`` for
        the changes of other identities in flight to join it. A server whose group writes cost
        with the group's size (most in-memory ones do) then gets one write per batch, not one per
        member; every change still waits for its own write before it is reported."""
        previous, self.linger_s = self.linger_s, seconds
        try:
            yield
        finally:
            self.linger_s = previous

    async def _write_members(self, group_id: str, batch: list[_MemberChange]) -> None:
        ready: list[_MemberChange] = []
        for change in batch:
            try:
                change.fence()  # a lost lease stops this change alone
            except Exception as exc:
                change.done.set_exception(exc)
            else:
                ready.append(change)
        if not ready:
            return
        wanted = {c.user_id: c.add for c in ready}  # the last wish for a user wins
        try:
            await self._change_group(
                group_id,
                add=[u for u, a in wanted.items() if a],
                remove=[u for u, a in wanted.items() if not a],
            )
        except PermanentError as exc:
            if len(ready) == 1:
                ready[0].done.set_exception(exc)
                return
            # One bad member (a user deleted meanwhile) must not fail the others: one at a time.
            for change in ready:
                try:
                    one_member = [change.user_id]
                    if change.add:
                        await self._change_group(group_id, add=one_member)
                    else:
                        await self._change_group(group_id, remove=one_member)
                except Exception as one:
                    change.done.set_exception(one)
                else:
                    change.done.set_result(None)
        except BaseException as exc:
            for change in ready:
                if not change.done.done():
                    change.done.set_exception(exc if isinstance(exc, Exception) else TransientError(str(exc)))
            if not isinstance(exc, Exception):
                raise
        else:
            for change in ready:
                change.done.set_result(None)

    async def _change_group(
        self,
        group_id: str,
        fence: Fence | None = None,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        """Add and remove members, or set attributes, of one group. With PATCH: one ``add`` of
        ``members`` and the RFC's ``members[value eq "id"]`` remove per member, nothing else of
        the group is sent. A server without PATCH gets the group read and replaced whole, with
        ``If-Match`` where it keeps versions (a 412 is read and written again, so two writers
        never lose a member); without versions two writers in two processes can race, and
        reconciliation puts the loser's member back."""
        if (await self.discover()).patch:
            ops = [_op("replace", key, value) for key, value in (attributes or {}).items()]
            if add:
                ops.append(_op("add", "members", [{"value": member} for member in add]))
            ops.extend(_op("remove", f"members[value eq {quote(member)}]") for member in remove)
            patch = self._valid(PatchOp[Group], {"Operations": ops})
            await self._call("groups.patch", self.scim.modify, Group, group_id, patch, fence=fence)
            return
        gone = set(remove)
        for attempt in range(1, STALE_ATTEMPTS + 1):
            current = _dump(await self._call("groups.get", self.scim.query, Group, group_id))
            members = [
                str(m["value"]) for m in current.get("members") or () if isinstance(m, Mapping) and m.get("value")
            ]
            kept = [m for m in members if m not in gone]
            kept += [m for m in dict.fromkeys(add) if m not in kept]
            body = {k: v for k, v in current.items() if k not in {"meta", "members"}} | dict(attributes or {})
            group = self._valid(Group, body | {"members": [{"value": m} for m in kept]})  # keeps the id to PUT to
            headers = self._if_match(current)
            try:
                await self._call("groups.replace", self.scim.replace, Group, group, headers=headers, fence=fence)
                return
            except Stale:
                if attempt == STALE_ATTEMPTS:
                    raise

    async def _pushed(self, gid: str, *, forget: bool = False) -> None:
        """Remember the Entra groups this target created or adopted a SCIM group for."""
        if self.state is None:
            return
        record = await self.state.get(STATE_KIND, self.name) or {}
        pushed = set(record.get("groups") or ())
        changed = (gid in pushed) if forget else (gid not in pushed)
        if changed:
            pushed = pushed - {gid} if forget else pushed | {gid}
            await self.state.put(STATE_KIND, self.name, {"groups": sorted(pushed)})

    async def tidy(self, apply: bool, fence: Fence | None = None) -> list[str]:
        """Reconciliation's housekeeping of the section's groups: each one there, named as the
        section says, stamped; with ``delete_unmapped_groups``, groups this target pushed for an
        Entra group the section no longer names deleted. A dry run says what it would do."""
        did: list[str] = []
        never: Fence = fence or (lambda: None)
        index = await self._index(force=True)
        for gid, name in self.group_names.items():
            ref = index.by_group.get(gid)
            if ref is not None and ref.display_name == name and ref.external_id == gid:
                continue
            if ref is None:
                done, would = f"created the group {name!r}", f"create the group {name!r}"
            elif ref.display_name != name:
                done = f"renamed the group {ref.display_name!r} to {name!r}"
                would = f"rename the group {ref.display_name!r} to {name!r}"
            else:
                done, would = f"stamped the group {name!r} with externalId {gid}", f"stamp the group {name!r}"
            if apply:
                await self._group(name, never)
            did.append(done if apply else would)
        if self.options.delete_unmapped_groups and self.state is not None:
            record = await self.state.get(STATE_KIND, self.name) or {}
            for gid in sorted(set(record.get("groups") or ()) - set(self.group_names)):
                ref = await self._find_group(gid, "") if self.server.externalid_filter is not False else None
                if ref is None or ref.external_id != gid:
                    if apply:
                        await self._pushed(gid, forget=True)  # gone already (or no longer ours)
                    continue
                if apply:
                    with contextlib.suppress(NotFound):
                        await self._call("groups.delete", self.scim.delete, Group, ref.id, fence=never)
                    await self._pushed(gid, forget=True)
                did.append(f"{'deleted' if apply else 'delete'} the group {ref.display_name!r}, no longer mapped")
        return did


def _op(op: str, path: str, value: Any = None) -> dict[str, Any]:
    """One PATCH operation (RFC 7644 section 3.5.2); a remove carries no value."""
    return {"op": op, "path": path} if op == "remove" else {"op": op, "path": path, "value": value}


def _search(**parameters: Any) -> SearchRequest[Any]:
    """Query parameters by their SCIM names (filter, startIndex, count, attributes, excludedAttributes)."""
    return SearchRequest[Any].model_validate({k: v for k, v in parameters.items() if v is not None})


def _dump(resource: Any) -> dict[str, Any]:
    if isinstance(resource, dict):
        return resource
    dumped: dict[str, Any] = resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    return dumped


def _resources(listed: Any) -> list[Any]:
    if not isinstance(listed, ListResponse):
        raise TransientError("the answer to a search is not a SCIM ListResponse")
    return list(listed.resources or ())


def _has_element(resource: Mapping[str, Any], path: paths.Path) -> bool:
    holder = resource.get(path.extension) if path.extension else resource
    values = holder.get(path.attribute) if isinstance(holder, Mapping) else None
    return isinstance(values, list) and any(
        isinstance(v, Mapping) and str(v.get("type") or "").lower() == path.type.lower() for v in values
    )


def _detail(exc: SCIMException) -> str:
    error = getattr(exc, "error", None)
    detail = getattr(error, "detail", None) or str(exc)
    return str(detail)[:500]


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)[:300]
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', '')}"[:300]


def _translate(name: str, op: str, exc: SCIMException) -> Exception:
    status = int(getattr(exc, "status", 0) or 0)
    scim_type = str(getattr(exc, "scim_type", "") or "")
    message = f"{name} {op}: {status} {scim_type} {_detail(exc)}".replace("  ", " ").strip()
    if status in {401, 403}:
        return TransientError(f"{message} (the server refused the token: check the section's token_setting)")
    if scim_type in _BAD_DATA or 400 <= status < 500:
        return PermanentError(message)
    return TransientError(message)
