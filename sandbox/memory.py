"""An in-memory source and target: the :class:`~shared.core.ports.Source` and
:class:`~shared.core.ports.Target` ports with no Entra ID or vendor behind them (the in-memory stores,
queue and alerts are in :mod:`sandbox.memory_stores`).

For tests and benchmarks: a second target beside Auth0 (to prove one target's trouble never delays
another), and the implementations the source and target contract suites (``tests/contracts/``) run
against beside the Graph and Auth0 emulators. The target's kind, ``memory``, is registered only by
those who ask for it (``kinds_with_memory()``): the product does not know it. So is the source's
(``source_kinds_with_memory()``): a second source beside ``entra``, fed to the targets that name it.

:class:`MemorySource` holds users as Graph has them (its property names: ``accountEnabled``,
``userType``, ``mail``, ...), their groups and the soft-deleted ones, and classifies them with the
mapping's scope as :class:`~shared.sources.graph.source.GraphSource` does; every change to a user
is numbered, and a cursor is the number it was issued at (``expire_cursors`` makes the issued ones
unknown, as Graph forgets a delta token).

:class:`MemoryTarget` accounts (``MemoryTarget.data``) are flat dictionaries keyed by target path;
``active`` is their state; entitlements are names; the owner stamp is ``owner``. Faults can be
switched on (``fail_with``, ``hold``) to make it down or slow for a while.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from shared.core.classify import classify, state_of
from shared.core.model import Account, Action, ActionKind, Identity, SourceState
from shared.core.ports import Applied, Capabilities, Fence, Rules, Source, Target
from shared.core.work import DEFAULT_SOURCE
from shared.errors import Conflict, DeltaExpired, PermanentError
from shared.mapping.check import Checker, nearest
from shared.mapping.model import NO_CONDITIONS, Scope, SourceSection, SyncMapping, TargetSection
from shared.sources.registry import KINDS as SOURCE_KINDS
from shared.sources.registry import SourceKind
from shared.targets.registry import KINDS, TargetKind

MATCHERS: Final = ("owner", "email")
PAGE: Final = 999  # users a page holds, as GraphSource reads them
CAPABILITIES: Final = Capabilities(
    revoke_sessions=False, revoke_refresh_tokens=False, delete=True, entitlements="groups"
)


class MemorySource:
    """Users in dictionaries, read as Entra ID through Graph: ``users`` (id -> properties, the
    disabled ones too), ``deleted`` (soft-deleted, restorable), ``groups`` (id -> the groups it is a
    member of, nesting resolved). Only the mapping's relevant groups are read (all without a mapping).

    Change it with :meth:`add`, :meth:`update`, :meth:`soft_delete`, :meth:`restore` and
    :meth:`hard_delete`; each numbers a change that :meth:`changed` reports. Group membership is not a
    change of the user (Graph's users delta does not carry it either)."""

    def __init__(self, mapping: SyncMapping | None = None, *, page_size: int = PAGE, name: str = DEFAULT_SOURCE):
        self.name = name  # the source's name in the mapping
        self.scope = mapping.scope if mapping is not None else Scope()
        self.relevant = mapping.relevant_groups if mapping is not None else None
        self.page_size = page_size
        self.users: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, set[str]] = {}
        self.calls: dict[str, int] = {}
        self._changes: list[tuple[int, str]] = []
        self._seq = 0
        self._epoch = 0  # a cursor is "<epoch>:<seq>"; expire_cursors() starts a new epoch

    # -- changing it (tests) -----------------------------------------------------------------------

    def add(self, source_id: str | None = None, groups: Iterable[str] = (), **properties: Any) -> str:
        """A new enabled Member (unless ``properties`` say otherwise); returns its id."""
        uid = source_id or str(uuid.uuid4())
        if uid in self.users or uid in self.deleted:
            raise ValueError(f"an object with id {uid} exists")
        self.users[uid] = {"id": uid, "accountEnabled": True, "userType": "Member", **properties}
        self.groups[uid] = set(groups)
        self._changed(uid)
        return uid

    def update(self, source_id: str, **changes: Any) -> None:
        self.users[source_id].update(changes)
        self._changed(source_id)

    def soft_delete(self, source_id: str) -> None:
        self.deleted[source_id] = self.users.pop(source_id)
        self._changed(source_id)

    def restore(self, source_id: str) -> None:
        self.users[source_id] = self.deleted.pop(source_id)
        self._changed(source_id)

    def hard_delete(self, source_id: str) -> None:
        self.users.pop(source_id, None)
        self.deleted.pop(source_id, None)
        self.groups.pop(source_id, None)
        self._changed(source_id)

    def expire_cursors(self) -> None:
        """Forget every cursor issued so far: changed() refuses them with DeltaExpired."""
        self._epoch += 1

    def _changed(self, source_id: str) -> None:
        self._seq += 1
        self._changes.append((self._seq, source_id))

    # -- the Source port ---------------------------------------------------------------------------

    def _count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1

    def _groups_of(self, source_id: str) -> frozenset[str]:
        groups = self.groups.get(source_id, set())
        return frozenset(groups if self.relevant is None else groups & self.relevant)

    def _identity(self, source_id: str, *, groups: bool) -> Identity:
        props = copy.deepcopy(self.users[source_id])
        enabled = props.get("accountEnabled") is not False
        # As GraphSource.read: a disabled user is a leaver whatever its groups, which are not read.
        found = self._groups_of(source_id) if groups or enabled else frozenset()
        return Identity(source_id, classify(enabled, props, found, self.scope), props, found, source=self.name)

    async def read(self, source_id: str) -> Identity:
        self._count("users.get")
        await asyncio.sleep(0)
        if source_id in self.users:
            return self._identity(source_id, groups=False)
        if source_id in self.deleted:
            deleted = copy.deepcopy(self.deleted[source_id])
            return Identity(source_id, SourceState.SOFT_DELETED, deleted, source=self.name)
        return Identity(source_id, SourceState.HARD_DELETED, source=self.name)

    async def find_ids(self, key: str) -> list[str]:
        """The users (not the deleted ones) ``key`` names: an id, or a UPN or mail without case."""
        self._count("users.list")
        await asyncio.sleep(0)
        key = key.strip()
        folded = key.casefold()
        return sorted(
            uid
            for uid, props in self.users.items()
            if uid == key.lower()
            or folded in {str(props.get(p) or "").casefold() for p in ("userPrincipalName", "mail")} - {""}
        )

    async def identities(self, page_size: int | None = None) -> AsyncIterator[list[Identity]]:
        """Every user (not the deleted ones), classified, ``page_size`` (or the source's) a page."""
        size = page_size or self.page_size
        ids = list(self.users)
        for start in range(0, len(ids), size):
            self._count("users.list")
            await asyncio.sleep(0)
            yield [self._identity(uid, groups=True) for uid in ids[start : start + size] if uid in self.users]

    async def changed(self, cursor: str | None) -> tuple[set[str], str]:
        """Every user for ``None``; else the users changed (the deleted ones too) since ``cursor``."""
        self._count("users.delta")
        await asyncio.sleep(0)
        issued = f"{self._epoch}:{self._seq}"
        if cursor is None:
            return set(self.users), issued
        epoch, _, seq = cursor.partition(":")
        if epoch != str(self._epoch) or not seq.isdigit() or int(seq) > self._seq:
            raise DeltaExpired(f"memory source: cursor {cursor!r} is not known (any more); start a full round")
        return {uid for n, uid in self._changes if n > int(seq)}, issued


class MemoryRules:
    """Flat paths, exact comparison, every path mapped to nothing removed, ``email`` unique."""

    def __init__(self, section: TargetSection):
        self.section = section

    def desired(self, identity: Identity) -> dict[str, Any]:
        values = {**identity.attributes, "id": identity.id}
        return {a.target: a.value_from(values) for a in self.section.attributes}

    def current(self, account: Account, path: str) -> Any:
        return account.data.get(path)

    def same(self, path: str, want: Any, have: Any) -> bool:
        return bool(want == have)

    def removes_unmapped(self, path: str) -> bool:
        return True

    def unique(self, path: str) -> bool:
        return path == "email"

    def create_payload(self, identity: Identity, desired: Mapping[str, Any]) -> dict[str, Any] | str:
        if not desired.get("email"):
            return "joiner has no email after mapping; the memory target needs one"
        return {**{k: v for k, v in desired.items() if v is not None}, "owner": identity.id}

    def update_payload(self, changes: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
        return dict(changes)

    def deterministic_id(self, identity: Identity) -> str | None:
        return f"mem|{identity.id}"

    def match_key(self, matcher: str, identity: Identity, desired: Mapping[str, Any]) -> str | None:
        if matcher == "owner":
            return identity.id
        if matcher == "email" and identity.state is not SourceState.HARD_DELETED:
            email = desired.get("email")
            return str(email).lower() if email else None
        return None

    def keys_of(self, account: Account) -> Mapping[str, Iterable[str]]:
        email = account.data.get("email")
        return {"owner": [account.owner] if account.owner else [], "email": [str(email).lower()] if email else []}

    def last_seen(self, account: Account) -> tuple[str | None, str | None]:
        return account.data.get("last_login"), account.data.get("created_at")

    def label(self, kind: ActionKind) -> str:
        return kind.value

    def flag_path(self, flag: str) -> str | None:
        return f"flags.{flag}"


@dataclass
class MemoryTarget:
    """Accounts in a dictionary. ``calls`` counts what was asked of it, by operation."""

    section: TargetSection
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # target id -> the account's data
    entitlements: dict[str, set[str]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    fail_with: Exception | None = None  # raised by every call while set (a target that is down)
    hold: asyncio.Event | None = None  # every call waits for it while set (a target that is slow)
    writes: list[tuple[float, str, str]] = field(default_factory=list)  # (time, operation, target id)
    capabilities: Capabilities = CAPABILITIES
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.rules: Rules = MemoryRules(self.section)

    @property
    def name(self) -> str:
        return self.section.name

    async def _enter(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_with is not None:
            raise self.fail_with
        await asyncio.sleep(0)

    def _account(self, target_id: str) -> Account:
        data = self.data[target_id]
        return Account(
            target_id,
            copy.deepcopy(data),
            frozenset(self.entitlements.get(target_id, ())),
            active=bool(data.get("active", True)),
            owner=data.get("owner"),
        )

    async def read(self, target_id: str, *, entitlements: bool = True) -> Account | None:
        await self._enter("read")
        return self._account(target_id) if target_id in self.data else None

    async def find(self, matcher: str, key: str) -> list[Account]:
        await self._enter(f"find.{matcher}")
        field_name = {"owner": "owner", "email": "email"}.get(matcher)
        if field_name is None:
            raise PermanentError(f"the memory target has no matcher {matcher!r}")
        return [
            self._account(tid)
            for tid, data in self.data.items()
            if str(data.get(field_name) or "").lower() == key.lower()
        ]

    async def apply(self, target_id: str, action: Action, fence: Fence) -> Applied:
        await self._enter(f"apply.{action.kind.value}")
        fence()
        kind = action.kind
        if kind is ActionKind.CREATE:
            payload = dict(action.payload)
            new_id = f"mem|{payload.get('owner') or next(self._ids)}"
            if new_id in self.data or self._email_taken(payload.get("email"), None):
                raise Conflict(f"memory: an account {new_id} or with email {payload.get('email')} exists")
            self.data[new_id] = {**payload, "active": True}
            self._wrote("create", new_id)
            return Applied(target_id=new_id)
        if target_id not in self.data:
            if kind is ActionKind.DELETE:
                return Applied()
            raise PermanentError(f"memory: no account {target_id}")
        data = self.data[target_id]
        if kind is ActionKind.UPDATE:
            changes = dict(action.payload)
            refused = {p: v for p, v in changes.items() if self.rules.unique(p) and self._email_taken(v, target_id)}
            for path, value in changes.items():
                if path in refused:
                    continue
                if value is None:
                    data.pop(path, None)
                else:
                    data[path] = value
            self._wrote("update", target_id)
            return Applied(refused=refused)
        if kind in {ActionKind.DISABLE, ActionKind.ENABLE}:
            data["active"] = kind is ActionKind.ENABLE
        elif kind is ActionKind.DELETE:
            del self.data[target_id]
            self.entitlements.pop(target_id, None)
        elif kind is ActionKind.GRANT:
            self.entitlements.setdefault(target_id, set()).update(action.entitlements)
        elif kind is ActionKind.UNGRANT:
            self.entitlements.setdefault(target_id, set()).difference_update(action.entitlements)
        else:
            raise PermanentError(f"the memory target cannot {kind.value}")
        self._wrote(kind.value, target_id)
        return Applied()

    async def accounts(self) -> AsyncIterator[Account]:
        await self._enter("accounts")
        for target_id in sorted(self.data):
            yield self._account(target_id)

    def _email_taken(self, email: Any, other_than: str | None) -> bool:
        if not email:
            return False
        return any(
            tid != other_than and str(d.get("email") or "").lower() == str(email).lower()
            for tid, d in self.data.items()
        )

    def _wrote(self, op: str, target_id: str) -> None:
        self.writes.append((time.time(), op, target_id))


class MemoryKind:
    """The ``memory`` kind: its sections are checked like any other; every path is writable."""

    name = "memory"
    title = "memory"
    matchers: tuple[str, ...] = MATCHERS
    grants_key = "groups"
    grant_noun = "group"
    disable_words: tuple[str, ...] = ("disable",)
    grant_conditions = NO_CONDITIONS
    option_keys: frozenset[str] = frozenset()
    matching_keys: frozenset[str] = frozenset()
    capabilities = CAPABILITIES
    deprovision_defaults = ("disable", "disable")

    def __init__(self) -> None:
        self.built: dict[str, MemoryTarget] = {}  # by target name: what tests look into

    def path_problem(self, path: str) -> str | None:
        return None if path and all(part for part in path.split(".")) else f"{path!r} is not a path"

    def options(self, check: Any, where: str, values: Mapping[str, Any], matching: Mapping[str, Any], mw: str) -> Any:
        return None

    def default_matching(self, options: Any) -> tuple[str, ...]:
        return ("link", *MATCHERS)

    def matching_problem(self, options: Any, precedence: Sequence[str]) -> tuple[str, str] | None:
        return None

    def check_grants(self, check: Any, where: str, grants: Sequence[Any]) -> None:
        return None

    def rules(self, section: TargetSection) -> Rules:
        return MemoryRules(section)

    def settings_problem(self, section: TargetSection, settings: Any) -> str | None:
        return None  # it needs no settings

    def build(self, section: TargetSection, context: Any) -> Target:
        target = MemoryTarget(section)
        self.built[section.name] = target
        return target


def kinds_with_memory(kind: MemoryKind | None = None) -> dict[str, TargetKind]:
    """The product's kinds and the ``memory`` kind (a fresh one unless given)."""
    return {**KINDS, "memory": kind or MemoryKind()}


# What a memory source's users may be read for: fewer fields than Graph has, so a mapping can name
# a path one source has and another lacks.
SOURCE_PATHS: Final = (
    "id", "accountEnabled", "userType", "mail", "userPrincipalName", "displayName", "givenName", "surname",
    "department", "employeeId",
)  # fmt: skip


class MemorySourceKind:
    """The ``memory`` source kind: each section is a :class:`MemorySource` named after it (what tests
    change is in ``built``, by source name); it reads :data:`SOURCE_PATHS`, names groups by any id."""

    name = "memory"
    title = "memory"
    option_keys: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.built: dict[str, MemorySource] = {}

    def options(self, check: Checker, where: str, values: Mapping[str, Any]) -> Any:
        return None

    def path_problem(self, path: str) -> str | None:
        if path in SOURCE_PATHS:
            return None
        hint = nearest(path, SOURCE_PATHS)
        known = f"did you mean {hint!r}?" if hint else f"it has {', '.join(SOURCE_PATHS)}"
        return f"{path!r} is not a field of a memory source; {known}"

    def group_id(self, check: Checker, where: str, text: str) -> str | None:
        return text.lower()

    def classify(
        self, record: Mapping[str, Any] | None, groups: frozenset[str], scope: Scope, *, deleted: bool = False
    ) -> SourceState:
        enabled = record is not None and record.get("accountEnabled") is not False
        return state_of(record, enabled, groups, scope, deleted=deleted)

    def settings_problem(self, section: SourceSection, settings: Any) -> str | None:
        return None  # it needs no settings

    def build(self, section: SourceSection, context: Any) -> Source:
        source = MemorySource(context.mapping.for_source(section.name), name=section.name)
        self.built[section.name] = source
        return source


def source_kinds_with_memory(kind: MemorySourceKind | None = None) -> dict[str, SourceKind]:
    """The product's source kinds and the ``memory`` kind (a fresh one unless given)."""
    return {**SOURCE_KINDS, "memory": kind or MemorySourceKind()}


if TYPE_CHECKING:  # each class is its port, as mypy sees it
    _source: Source = MemorySource()
    _source_kind: SourceKind = MemorySourceKind()
