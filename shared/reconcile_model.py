"""What a reconciliation run finds and decides: the data its reports are made from.

Plain, JSON-friendly data (``to_dict``/``from_dict``), so a report can be rendered again later from
what was stored, and runs can be compared over time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Drift classes, in the order reports show them.
DRIFT_ORDER = ("missing", "orphaned", "attribute_mismatch", "role_mismatch", "ambiguous", "stale")

DRIFT_TITLES = {
    "missing": "Missing in Auth0",
    "orphaned": "Orphaned in Auth0",
    "attribute_mismatch": "Attribute mismatch",
    "role_mismatch": "Role mismatch",
    "ambiguous": "Ambiguous match",
    "stale": "Stale (no recent login)",
}


@dataclass
class DriftRecord:
    """One identity that differs, and what the run did about it.

    ``details`` by class:
      missing:            {"state": "active"}
      orphaned:           {"reason": "source deleted" | "source disabled" | "out of scope" | "no Entra source"}
      attribute_mismatch: {"fields": {target_path: [auth0_value, entra_value]}}
      role_mismatch:      {"add": [role, ...], "remove": [role, ...]}
      ambiguous:          {"candidates": [user_id, ...], "matched_by": str}
      stale:              {"last_login": iso | None, "days": int}
    """

    drift: str
    entra_id: str | None
    user_id: str | None
    display: str  # a name or email for people reading the report
    details: dict[str, Any] = field(default_factory=dict)
    action: str = "reported"  # "enqueued", "reported", "held" (circuit breaker), "none" (dry run)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftRecord:
        return cls(**data)


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
    in_sync: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # drift class -> identities
    enqueued: int = 0
    held: int = 0
    breaker: Breaker = field(default_factory=Breaker)
    auth0_read: str = ""  # "list" or "export job"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        data = dict(data)
        data["breaker"] = Breaker(**data.get("breaker", {}))
        return cls(**data)
