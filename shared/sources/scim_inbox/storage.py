"""Users, groups and memberships as SCIM resources over :class:`~.rows.Rows`: scim2-server's
:class:`~scim2_server.storage.AsyncScimStorage` plus what the inbound source reads.

Rows of one source (one partition):

- ``user|<id>``, ``group|<id>``: the resource (members apart), its version, ``changed`` (ms); a
  DELETE leaves a tombstone, so the source reads the identity as deleted and ``changed`` lists it;
- ``name|user|<userName>``, ``name|group|<displayName>`` (compared without case): the uniqueness
  index, written in the same commit as the resource, so two creates of one userName at once store
  one user;
- ``xid|user|<externalId>``, ``xid|group|<externalId>``: the externalId index (Entra may match on
  it), read by key: the ids that carry it (usually one; SCIM does not make externalId unique),
  written with the row's ETag in the same commit as the resource. A RowKey range per externalId
  served the same lookups, but Azurite walks the whole table for a range: 16 ms at 80,000 rows;
- ``member|<group>|<user>`` and ``memberof|<user>|<group>``: one row pair per membership, ``in``
  true or false. A membership change writes only its own rows, so two PATCHes of one group at the
  same moment lose no member (each applies its own diff against what it read), and the group's
  version is bumped in the same commit as the first of them. The worker reads a user's groups
  through the groups the mapping names, by key (:meth:`InboxStorage.groups_named`), not by a scan.

Trusted for: versions change on every write of a resource; a POST repeating a stored user (same
userName and the same non-empty externalId) raises :class:`Replayed` with the stored user instead
of a uniqueness error; a resource that would not fit a row is refused before anything is written.
A request's membership rows past the first commit (more than about 45 changes) are written in
further commits: a crash between them leaves part of a PATCH applied, which Entra's retry of the
PATCH (no answer reached it) completes, since every membership write is idempotent.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
import unicodedata
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

from scim2_models import (
    InvalidValueException,
    Meta,
    NotFoundException,
    NotImplementedException,
    PayloadTooLargeException,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    ScimProvider,
    SearchRequest,
    TooManyException,
    UniquenessException,
)
from scim2_models.path import CompareOperator, Comparison, LogicalExpr, LogicalOperator
from scim2_server.storage import AsyncScimStorage, SearchPage

from shared.clock import SYSTEM, Clock
from shared.core.work import GUID
from shared.sources.scim_inbox.rows import Conflict, Op, Row, Rows, Verb
from shared.sources.scim_inbox.schema import MAX_MEMBERS_CHANGED
from shared.stores.keys import BATCH_LIMIT, MAX_TEXT

ID: Final = GUID  # ids this store issues (and members must be): what a work item's user id is
# Members a PATCH names that are read one by one (at once); past it, one scan of the group's rows.
# A scan costs the group's size (10,000 rows for an everyone group), the point reads what was named:
# 200 covers the batches Entra and the initial push send.
POINT_READS: Final = 200
# A mapping naming at most this many groups has a user's membership of each read by key (the name's
# index row, then the group's row and the membership's): what a worker's read of a user costs,
# whatever the store's size. Past it, the user's membership rows are scanned (a RowKey range: cheap
# in Table Storage, but a walk of the whole table in Azurite: 16 to 37 ms at 80,000 rows, 3 for a
# point read; see bench/azurite_costs.py).
POINT_GROUPS: Final = 16
MAX_SCAN: Final = 20_000  # resources a filter without an indexed `eq` may walk; more is `tooMany`
KINDS: Final = {"User": "user", "Group": "group"}
XID_TRIES: Final = 4  # a create re-reads the externalId index this often when another write took it first


@dataclass
class Touched:
    """The user ids the current request's writes touched (the endpoint enqueues them): a user
    written, or the members a group change added, removed or renamed (``group`` is that group)."""

    users: set[str] = field(default_factory=set)
    group: str = ""


# Per request (a context variable), so concurrent requests on one storage each see their own.
TOUCHED: contextvars.ContextVar[Touched | None] = contextvars.ContextVar("scim_inbox_touched", default=None)


def touch(ids: Iterable[str], group: str = "") -> None:
    """Record users a write touched; ``group``: through that group's membership."""
    touched = TOUCHED.get()
    if touched is not None:
        touched.users.update(ids)
        touched.group = touched.group or group


class Replayed(Exception):
    """A create repeats a stored user (same userName and externalId): ``stored`` is that user."""

    def __init__(self, stored: Resource[Any]):
        super().__init__("a create repeated a stored user")
        self.stored = stored


@dataclass(frozen=True)
class Stored:
    """A user as the source reads it: its resource as a plain dict (None once deleted); its groups
    are read apart (:meth:`InboxStorage.groups_named`), for the groups a mapping names."""

    id: str
    resource: dict[str, Any] | None
    changed: int


def folded(value: str) -> str:
    """How unique names compare (userName, a group's displayName): NFC, without case."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).casefold())


def version_tag(version: int) -> str:
    return f'W/"{version}"'


class InboxStorage(AsyncScimStorage):
    """One inbound source's users and groups (see the module's docstring for the rows)."""

    def __init__(self, rows: Rows, provider: ScimProvider, *, clock: Clock = SYSTEM):
        self.rows = rows
        self.provider = provider
        self.clock = clock

    # -- the SCIM storage -------------------------------------------------------------------------

    async def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        resource, _row = await self.read(resource_type, resource_id, response_parameters=response_parameters)
        return resource

    async def read(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> tuple[Resource[Any], Row]:
        """A live resource and the row it was read from: a PATCH hands the row back to
        :meth:`update` (``read=``), which then writes over that version without reading it again."""
        kind = _kind(resource_type)
        row = await self._live(kind, resource_id)
        members = None
        if kind == "group" and not _excludes_members(response_parameters):
            members = await self.member_entries(resource_id)
        return self._resource(resource_type, row, members), row

    async def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        if len({rt.name for rt in resource_types}) != 1:
            raise NotImplementedException(detail="search one resource type at a time (/Users or /Groups)")
        resource_type = resource_types[0]
        kind = _kind(resource_type)
        scim_filter = search_request.filter
        found: list[Resource[Any]] = []
        async for row in self._candidates(kind, scim_filter):
            resource = self._resource(resource_type, row, None)
            if kind == "group":
                resource = self._resource(resource_type, row, await self.member_entries(resource.id or ""))
            if scim_filter is None or scim_filter.match(resource):
                found.append(resource)
        found.sort(key=lambda r: r.id or "")
        start = search_request.start_index_0 or 0
        stop = None if search_request.count is None else start + search_request.count
        return SearchPage(len(found), found[start:stop])

    async def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        kind = _kind(resource_type)
        new_id = str(uuid.uuid4())
        data = self._data(kind, resource, version=1, created=None)
        members = _member_ids(resource) if kind == "group" else set()
        _check_members(members)
        member_ops = _membership_ops(new_id, await self._entries(resource, members), set(), data["changed"])
        for attempt in range(XID_TRIES):
            ops = [
                Op("insert", f"{kind}|{new_id}", data),
                Op("insert", _name_key(kind, data["unique"]), {"id": new_id}),
            ]
            ops += await self._xid_ops(kind, new_id, None, data.get("externalId"))
            try:
                await self._commit_with_members(ops, member_ops)
                break
            except Conflict as exc:
                if exc.key is not None and exc.key.startswith("xid|") and attempt < XID_TRIES - 1:
                    continue  # another resource took the same externalId meanwhile: read its index again
                if exc.key is not None and not exc.key.startswith("name|"):
                    raise
                raise await self._taken(resource_type, kind, data) from exc
        if kind == "user":
            touch([new_id])
        else:
            touch(members, group=new_id)
        # Answered from what was written (a new id: no other request can have changed it yet).
        return self._resource(resource_type, Row(f"{kind}|{new_id}", data, ""), _entry_list(member_ops))

    async def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
        previous: Resource[Any] | None = None,
        read: Row | None = None,
    ) -> Resource[Any]:
        """Replace a stored resource. For a group, ``previous`` is the state a PATCH was applied to:
        its members are what the change is taken against, so a concurrent PATCH's members stay.
        ``read``: the row ``resource`` was read from (:meth:`read`), written over only if it is
        still that version (as a version read here again would be)."""
        kind = _kind(resource_type)
        resource_id = resource.id or ""
        row = read if read is not None and read.key == f"{kind}|{resource_id}" else await self._live(kind, resource_id)
        version = int(row.data["v"])
        if expected_version is not None and expected_version != version_tag(version):
            raise PreconditionFailedException(detail="the resource changed since it was read")
        data = self._data(kind, resource, version=version + 1, created=row.data["created"])
        ops = [Op("replace", f"{kind}|{resource_id}", data, etag=row.etag)]
        if data["unique"] != row.data["unique"]:
            ops += [
                Op("delete", _name_key(kind, row.data["unique"])),
                Op("insert", _name_key(kind, data["unique"]), {"id": resource_id}),
            ]
        ops += await self._xid_ops(kind, resource_id, row.data.get("externalId"), data.get("externalId"))
        member_ops: list[Op] = []
        before: set[str] = set()
        after: set[str] = set()
        if kind == "group":
            before = _member_ids(previous) if previous is not None else set(await self.members(resource_id))
            after = _member_ids(resource)
            _check_members(after - before)
            added = await self._entries(resource, after - before)
            member_ops = _membership_ops(resource_id, added, before - after, data["changed"])
        try:
            await self._commit_with_members(ops, member_ops)
        except Conflict as exc:
            if exc.key is not None and exc.key.startswith("name|"):
                raise UniquenessException(detail=_taken_detail(kind)) from exc
            raise PreconditionFailedException(detail="the resource changed while it was written") from exc
        if kind == "user":
            touch([resource_id])
            return self._resource(resource_type, Row(f"user|{resource_id}", data, ""), None)  # as written
        if data["unique"] != row.data["unique"]:
            touch(after, group=resource_id)  # a new name may change who a mapping's scope or grants take in
        else:
            touch(after ^ before, group=resource_id)
        return await self.get(resource_type, resource_id)

    async def delete(
        self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None
    ) -> None:
        kind = _kind(resource_type)
        row = await self._live(kind, resource_id)
        if expected_version is not None and expected_version != version_tag(int(row.data["v"])):
            raise PreconditionFailedException(detail="the resource changed since it was read")
        now = self._now_ms()
        tombstone = {"deleted": True, "v": int(row.data["v"]) + 1, "changed": now, "created": row.data["created"]}
        ops = [
            Op("replace", f"{kind}|{resource_id}", tombstone, etag=row.etag),
            Op("delete", _name_key(kind, row.data["unique"])),
        ]
        ops += await self._xid_ops(kind, resource_id, row.data.get("externalId"), None)
        try:
            await self.rows.commit(ops)
        except Conflict as exc:
            raise PreconditionFailedException(detail="the resource changed while it was deleted") from exc
        if kind == "group":
            members = set(await self.members(resource_id))
            await self._commit_all(_membership_ops(resource_id, {}, members, now))
            touch(members, group=resource_id)
        else:
            groups = await self.groups_of(resource_id)
            await self._commit_all(op for gid in groups for op in _membership_ops(gid, {}, {resource_id}, now))
            touch([resource_id])

    async def change_members(self, group_id: str, added: dict[str, dict[str, Any]], removed: set[str]) -> Resource[Any]:
        """Add the members ``added`` (id -> type and display, as sent) and remove ``removed``, reading
        and writing only their rows and the group's (a new version): what a PATCH that names members
        costs, whatever the group's size. The group as stored after, members left out (what the
        answer's ETag is taken from); when nothing changed, as it was (the version stays)."""
        _check_members(set(added))
        named = sorted(set(added) | removed)
        # The group's row, its members' rows and the types of members sent without one, read at once.
        untyped = {m: dict(added[m]) for m in added}
        if len(named) <= POINT_READS:
            row, typed, *rows = await asyncio.gather(
                self._live("group", group_id),
                self._typed(untyped),
                *(self.rows.get(f"member|{group_id}|{m}") for m in named),
            )
            current = {m for m, r in zip(named, rows, strict=True) if r is not None and r.data.get("in")}
        else:
            row, typed, listed = await asyncio.gather(
                self._live("group", group_id), self._typed(untyped), self.members(group_id)
            )
            current = set(listed)
        adding = set(added) - current
        removing = removed & current
        if not adding and not removing:
            # A retry whose first answer was lost (the change stored, not queued): queued again.
            touch(set(added) | removed, group=group_id)
            return self._resource(self._group_type(), row, None)
        entries = {m: typed[m] for m in adding}
        now = self._now_ms()
        data = {**row.data, "v": int(row.data["v"]) + 1, "changed": now, "modified": _iso(now)}
        ops = [Op("replace", f"group|{group_id}", data, etag=row.etag)]
        try:
            await self._commit_with_members(ops, _membership_ops(group_id, entries, removing, now))
        except Conflict as exc:
            raise PreconditionFailedException(detail="the group changed while its members were written") from exc
        touch(adding | removing, group=group_id)
        return self._resource(self._group_type(), Row(row.key, data, ""), None)

    # -- what the source reads --------------------------------------------------------------------

    async def members(self, group_id: str) -> list[str]:
        """The group's member ids, in key order."""
        return [row.key.rsplit("|", 1)[1] async for row in self._each(f"member|{group_id}|") if row.data.get("in")]

    async def member_entries(self, group_id: str) -> list[dict[str, Any]]:
        """The group's members as a resource shows them (value, type, display, a relative $ref)."""
        return [_entry(row.key, row.data) async for row in self._each(f"member|{group_id}|") if row.data.get("in")]

    async def _entries(self, resource: Resource[Any], ids: set[str]) -> dict[str, dict[str, Any]]:
        """Member id -> what its row keeps (type, display), for the members ``ids`` of ``resource``."""
        entries: dict[str, dict[str, Any]] = {}
        for member in getattr(resource, "members", None) or []:
            if member.value in ids:
                entries[str(member.value)] = {"type": member.type, "display": member.display}
        return await self._typed(entries)

    async def _typed(self, entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """``entries`` with a type for each member sent without one (Entra sends none): the one this
        store knows the id by (every such member's user row read at once, then the group rows of the rest)."""
        untyped = [m for m, entry in entries.items() if not entry["type"]]
        for kind, name in KINDS.items():
            found = await asyncio.gather(*(self.rows.get(f"{name}|{m}") for m in untyped))
            for member_id, row in zip(untyped, found, strict=True):
                if row is not None:
                    entries[member_id]["type"] = kind
            untyped = [m for m, row in zip(untyped, found, strict=True) if row is None]
        return entries

    def _group_type(self) -> ResourceType:
        return next(rt for rt in self.provider.resource_types if rt.name == "Group")

    async def groups_of(self, user_id: str) -> frozenset[str]:
        """The ids of the groups the user is a direct member of."""
        ids = [row.key.rsplit("|", 1)[1] async for row in self._each(f"memberof|{user_id}|") if row.data.get("in")]
        return frozenset(ids)

    async def group_names(self, group_ids: Iterable[str]) -> dict[str, str]:
        """Group id -> displayName, for the live ones among ``group_ids``."""
        ids = sorted(group_ids)
        rows = await asyncio.gather(*(self.rows.get(f"group|{gid}") for gid in ids))
        return {
            gid: str(row.data["resource"].get("displayName", ""))
            for gid, row in zip(ids, rows, strict=True)
            if row is not None and not row.data.get("deleted")
        }

    async def groups_named(self, user_id: str, wanted: frozenset[str] | None) -> frozenset[str]:
        """The ids and displayNames of the live groups the user is a direct member of, narrowed to
        ``wanted`` (group ids, or displayNames as spelt) when given. With at most
        :data:`POINT_GROUPS` wanted, each is read by key, at once: no scan, whatever the store holds."""
        if wanted is not None and not wanted:
            return frozenset()
        if wanted is None or len(wanted) > POINT_GROUPS:
            names = await self.group_names(await self.groups_of(user_id))
            found = frozenset(names) | frozenset(n for n in names.values() if n)
            return found if wanted is None else found & wanted
        candidates = await self._group_ids_named(wanted)
        names, member_of = await asyncio.gather(self.group_names(candidates), self._member_of(user_id, candidates))
        return _held(names, member_of, wanted)

    async def wanted_groups(self, wanted: frozenset[str] | None) -> dict[str, str] | None:
        """The live groups ``wanted`` names, id -> displayName, each read by key: what
        :meth:`groups_among` needs to answer for many users with their membership rows alone. None
        where :meth:`groups_named` would scan (no narrowing, or more than :data:`POINT_GROUPS`)."""
        if wanted is None or len(wanted) > POINT_GROUPS:
            return None
        return await self.group_names(await self._group_ids_named(wanted)) if wanted else {}

    async def groups_among(self, user_id: str, groups: Mapping[str, str], wanted: frozenset[str]) -> frozenset[str]:
        """:meth:`groups_named` for one user, given :meth:`wanted_groups`' answer for ``wanted``:
        only the user's membership rows in those groups are read."""
        return _held(groups, await self._member_of(user_id, groups), wanted)

    async def _member_of(self, user_id: str, group_ids: Iterable[str]) -> set[str]:
        """Of ``group_ids``, those the user is a direct member of: each membership row read by key, at once."""
        ids = sorted(group_ids)
        rows = await asyncio.gather(*(self.rows.get(f"member|{gid}|{user_id}") for gid in ids))
        return {gid for gid, row in zip(ids, rows, strict=True) if row is not None and row.data.get("in")}

    async def _group_ids_named(self, wanted: frozenset[str]) -> list[str]:
        """The group ids ``wanted`` may name: its id-shaped entries, and the groups its entries name
        by displayName (an id-shaped entry may be a displayName too: both are looked up)."""
        spelt = sorted(wanted)
        indexes = await asyncio.gather(*(self.rows.get(_name_key("group", folded(n))) for n in spelt))
        return sorted({w for w in wanted if ID.fullmatch(w)} | {str(r.data["id"]) for r in indexes if r})

    async def user(self, user_id: str) -> Stored | None:
        """A user as stored (a tombstone reads with no resource), or None when never stored."""
        if not ID.fullmatch(user_id):
            return None
        row = await self.rows.get(f"user|{user_id}")
        if row is None:
            return None
        return await self._stored(row)

    async def find_user_ids(self, key: str) -> list[str]:
        """Ids of the live users ``key`` names: their id here, their userName (without case) or
        the externalId Entra sent (its object id), through the indexes (keys are encoded by the rows)."""
        key = key.strip()
        ids: set[str] = set()
        if ID.fullmatch(key):
            ids.add(key.lower())
        index = await self.rows.get(_name_key("user", folded(key))) if key else None
        if index is not None:
            ids.add(str(index.data["id"]))
        if key:
            ids |= set(_xids(await self.rows.get(_xid_key("user", key))))
        live = []
        for uid in sorted(ids):
            row = await self.rows.get(f"user|{uid}")
            if row is not None and not row.data.get("deleted"):
                live.append(uid)
        return live

    async def users(self) -> AsyncIterator[list[Stored]]:
        """Every live user, a page at a time."""
        async for page in self.rows.scan("user|"):
            yield [await self._stored(row) for row in page if not row.data.get("deleted")]

    async def changed_since(self, after_ms: int | None) -> set[str]:
        """Ids of the users written (a tombstone too) or whose memberships changed after ``after_ms``."""
        ids = {row.key.split("|", 1)[1] async for row in self._each("user|", after_ms)}
        if after_ms is not None:
            ids |= {row.key.split("|")[1] async for row in self._each("memberof|", after_ms)}
        return ids

    def now_ms(self) -> int:
        return self._now_ms()

    # -- rows ---------------------------------------------------------------------------------------

    async def _each(self, prefix: str, changed_after: int | None = None) -> AsyncIterator[Row]:
        async for page in self.rows.scan(prefix, changed_after=changed_after):
            for row in page:
                yield row

    async def _stored(self, row: Row) -> Stored:
        uid = row.key.split("|", 1)[1]
        if row.data.get("deleted"):
            return Stored(uid, None, int(row.data["changed"]))
        return Stored(uid, dict(row.data["resource"]), int(row.data["changed"]))

    async def _live(self, kind: str, resource_id: str) -> Row:
        row = await self.rows.get(f"{kind}|{resource_id}") if ID.fullmatch(resource_id or "") else None
        if row is None or row.data.get("deleted"):
            raise NotFoundException(detail=f"{kind.capitalize()} {resource_id!r} not found")
        return row

    async def _candidates(self, kind: str, scim_filter: Any) -> AsyncIterator[Row]:
        """The rows a filter can match: through an index for an `eq` on id, userName, a group's
        displayName or externalId (alone or in an `and`), else every resource (at most MAX_SCAN)."""
        lookup = _indexed_eq(scim_filter.ast if scim_filter is not None else None, kind)
        if lookup is None:
            seen = 0
            async for row in self._each(f"{kind}|"):
                if row.data.get("deleted"):
                    continue
                seen += 1
                if seen > MAX_SCAN:
                    raise TooManyException(
                        detail="the filter matches too many resources: filter on userName or externalId"
                    )
                yield row
            return
        attribute, value = lookup
        ids: list[str] = []
        if attribute == "id":
            ids = [value]
        elif attribute == "externalid":
            ids = _xids(await self.rows.get(_xid_key(kind, value)))
        else:
            index = await self.rows.get(_name_key(kind, folded(value)))
            ids = [str(index.data["id"])] if index is not None else []
        for rid in ids:
            found = await self.rows.get(f"{kind}|{rid}") if ID.fullmatch(rid) else None
            if found is not None and not found.data.get("deleted"):
                yield found

    async def _commit_with_members(self, ops: list[Op], member_ops: list[Op]) -> None:
        room = BATCH_LIMIT - len(ops)
        room -= room % 2  # a membership's row pair stays in one commit
        await self.rows.commit(ops + member_ops[:room])
        await self._commit_all(member_ops[room:])

    async def _commit_all(self, ops: Iterable[Op]) -> None:
        pending = list(ops)
        for start in range(0, len(pending), BATCH_LIMIT):
            await self.rows.commit(pending[start : start + BATCH_LIMIT])

    async def _xid_ops(self, kind: str, rid: str, old: str | None, new: str | None) -> list[Op]:
        """The externalId index's writes for resource ``rid`` whose externalId goes from ``old`` to
        ``new`` (either None: none), each over the version of the index row read here, so two
        resources that change one externalId at once conflict instead of losing one of them."""
        if old == new:
            return []
        keys = [_xid_key(kind, v) if v else None for v in (old, new)]
        before, after = await asyncio.gather(*(self.rows.get(k) if k else _nothing() for k in keys))
        ops: list[Op] = []
        if keys[0] is not None and before is not None:
            kept = [i for i in _xids(before) if i != rid]
            verb: Verb = "replace" if kept else "delete"
            ops.append(Op(verb, keys[0], {"ids": kept} if kept else {}, etag=before.etag))
        if keys[1] is not None:
            ids = _xids(after)
            if after is None:
                ops.append(Op("insert", keys[1], {"ids": [rid]}))
            elif rid not in ids:
                ops.append(Op("replace", keys[1], {"ids": [*ids, rid]}, etag=after.etag))
        return ops

    async def _taken(self, resource_type: ResourceType, kind: str, data: dict[str, Any]) -> Exception:
        """Why a create found its unique name taken: a replay of the stored user, or a 409."""
        index = await self.rows.get(_name_key(kind, data["unique"]))
        if kind == "user" and index is not None and data.get("externalId"):
            try:
                stored = await self.get(resource_type, str(index.data["id"]))
            except NotFoundException:
                stored = None
            if stored is not None and getattr(stored, "external_id", None) == data["externalId"]:
                return Replayed(stored)
        return UniquenessException(detail=_taken_detail(kind))

    # -- resources <-> rows ------------------------------------------------------------------------

    def _data(self, kind: str, resource: Resource[Any], *, version: int, created: str | None) -> dict[str, Any]:
        body = resource.model_dump(mode="json")
        for dropped in ("id", "meta", "members", "password"):  # members have rows; a password is never kept
            body.pop(dropped, None)
        now = self._now_ms()
        unique = getattr(resource, "user_name" if kind == "user" else "display_name", None)
        if not unique:
            raise InvalidValueException(detail=f"{'userName' if kind == 'user' else 'displayName'} is required")
        data = {
            "resource": body,
            "v": version,
            "created": created or _iso(now),
            "modified": _iso(now),
            "changed": now,
            "unique": folded(str(unique)),
            "externalId": getattr(resource, "external_id", None),
        }
        if len(json.dumps(data)) > MAX_TEXT:
            raise PayloadTooLargeException(detail="the resource is too large to store")
        return data

    def _resource(self, resource_type: ResourceType, row: Row, members: list[dict[str, Any]] | None) -> Resource[Any]:
        model = cast(type[Resource[Any]], self.provider.model_for(resource_type))
        body = copy.deepcopy(dict(row.data["resource"]))
        if members:
            body["members"] = members
        resource = model.model_validate(body)
        resource.id = row.key.split("|", 1)[1]
        resource.meta = Meta(
            resource_type=resource_type.name,
            created=datetime.fromisoformat(row.data["created"]),
            last_modified=datetime.fromisoformat(row.data["modified"]),
            version=version_tag(int(row.data["v"])),
        )
        return resource

    def _now_ms(self) -> int:
        return int(self.clock.now() * 1000)


def _kind(resource_type: ResourceType) -> str:
    try:
        return KINDS[str(resource_type.name)]
    except KeyError:
        raise NotFoundException(detail=f"no resource type {resource_type.name!r} here") from None


def _held(names: Mapping[str, str], member_of: set[str], wanted: frozenset[str]) -> frozenset[str]:
    """The ids and displayNames of the live groups (``names``: id -> displayName) among ``member_of``,
    narrowed to ``wanted``."""
    return frozenset(part for gid in member_of if gid in names for part in (gid, names[gid])) & wanted


def _name_key(kind: str, unique: str) -> str:
    return f"name|{kind}|{unique}"


async def _nothing() -> None:
    return None


def _xid_key(kind: str, external_id: str) -> str:
    return f"xid|{kind}|{external_id}"


def _xids(row: Row | None) -> list[str]:
    """The ids an externalId index row lists (none when there is no row)."""
    return [str(i) for i in row.data.get("ids", [])] if row is not None else []


def _taken_detail(kind: str) -> str:
    return "userName is taken by another user" if kind == "user" else "displayName is taken by another group"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _excludes_members(parameters: ResponseParameters[Any] | None) -> bool:
    excluded = (parameters.excluded_attributes if parameters is not None else None) or []
    return any(
        str(path).casefold() in {"members", "urn:ietf:params:scim:schemas:core:2.0:group:members"} for path in excluded
    )


def _member_ids(resource: Resource[Any] | None) -> set[str]:
    return {str(m.value) for m in (getattr(resource, "members", None) or []) if m.value}


def _check_members(added: set[str]) -> None:
    if len(added) > MAX_MEMBERS_CHANGED:
        raise InvalidValueException(detail=f"at most {MAX_MEMBERS_CHANGED} members are added by one request")
    strange = sorted(m for m in added if not ID.fullmatch(m))
    if strange:
        raise InvalidValueException(
            detail=f"a member's value is the id of a user or group here, not {strange[0][:64]!r}"
        )


def _membership_ops(group_id: str, added: dict[str, dict[str, Any]], removed: set[str], now: int) -> list[Op]:
    """The row pairs of members ``added`` (id -> type and display) and ``removed``."""
    ops: list[Op] = []
    changes = [(m, {"in": True, **{k: v for k, v in added[m].items() if v}}) for m in sorted(added)]
    changes += [(m, {"in": False}) for m in sorted(removed)]
    for member, row in changes:
        row["changed"] = now
        ops += [Op("upsert", f"member|{group_id}|{member}", row), Op("upsert", f"memberof|{member}|{group_id}", row)]
    return ops


def _entry_list(member_ops: list[Op]) -> list[dict[str, Any]]:
    """The members a new group's membership rows add, as :meth:`InboxStorage.member_entries` lists them."""
    return [_entry(op.key, op.data) for op in member_ops if op.key.startswith("member|") and op.data.get("in")]


def _entry(key: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A membership row (``member|<group>|<id>``) as the group's ``members`` shows it: value, type,
    display, and a relative $ref for a user or group."""
    entry = {"value": key.rsplit("|", 1)[1], **{k: data[k] for k in ("type", "display") if data.get(k)}}
    if entry.get("type") in ("User", "Group"):
        entry["$ref"] = f"{entry['type']}s/{entry['value']}"
    return entry


def _indexed_eq(node: Any, kind: str) -> tuple[str, str] | None:
    """(attribute, value) of an `eq` comparison the rows index, at the top or in a top-level `and`."""
    terms = node.terms if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_ else (node,)
    indexed = {"id", "externalid", "username"} if kind == "user" else {"id", "displayname"}
    for term in terms:
        if isinstance(term, Comparison) and term.op == CompareOperator.eq and isinstance(term.value, str):
            path = term.attr_path
            if path.sub_attr is None and path.attr.casefold() in indexed:
                return path.attr.casefold(), term.value
    return None
