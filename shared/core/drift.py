"""What a reconciliation run finds and decides: the data its reports are made from.

Plain, JSON-friendly data (``to_dict``/``from_dict``), so a report can be rendered again later from
what was stored, and runs can be compared over time.

Each drift class has one details type below. The reconciler builds its records with them
(``Stale(...).record(...)``) and the reports read them back with them (``Stale.of(record)``), so
the two cannot disagree about a key: a renamed field is a type error on both sides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Self


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

    @property
    def identity(self) -> str:
        """Who the record is about: the Entra object id, else (an orphan) the Auth0 user id.
        One identity can have a record in several classes."""
        return self.entra_id or self.user_id or ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftRecord:
        return cls(**data)


@dataclass(frozen=True)
class Details:
    """Base of the per-class details: ``drift`` names the class, ``title`` is what reports call it."""

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
    title: ClassVar[str] = "Missing in Auth0"
    state: str = "active"


@dataclass(frozen=True)
class Skipped(Details):
    """In scope in Entra, no Auth0 account, and the worker will not create one: it plans a skip
    (today: no email after mapping). Reported with the worker's reason, never queued."""

    drift: ClassVar[str] = "skipped"
    title: ClassVar[str] = "Not created in Auth0 (the worker skips them)"
    reason: str = ""


@dataclass(frozen=True)
class Orphaned(Details):
    """A managed, still active Auth0 account whose Entra user is gone, disabled or out of scope."""

    drift: ClassVar[str] = "orphaned"
    title: ClassVar[str] = "Orphaned in Auth0"
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
    title: ClassVar[str] = "Conflict with another Auth0 account"
    fields: dict[str, list[Any]] = field(default_factory=dict)  # target path -> [Auth0 value, refused Entra value]


@dataclass(frozen=True)
class RoleMismatch(Details):
    drift: ClassVar[str] = "role_mismatch"
    title: ClassVar[str] = "Role mismatch"
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


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


@dataclass
class RunSummary:
    run_id: str
    mode: str  # "dry-run" | "apply"
    status: str = "running"  # "running", "completed", "held", "approved", "failed"
    started_at: str = ""
    finished_at: str = ""
    entra_users: int = 0
    entra_in_scope: int = 0
    auth0_users: int = 0
    managed_accounts: int = 0
    in_sync: int = 0  # in-scope Entra identities with no drift record (so entra_in_scope - in_sync have drift)
    counts: dict[str, int] = field(default_factory=dict)  # drift class -> records (one per identity in the class)
    drifted: int = 0  # identities with at least one drift record, in scope or not (fewer than the records)
    enqueued: int = 0  # identities queued for the worker: one work item each, however many classes
    held: int = 0  # identities whose deprovision the circuit breaker held
    breaker: Breaker = field(default_factory=Breaker)
    auth0_read: str = ""  # "list" or "export job"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    error: str = ""
    approved_by: str = ""  # who released a held run, and when (ISO 8601, UTC)
    approved_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        data = dict(data)
        data["breaker"] = Breaker(**data.get("breaker", {}))
        return cls(**data)
