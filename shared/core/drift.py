"""What a reconciliation run finds and decides: the data its reports are made from.

Plain, JSON-friendly data (``to_dict``/``from_dict``), so a report can be rendered again later from
what was stored, and runs can be compared over time.

Each drift class has one details type below. The reconciler builds its records with them
(``Stale(...).record(...)``) and the reports read them back with them (``Stale.of(record)``), so
the two cannot disagree about a key: a renamed field is a type error on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from shared.core.match import Resolution
from shared.core.model import Account, ActionKind, Identity, Link, Plan, SourceState
from shared.core.ports import Rules

if TYPE_CHECKING:
    from shared.mapping.model import ReconcilePolicy


@dataclass
class DriftRecord:
    """One identity that differs in one way, and what the run did about it.

    ``details`` is the ``asdict`` of the class's details type (see :data:`DETAIL_TYPES`); records
    of a class this module does not know (an older or newer report) keep whatever they carried.
    """

    drift: str
    entra_id: str | None
    user_id: str | None
    display: str  # a name or email for people reading the report
    details: dict[str, Any] = field(default_factory=dict)
    # "enqueued", "reported", "held" (circuit breaker), "approved" (held, then queued on approval),
    # "none" (dry run)
    action: str = "reported"
    # The identity's sign-in name as the source gave it (UPN, else email; an orphan: its account's
    # email); "" where none was read (and in records stored before it was kept).
    sign_in: str = ""
    # Whether the previous run of the same target had no record of this identity in this class;
    # None where there was no previous run to compare with (or it was stored before this was kept).
    new: bool | None = None

    @property
    def identity(self) -> str:
        """Who the record is about: the Entra object id, else (an orphan) the Auth0 user id.
        One identity can have a record in several classes."""
        return self.entra_id or self.user_id or ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def key(self) -> tuple[str, str]:
        """What "new since the last run" compares: the identity and the drift class."""
        return (self.identity, self.drift)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftRecord:
        """Records stored by an older version (no ``sign_in``, no ``new``) take the defaults; keys a
        newer version added are dropped."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Where a source keeps the sign-in name, most telling first: Entra ID's UPN, the inbound SCIM
# userName, then an email.
SIGN_IN_KEYS: Final = ("userPrincipalName", "userName", "mail", "email", "emails.work", "emails.primary")


def sign_in_name(attributes: Mapping[str, Any]) -> str:
    """The identity's sign-in name (UPN or email) from the source's attributes, or ""."""
    for key in SIGN_IN_KEYS:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def granting_groups(grants: Iterable[tuple[str, Iterable[str]]], groups: Iterable[str]) -> dict[str, list[str]]:
    """Entitlement -> the identity's groups (object ids, sorted) whose grant in the mapping gives it.
    ``grants`` are (group, entitlements) pairs as the target's section lists them."""
    member = set(groups)
    out: dict[str, set[str]] = {}
    for group, entitlements in grants:
        if group in member:
            for entitlement in entitlements:
                out.setdefault(entitlement, set()).add(group)
    return {entitlement: sorted(by) for entitlement, by in out.items()}


@dataclass(frozen=True)
class Details:
    """Base of the per-class details: ``drift`` names the class, ``title`` is what reports call it
    (``{target}`` stands for the target's name in the report)."""

    drift: ClassVar[str]
    title: ClassVar[str]

    def record(self, entra_id: str | None, user_id: str | None, display: str) -> DriftRecord:
        return DriftRecord(self.drift, entra_id, user_id, display, asdict(self))

    @classmethod
    def of(cls, record: DriftRecord) -> Self:
        """The details of ``record``, which must be of this class. Keys this type does not know
        are ignored and missing ones take their defaults, so a report written by another version
        still renders."""
        if record.drift != cls.drift:
            raise ValueError(f"a {record.drift!r} record has no {cls.__name__} details")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.details.items() if k in known})


@dataclass(frozen=True)
class Missing(Details):
    """In scope in Entra, no Auth0 account: the worker will create one."""

    drift: ClassVar[str] = "missing"
    title: ClassVar[str] = "Missing in {target}"
    state: str = "active"


@dataclass(frozen=True)
class Skipped(Details):
    """In scope in Entra, no Auth0 account, and the worker will not create one: it plans a skip
    (today: no email after mapping). Reported with the worker's reason, never queued."""

    drift: ClassVar[str] = "skipped"
    title: ClassVar[str] = "Not created in {target} (the worker skips them)"
    reason: str = ""


@dataclass(frozen=True)
class Orphaned(Details):
    """A managed, still active Auth0 account whose Entra user is gone, disabled or out of scope."""

    drift: ClassVar[str] = "orphaned"
    title: ClassVar[str] = "Orphaned in {target}"
    reason: str = ""  # "source deleted" | "source disabled" | "out of scope"


@dataclass(frozen=True)
class AttributeMismatch(Details):
    drift: ClassVar[str] = "attribute_mismatch"
    title: ClassVar[str] = "Attribute mismatch"
    fields: dict[str, list[Any]] = field(default_factory=dict)  # target path -> [Auth0 value, Entra value]


@dataclass(frozen=True)
class Conflict(Details):
    """An Entra value the target refused because another account already holds it (an email
    collision on update). The worker does not send it again until it changes in Entra: a person
    decides whose it is. Never repaired automatically."""

    drift: ClassVar[str] = "conflict"
    title: ClassVar[str] = "Conflict with another {target} account"
    fields: dict[str, list[Any]] = field(default_factory=dict)  # target path -> [Auth0 value, refused Entra value]


@dataclass(frozen=True)
class RoleMismatch(Details):
    """Entitlements to add and to remove. ``granted_by`` says, for each one to add, which of the
    identity's groups the mapping grants it through (what justifies it); one to remove has none."""

    drift: ClassVar[str] = "role_mismatch"
    title: ClassVar[str] = "Role mismatch"
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    granted_by: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Ambiguous(Details):
    """Several candidate accounts, or one that carries another Entra object id: never guessed at."""

    drift: ClassVar[str] = "ambiguous"
    title: ClassVar[str] = "Ambiguous match"
    candidates: list[str] = field(default_factory=list)
    matched_by: str = ""
    problem: str = ""  # "ambiguous" | "conflict"


@dataclass(frozen=True)
class Stale(Details):
    """No login for a while: ``last_login`` when the account ever logged in, else ``created_at``
    (the days then count from the creation)."""

    drift: ClassVar[str] = "stale"
    title: ClassVar[str] = "Stale (no recent login)"
    days: int = 0
    last_login: str | None = None
    created_at: str | None = None


# The drift classes, in the order reports show them.
DETAIL_TYPES: tuple[type[Details], ...] = (
    Missing,
    Skipped,
    Orphaned,
    AttributeMismatch,
    Conflict,
    RoleMismatch,
    Ambiguous,
    Stale,
)
DRIFT_ORDER = tuple(t.drift for t in DETAIL_TYPES)
DRIFT_TITLES = {t.drift: t.title for t in DETAIL_TYPES}


@dataclass
class Breaker:
    tripped: bool = False
    reason: str = ""
    deprovisions: int = 0
    limit: int = 0
    share: float = 0.0
    share_limit: float = 0.0


def deprovision_limit(policy: ReconcilePolicy, deprovisions: int, managed: int) -> str:
    """Why ``deprovisions`` among ``managed`` accounts would hold a run (the circuit breaker's count
    and share rules), or "" when they would not."""
    share = deprovisions / max(1, managed)
    if deprovisions > policy.max_deprovisions:
        return f"{deprovisions} accounts would be blocked or deleted; the limit is {policy.max_deprovisions}"
    if deprovisions and share > policy.max_deprovision_share:
        return (
            f"{share:.1%} of managed accounts would be blocked or deleted; the limit is "
            f"{policy.max_deprovision_share:.1%}"
        )
    return ""


@dataclass
class Provenance:
    """Where a run's findings come from, for an auditor: what was compared with what, by which
    version under which mapping, and who or what started it. Never a secret: target locations are
    host names and URLs without credentials or query.

    Empty strings where a caller did not say (runs stored before this was kept load with these)."""

    source: str = ""  # the source's name in the mapping ("entra")
    source_kind: str = ""  # "entra", "scim_inbox", ...
    tenant_id: str = ""  # Entra ID's tenant (from the settings) for an ``entra`` source
    target_kind: str = ""  # "auth0", "scim", "salesforce", ...
    target_where: dict[str, str] = field(default_factory=dict)  # e.g. {"domain": ...}, {"base_url": ...}
    app_version: str = ""  # shared.__version__
    mapping_sha256: str = ""  # of the mapping file's bytes
    trigger: str = ""  # "timer", "cli"
    operator: str = ""  # who ran it: the CLI's --by (default $USER), "timer" for the nightly run

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Provenance:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


@dataclass
class RunSummary:
    run_id: str
    mode: str  # "dry-run" | "apply"
    target: str  # the target the run reconciled
    status: str = "running"  # "running", "completed", "held", "approved", "failed"
    started_at: str = ""
    finished_at: str = ""
    entra_users: int = 0
    entra_in_scope: int = 0
    accounts: int = 0  # accounts the target holds
    managed_accounts: int = 0
    in_sync: int = 0  # in-scope Entra identities with no drift record (so entra_in_scope - in_sync have drift)
    counts: dict[str, int] = field(default_factory=dict)  # drift class -> records (one per identity in the class)
    drifted: int = 0  # identities with at least one drift record, in scope or not (fewer than the records)
    enqueued: int = 0  # identities queued for the worker: one work item each, however many classes
    held: int = 0  # identities whose deprovision the circuit breaker held
    breaker: Breaker = field(default_factory=Breaker)
    read_by: str = ""  # how the target's accounts were read (Auth0: "list" or "export job")
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    error: str = ""
    approved_by: str = ""  # who released a held run, and when (ISO 8601, UTC)
    approved_at: str = ""
    # What the run did (a dry run: would do) to the target's own objects: its groups created, renamed
    # or deleted (SCIM).
    housekeeping: list[str] = field(default_factory=list)
    # The tenant's settings that differ from the section's declared baseline (Auth0), a line each;
    # ``baseline_held``: corrections the section enforces, waiting for the run's approval.
    baseline: list[str] = field(default_factory=list)
    baseline_held: bool = False
    provenance: Provenance = field(default_factory=Provenance)
    # The run the "new since last run" markers compare with ("" where there was none), and how many
    # of this run's records it had no record of.
    previous_run: str = ""
    new_records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def outcome(self) -> str:
        """What the run found, in a few words: only a run that completed can say "in sync"."""
        if self.status == "failed":
            return f"failed: {self.error or 'no reason was recorded'}"
        if self.status == "running":
            return "not finished (still running, or its process stopped)"
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "in sync"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        """Runs stored before reconciliation covered more than Auth0 named two fields after it, and
        no target: theirs was Auth0."""
        data = dict(data)
        data.setdefault("target", "auth0")
        data["breaker"] = Breaker(**data.get("breaker", {}))
        data["provenance"] = Provenance.from_dict(data.get("provenance"))
        for old, new in (("auth0_users", "accounts"), ("auth0_read", "read_by")):
            if old in data:
                data[new] = data.pop(old)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ------------------------------------------------------------------------------------------------
# Drift from a plan: what reconciliation reports is what the worker would do
# ------------------------------------------------------------------------------------------------


def drift_of(
    identity: Identity,
    resolution: Resolution,
    link: Link | None,
    plan: Plan,
    rules: Rules,
    *,
    stale_after_days: int,
    now: datetime,
    display: str,
    desired: Mapping[str, Any] | None = None,
    granted_by: Mapping[str, Sequence[str]] | None = None,
) -> list[DriftRecord]:
    """The drift records of one identity in one target, read off the plan the worker would make
    from the same reads (one matching ladder, one planner: the two can never disagree).
    ``granted_by``: entitlement -> the identity's groups that grant it (:func:`granting_groups`)."""
    if resolution.problem:
        details = Ambiguous(list(resolution.candidates), resolution.matched_by, resolution.problem)
        return [details.record(identity.id, None, display)]
    account = resolution.account
    if account is None:
        if identity.state is not SourceState.ACTIVE:
            return []
        skip = plan.first(ActionKind.SKIP)
        if skip is not None:  # a joiner the worker will not create (no email): not missing
            return [Skipped(skip.reason).record(identity.id, None, display)]
        return [Missing("active").record(identity.id, None, display)]
    if identity.state is not SourceState.ACTIVE:
        if plan.has(ActionKind.DISABLE) or plan.has(ActionKind.DELETE):
            reason = _LEAVER_REASONS.get(identity.state, "source deleted")
            return [Orphaned(reason).record(identity.id, account.target_id, display)]
        return []

    out: list[DriftRecord] = []
    desired = rules.desired(identity) if desired is None else desired
    refused = {
        path: [rules.current(account, path), value]
        for path, value in sorted((link.conflicts if link is not None else {}).items())
        if desired.get(path) == value and not rules.same(path, value, rules.current(account, path))
    }
    if refused:  # the worker will not send these again: a person decides, so reported apart
        out.append(Conflict(refused).record(identity.id, account.target_id, display))
    update = plan.first(ActionKind.UPDATE)
    fields = {path: [before, after] for path, (before, after) in sorted(update.diff.items())} if update else {}
    if plan.has(ActionKind.ENABLE):  # ours to lift: the identity is active again
        fields["active"] = [False, True]
    if fields:
        out.append(AttributeMismatch(fields).record(identity.id, account.target_id, display))
    grant, ungrant = plan.first(ActionKind.GRANT), plan.first(ActionKind.UNGRANT)
    if grant is not None or ungrant is not None:
        add = list(grant.entitlements) if grant else []
        by = granted_by or {}
        roles = RoleMismatch(
            add=add,
            remove=list(ungrant.entitlements) if ungrant else [],
            granted_by={e: list(by[e]) for e in add if e in by},
        )
        out.append(roles.record(identity.id, account.target_id, display))
    stale = _stale(account, rules, stale_after_days, now)
    if stale is not None:
        out.append(stale.record(identity.id, account.target_id, display))
    return out


_LEAVER_REASONS: Final = {
    SourceState.DISABLED: "source disabled",
    SourceState.OUT_OF_SCOPE: "out of scope",
    SourceState.SOFT_DELETED: "source deleted",
    SourceState.HARD_DELETED: "source deleted",
}


def _stale(account: Account, rules: Rules, stale_after_days: int, now: datetime) -> Stale | None:
    """No sign-in for ``stale_after_days``: counted from the last sign-in, or from the creation
    for an account that never signed in."""
    if not account.active:
        return None
    last_login, created_at = rules.last_seen(account)
    since = last_login or created_at
    if not since:
        return None
    try:
        seen = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return None
    days = (now - seen).days
    if days < stale_after_days:
        return None
    return Stale(days, last_login=last_login, created_at=None if last_login else created_at)
