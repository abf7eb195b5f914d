"""The ports the services work through, as ``typing.Protocol`` s.

Every port has an in-memory implementation (``sandbox/memory.py``: the source and the target;
``sandbox/memory_stores.py``: the stores, the queue and the alerts) and a contract test suite that
every implementation passes (``tests/contracts/``, one module per port). The services see only
these shapes: a :class:`Source` (Entra ID through Graph), any number of :class:`Target` s (Auth0,
SCIM applications, ...), the stores (links, leases, state, audit, target health), the work queue and the alerts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from shared.core.model import Account, Action, ActionKind, Identity, Link
from shared.core.work import WorkItem

Fence = Callable[[], None]  # raises LeaseLost when the caller may no longer write


# ------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------


class Source(Protocol):
    """Where identities come from (and what they are now: the source of truth)."""

    @property
    def name(self) -> str: ...

    async def read(self, source_id: str) -> Identity:
        """The identity as the source has it now, classified (a deleted one too)."""

    def identities(self, page_size: int = 999) -> AsyncIterator[list[Identity]]:
        """Every identity, classified, a page at a time (reconciliation, backfill)."""

    async def changed(self, cursor: str | None) -> tuple[set[str], str]:
        """Ids changed since ``cursor`` (every id for ``None``) and the cursor to go on from."""


# Abilities some sources have beyond the port (Entra ID through Graph has each): a service that
# needs one is typed to it, so what it asks of a source is written down here.


@runtime_checkable
class FindsIdentities(Protocol):
    """A source that can say whom a person means by a name they know (an operator's command)."""

    async def find_ids(self, key: str) -> list[str]:
        """Ids of the identities ``key`` names: an id of this source, a sign-in name (UPN, userName)
        or an email address, compared without case; none when nobody has it. ``key`` is untrusted:
        it never reaches a query unescaped."""


@runtime_checkable
class ReadsGroups(Protocol):
    """A source whose groups are objects of its own, readable by id: whether a group a mapping
    names exists (a missing scope group would make everyone a leaver)."""

    async def read_group(self, group_id: str) -> dict[str, Any] | None:
        """The group (at least its ``id``), or None when the source has no such group."""


class GroupedSource(Source, ReadsGroups, Protocol):
    """A source with groups of its own (reconciliation checks the mapping's before a run)."""


class StartsFromNow(Protocol):
    """A source that can give a cursor from this moment without reading everyone first (a bulk
    load reads everyone itself, and the catch-up then goes on from before that read)."""

    async def latest_delta_link(self, resource: str) -> str:
        """A cursor of ``resource`` ("users", "groups") that starts now."""


class CursorSource(Source, StartsFromNow, Protocol):
    """A source a bulk load can read whole and hand over to the catch-up."""


@dataclass
class GroupDeltaPage:
    """Membership changes of one groups-delta round, and where the next round starts."""

    added: dict[str, set[str]] = field(default_factory=dict)  # group id -> member ids (users or groups)
    removed: dict[str, set[str]] = field(default_factory=dict)
    nested_groups: set[str] = field(default_factory=set)  # member ids that are groups
    deleted_groups: set[str] = field(default_factory=set)
    delta_link: str = ""


class DeltaSource(Protocol):
    """What the catch-up reads: users changed since a cursor, group membership changes since a
    cursor, and the groups and users nested in a group (membership counts through nesting). A
    cursor the source no longer knows raises :class:`shared.errors.DeltaExpired`."""

    async def groups_delta(self, delta_link: str | None) -> GroupDeltaPage: ...

    async def users_delta(self, delta_link: str | None) -> tuple[set[str], str]: ...

    async def nested_groups(self, group_id: str) -> set[str]: ...

    async def transitive_user_members(self, group_id: str) -> set[str]: ...


# ------------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What a target can do; the planner plans only what it offers."""

    revoke_sessions: bool = False
    revoke_refresh_tokens: bool = False
    delete: bool = True
    entitlements: str = ""  # what its entitlements are called ("roles", "groups"); "" for none


@dataclass(frozen=True)
class Applied:
    """What applying one action did: the new account's id (a create), values the target refused
    because another account holds them (the other changes were applied), a warning (done in part)."""

    target_id: str = ""
    refused: Mapping[str, Any] = field(default_factory=dict)
    warning: str = ""


class Rules(Protocol):
    """A target's own rules, pure, from its mapping section: which paths it has, how values compare,
    what a create and an update send, how accounts are found. The planner, the matching ladder and
    reconciliation ask these; they never name a vendor themselves."""

    def desired(self, identity: Identity) -> dict[str, Any]:
        """Target path -> value the mapping derives from the identity (the owner stamp included)."""

    def current(self, account: Account, path: str) -> Any:
        """The account's value at a target path."""

    def same(self, path: str, want: Any, have: Any) -> bool:
        """Whether a value already is what is wanted (a target may compare without case)."""

    def removes_unmapped(self, path: str) -> bool:
        """Whether a path mapped to nothing is removed (True) or left as it is (False)."""

    def unique(self, path: str) -> bool:
        """Whether the target keeps values of this path unique across accounts (email, userName)."""

    def create_payload(self, identity: Identity, desired: Mapping[str, Any]) -> dict[str, Any] | str:
        """What a create sends, or why the target cannot create this identity (a skip's reason)."""

    def update_payload(self, changes: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
        """What an update of ``changes`` (path -> new value) sends."""

    def deterministic_id(self, identity: Identity) -> str | None:
        """The id a create gives this identity's account, when the target lets the caller choose it."""

    def match_key(self, matcher: str, identity: Identity, desired: Mapping[str, Any]) -> str | None:
        """The key a matcher looks the identity up by, or None where it does not apply."""

    def keys_of(self, account: Account) -> Mapping[str, Iterable[str]]:
        """Matcher -> the keys an account can be found under (to index a whole target at once)."""

    def last_seen(self, account: Account) -> tuple[str | None, str | None]:
        """(last sign-in, creation time) as ISO 8601, where the target knows them."""

    def label(self, kind: ActionKind) -> str:
        """The target's word for an action in audit rows and logs (Auth0 blocks, SCIM deactivates)."""

    def flag_path(self, flag: str) -> str | None:
        """Where the target keeps a flag its login flow reads (the risk response's require_mfa), or
        None where it has no such place."""


class Target(Protocol):
    """Somewhere accounts are provisioned: reads, matching, writes, and every account at once."""

    @property
    def name(self) -> str:
        """Its name in the mapping: "auth0", "scim:hr-app"."""

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def rules(self) -> Rules: ...

    async def read(self, target_id: str, *, entitlements: bool = True) -> Account | None:
        """The account now (its entitlements read when asked), or None."""

    async def find(self, matcher: str, key: str) -> list[Account]:
        """Candidate accounts for a matcher's key (immediately consistent where the target can)."""

    async def apply(self, target_id: str, action: Action, fence: Fence) -> Applied:
        """Perform one target write; ``fence`` is called right before each request goes out."""

    def accounts(self) -> AsyncIterator[Account]:
        """Every account, with owner and entitlements (reconciliation)."""


# Optional abilities: a target declares one by having it; services ask with ``isinstance``, never
# by probing for an attribute, so what a service may rely on is written down here.


@runtime_checkable
class FindsAtOnce(Protocol):
    """A target that looks up several matchers' keys in one request (SOQL's ``OR``): the matching
    ladder asks it once for an identity with no link, instead of once per matcher. The answer is one
    list per key, in the order asked, each what :meth:`Target.find` would give for that key alone."""

    async def find_each(self, keys: Sequence[tuple[str, str]]) -> list[list[Account]]: ...


@runtime_checkable
class TellsHowRead(Protocol):
    """A target that reads its accounts in more than one way (a list, an export job, a cursor) and
    says which way its last ``accounts()`` took, for the run's report."""

    @property
    def read_by(self) -> str: ...


@runtime_checkable
class KeepsHouse(Protocol):
    """A target with objects of its own beside accounts (SCIM groups) that reconciliation keeps as
    the section says: created, renamed, stamped, and deleted where the section allows."""

    async def tidy(self, apply: bool, fence: Fence | None = None) -> list[str]:
        """What was done (or, without ``apply``, what would be), a line each."""


@runtime_checkable
class KeepsBaseline(Protocol):
    """A target whose tenant-wide settings the section declares (Auth0's password policy, MFA,
    organizations): reconciliation reports every difference and, where the section enforces them,
    corrects them once an operator approves the run (the circuit breaker's approval)."""

    @property
    def enforces_baseline(self) -> bool: ...

    async def baseline_drift(self) -> list[Any]:
        """Every difference, each with ``line()`` (what to report) and ``fixable``."""

    async def enforce_baseline(self, fence: Fence | None = None) -> list[str]:
        """Correct what can be corrected; what was done, a line each."""


@runtime_checkable
class Discovers(Protocol):
    """A target that learns what its server supports (SCIM's /ServiceProviderConfig) and keeps it
    for a while; a whole-target run asks once, at its start, for the server's answer now."""

    async def discover(self, *, force: bool = False) -> object: ...


@runtime_checkable
class ChecksLive(Protocol):
    """A target that can say whether its mapping section can work against it as it is now (the
    entitlements and connections it names exist, its credentials are accepted): ``entra-sync
    check`` asks it."""

    async def live_check(self) -> tuple[list[str], list[str]]:
        """(what was checked, each as a line; what is wrong, each as a line naming the entry)."""


@runtime_checkable
class Gathers(Protocol):
    """A target that can write many identities' changes as one (members of a SCIM group): inside
    ``gathering(seconds)`` a write waits up to ``seconds`` for others to join it (bulk work only)."""

    def gathering(self, seconds: float) -> AbstractContextManager[None]: ...


# ------------------------------------------------------------------------------------------------
# Stores, queue, alerts
# ------------------------------------------------------------------------------------------------


class LinkStore(Protocol):
    """One target's links of one source, by source id."""

    @property
    def target(self) -> str: ...

    @property
    def source(self) -> str:
        """The source whose identities these links are (a target is fed by one)."""

    async def get(self, source_id: str) -> Link | None: ...

    async def put(self, link: Link) -> None: ...

    async def put_many(self, links: list[Link]) -> None: ...

    def all(self, *, applied: bool = True) -> AsyncIterator[Link]:
        """Every link; ``applied=False`` leaves out the memory of the last write (reconciliation)."""
        ...

    async def count(self) -> int: ...


class Lease(Protocol):
    key: str
    expires_at: float
    lost: bool


class LeaseStore(Protocol):
    """One writer per key: expiring, renewed while held, fenced before writes."""

    def held(self, key: str, wait_s: float = 3.0) -> AbstractAsyncContextManager[Any]: ...

    def many(
        self, keys: Mapping[str, str], wait_s: float = 3.0
    ) -> AbstractAsyncContextManager[tuple[dict[str, Any], dict[str, Exception]]]: ...

    async def try_acquire(self, key: str, owner: str | None = None) -> Any: ...

    async def release(self, lease: Any) -> None: ...

    async def renew(self, lease: Any) -> None: ...

    def fence(self, lease: Any) -> None: ...

    def fence_after_write(self, lease: Any) -> None: ...


class StateStore(Protocol):
    """Small JSON documents by (kind, name): subscriptions, cursors, run records, held work."""

    async def get(self, kind: str, name: str) -> dict[str, Any] | None: ...

    async def put(self, kind: str, name: str, value: Mapping[str, Any]) -> None: ...

    async def delete(self, kind: str, name: str) -> None: ...

    async def list(self, kind: str) -> dict[str, dict[str, Any]]: ...

    async def delete_older(self, kind: str, before: str, limit: int) -> int:
        """Delete up to ``limit`` documents of ``kind`` written before ``before`` (ISO 8601)."""

    async def read(self, kind: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """The document and its version (None and None when there is none), for :meth:`put_if`."""

    async def put_if(self, kind: str, name: str, value: Mapping[str, Any], version: str | None) -> str | None:
        """Store ``value`` only if the stored document is still ``version`` (None: only if there is
        none); its new version, or None when another writer changed it first. Two instances deciding the same thing at
        once (a guard opening an episode) both read, and exactly one of their writes lands."""


class AuditStore(Protocol):
    """Audit rows per identity, and the write-ahead intent of the work under way."""

    async def write(self, row: Any) -> None: ...

    async def write_many(self, rows: list[Any]) -> None: ...

    async def write_intent(self, identity: str, target: str, intent: Mapping[str, Any]) -> str: ...

    async def read_intent(self, identity: str, target: str) -> dict[str, Any] | None: ...

    async def settle(
        self, rows: list[Any], identity: str, target: str, *, drop_intent: bool, intent_etag: str | None = None
    ) -> None: ...

    async def for_identity(self, identity: str) -> list[dict[str, Any]]: ...

    async def search(self, query: Any) -> list[dict[str, Any]]:
        """The rows a :class:`shared.stores.audit.AuditQuery` asks for, newest first, at most its
        limit; without reading the whole store into memory."""

    async def all(self) -> list[dict[str, Any]]: ...


class WorkQueue(Protocol):
    async def send(self, items: Iterable[WorkItem]) -> int: ...

    async def defer(self, item: WorkItem, delay_s: float) -> float:
        """Send ``item`` again to become visible in about ``delay_s``; returns the delay used."""

    async def poison(self, item: WorkItem) -> None:
        """Give up on ``item``: into the poison queue, where an operator looks."""


class Alerts(Protocol):
    async def send(self, key: str, message: str, *, source: str = "alert", correlation_id: str = "") -> str: ...


@dataclass(frozen=True)
class HealthRecord:
    """One target's health as every instance sees it (:mod:`shared.services.health` decides what
    it means). ``open_until`` 0 is a closed breaker; a past ``open_until`` is half-open, where
    ``probe_until`` says that one instance's probe call holds the target until then.
    ``generation`` changes on every open and close, so a call that started under an older one is
    recognised when it ends. ``gate_until`` is the rate gate's closing (a 429's Retry-After or a
    vendor's reset); ``paused`` is an operator's stop."""

    generation: int = 0
    open_until: float = 0.0
    trips: int = 0  # opened this many times in a row without a success: the cool-down grows with it
    probe_until: float = 0.0
    gate_until: float = 0.0
    paused: bool = False
    reason: str = ""  # the failure that opened it last, for operators and audit rows
    paused_by: str = ""  # who paused it, and when (ISO 8601, UTC): for ``status``
    paused_at: str = ""


class HealthStore(Protocol):
    """Per-target health records, changed with optimistic concurrency: a write names the version
    it read, so two instances never both claim a probe or both open the breaker."""

    async def read(self, target: str) -> tuple[HealthRecord, str | None]:
        """The record and its version (a default record and None when none was written yet)."""

    async def write(self, target: str, record: HealthRecord, version: str | None) -> str | None:
        """Store ``record`` only if the stored one is still ``version`` (None: only if there is
        none); the new version, or None when another instance changed it first."""
