"""Work items: the only thing sources hand to the worker ("this identity may have changed").

A work item names an identity, never its data: the worker re-reads Entra, so replays, duplicates
and out-of-order deliveries are harmless. Messages are JSON, base64-encoded on the queue as the
Functions host expects by default.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from shared import names
from shared.errors import BadInput

KINDS: Final = ("user", "group", "subscription", "delta", "risk")


SOURCES: Final = (
    "notification", "lifecycle", "delta", "reconcile", "risk", "backfill", "manual", "group", "approval", "push",
)  # fmt: skip

# Sources someone is waiting on (a change just made in Entra, a risky sign-in, an operator's
# command): their items go to the lane, which bulk work (backfill, reconciliation repairs, delta
# passes, a released mass change) never sits in front of.
# "push" is a change an identity source pushed to entra-sync (the inbound SCIM endpoint).
LANE_SOURCES: Final = frozenset({"notification", "lifecycle", "risk", "manual", "group", "push"})


# Whole values only: ``$`` also matches before a final newline, so ``match`` with ``^...$`` would
# let "<guid>\n" through. GUID is imported elsewhere, so it is anchored with ``\A...\Z`` and stays
# whole whether ``match`` or ``fullmatch`` is called; the patterns below are used with ``fullmatch``.
GUID: Final = re.compile(r"\A[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


MAX_MESSAGE_BYTES: Final = 48 * 1024  # base64 of this stays under the queue's 64 KiB limit
# A source_ref is entra-sync's own short reference (a subscription id, a run or episode id,
# "push:<detection id>": at most about 140 characters); a longer one was not written by a producer
# of ours and is refused, never cut: cut, two references could read alike in the audit trail.
MAX_SOURCE_REF: Final = 256


VERSION: Final = 1

MAX_ITEM_USERS: Final = 20  # users one group item names (:attr:`WorkItem.users`)


RISK_INCIDENTS: Final = ("detection", "restore")


RISK_LEVELS: Final = ("low", "medium", "high")


# riskState values (Graph v1.0 riskState enum, without the evolvable sentinel).
RISK_STATES: Final = (
    "none", "confirmedSafe", "remediated", "dismissed", "atRisk", "confirmedCompromised",
)  # fmt: skip


# A target's name: its kind, and a name of its own after a colon for kinds that can be several.
TARGET_NAME: Final = re.compile(r"[a-z][a-z0-9]{0,15}(:[a-z0-9][a-z0-9-]{0,46}[a-z0-9])?")
# An identity source's name in the mapping (``entra``, ``hr-push``): what a work item's id belongs to.
SOURCE_NAME: Final = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
DEFAULT_SOURCE: Final = "entra"  # the source of items and mapping files that name none


def where(source: str) -> str:
    """Where a message says an identity changed, by its source's name: "in Entra" (the default
    source), "in the source hr-push"."""
    return "in Entra" if source in ("", DEFAULT_SOURCE) else f"in the source {source}"


_RISK_TOKEN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")


def parse_json(text: str | bytes, what: str) -> Any:
    """``json.loads`` for input from outside: every way it fails becomes :class:`BadInput`.

    Besides malformed JSON and UTF-8 (``ValueError``), deep nesting raises ``RecursionError`` and a
    number past Python's digit limit a plain ``ValueError``; left alone, either answers an HTTP
    caller with a 500 and nothing audited, and poisons a queue message after five attempts.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise BadInput(f"{what} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit
        raise BadInput(f"{what} is not valid JSON: {exc}") from None


def _enqueued_at(value: Any) -> float:
    if value is None:
        return time.time()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput("work item enqueued_at must be a number of seconds since the epoch")
    return float(value)


@dataclass(frozen=True)
class RiskSignal:
    """What a risk work item is about: one detection to respond to, or a risky user's state change
    that may lift an earlier response. Carried in the work item because Identity Protection allows
    one request per second per tenant: the worker must not spend that budget reading it again."""

    incident: str  # "detection" | "restore"
    ref: str  # detection id, or the riskyUser's riskLastUpdatedDateTime for a restore
    level: str = ""  # low | medium | high (detections)
    event_type: str = ""  # riskEventType (detections)
    state: str = "atRisk"  # riskState
    detected_at: str = ""  # ISO 8601, as Graph gave it
    ip_address: str = ""

    @property
    def key(self) -> str:
        """The incident's idempotency key (without the user, which the work item names)."""
        return f"{self.incident}:{self.ref}" if self.incident == "detection" else f"restore:{self.state}:{self.ref}"

    @classmethod
    def from_dict(cls, data: Any) -> RiskSignal:
        """Validate an untrusted mapping (a queue message or a pushed alert); raise :class:`BadInput`."""
        if not isinstance(data, dict):
            raise BadInput("risk signal must be a JSON object")
        incident, ref = data.get("incident"), data.get("ref")
        if incident not in RISK_INCIDENTS:
            raise BadInput(f"risk incident {incident!r} is not one of {', '.join(RISK_INCIDENTS)}")
        if not isinstance(ref, str) or not _RISK_TOKEN.fullmatch(ref):
            raise BadInput("risk ref must be a detection id or timestamp (letters, digits, . _ : + -)")
        state = data.get("state") or "atRisk"
        if state not in RISK_STATES:
            raise BadInput(f"riskState {state!r} is not one of {', '.join(RISK_STATES)}")
        level = data.get("level") or ""
        event_type = data.get("event_type") or ""
        if incident == "detection":
            if level not in RISK_LEVELS:
                raise BadInput(f"riskLevel {level!r} is not one of {', '.join(RISK_LEVELS)}")
            if not isinstance(event_type, str) or not _RISK_TOKEN.fullmatch(event_type):
                raise BadInput("riskEventType must be a short identifier such as unfamiliarFeatures")
        for name in ("detected_at", "ip_address"):
            value = data.get(name) or ""
            if not isinstance(value, str) or len(value) > 64 or not all(ch.isprintable() for ch in value):
                raise BadInput(f"risk {name} must be a short printable string")
        return cls(
            incident=str(incident),
            ref=ref,
            level=str(level),
            event_type=str(event_type),
            state=str(state),
            detected_at=str(data.get("detected_at") or ""),
            ip_address=str(data.get("ip_address") or ""),
        )


@dataclass(frozen=True)
class WorkItem:
    kind: str  # "user" | "group" | "subscription" | "delta" | "risk"
    id: str  # Entra object id (user, group, risk), subscription id, or resource for "delta"
    source: str
    source_ref: str = ""  # notification subscription id, run id, ...
    correlation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    enqueued_at: float = field(default_factory=time.time)
    risk: RiskSignal | None = None  # only for kind "risk"
    deferrals: int = 0  # times the item was re-scheduled to wait (a rate limit, a busy lease)
    # Who approved the mass change this item is part of: "guard:<episode>" (a held mass change) or
    # "reconcile:<run>" (deprovisions the nightly circuit breaker judged); "" for none.
    approved: str = ""
    # The target this item is for, when it is one target's share of a change (a retry, a wait);
    # "" for every target the mapping names.
    target: str = ""
    attempt: int = 0  # failed attempts at this item's target so far (its own retries, not the host's)
    # The identity source the id belongs to (a name under the mapping's ``sources:``); "" is the
    # default source (:data:`DEFAULT_SOURCE`), so items from before sources were plural read the same.
    identity_source: str = ""
    # Re-scheduled after its lease lapsed (or another wait that is neither a rate limit nor a busy
    # identity): a write of its own may land late, so its next try reads the target, not the link.
    reread: bool = False
    # A pushing source's membership change (kind "group", ``id`` the group): the users it added or
    # removed, converged in the item's invocation (at most :data:`MAX_ITEM_USERS`, each a GUID).
    # A change naming more is split into several items: one queue message per user would put tens
    # of thousands on the lane during an initial push.
    users: tuple[str, ...] = ()

    @property
    def in_lane(self) -> bool:
        """Whether the item goes to the lane (``sync-lane``) rather than the bulk queue: a risk
        response always, anything else by its source (:data:`LANE_SOURCES`)."""
        return self.kind == "risk" or self.source in LANE_SOURCES

    @property
    def poison_queue(self) -> str:
        """Where the item ends when it is given up on: its own queue's poison queue."""
        return names.LANE_POISON_QUEUE if self.in_lane else names.WORK_POISON_QUEUE

    def to_json(self) -> str:
        data = asdict(self)
        if data["risk"] is None:
            del data["risk"]  # other kinds keep the message format they always had
        for optional in ("deferrals", "approved", "target", "attempt", "identity_source", "reread", "users"):
            if not data[optional]:
                del data[optional]  # items without them keep the message format they always had
        return json.dumps({"v": VERSION, **data}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkItem:
        data = parse_json(text, "work item")
        if not isinstance(data, dict):
            raise BadInput("work item must be a JSON object")
        if data.get("v") != VERSION:
            raise BadInput(f"work item version {data.get('v')!r} is not {VERSION}")
        kind, ident, source = data.get("kind"), data.get("id"), data.get("source")
        if kind not in KINDS:
            raise BadInput(f"work item kind {kind!r} is not one of {', '.join(KINDS)}")
        if source not in SOURCES:
            raise BadInput(f"work item source {source!r} is not one of {', '.join(SOURCES)}")
        if not isinstance(ident, str) or not ident or len(ident) > 256:
            raise BadInput("work item id must be a non-empty string")
        if kind in {"user", "group", "risk"} and not GUID.fullmatch(ident):
            raise BadInput(f"work item {kind} id {ident!r} is not a GUID")
        risk = RiskSignal.from_dict(data.get("risk")) if kind == "risk" else None
        deferrals = data.get("deferrals", 0)
        if isinstance(deferrals, bool) or not isinstance(deferrals, int) or deferrals < 0:
            raise BadInput("work item deferrals must be a non-negative whole number")
        approved = data.get("approved", "")
        if not isinstance(approved, str) or len(approved) > 128:
            raise BadInput("work item approved must be a short string")
        target = data.get("target", "")
        if not isinstance(target, str) or (target and not TARGET_NAME.fullmatch(target)):
            raise BadInput("work item target must be a target name such as auth0 or scim:hr-app")
        attempt = data.get("attempt", 0)
        if isinstance(attempt, bool) or not isinstance(attempt, int) or not 0 <= attempt <= 100:
            raise BadInput("work item attempt must be a whole number from 0 to 100")
        identity_source = data.get("identity_source", "")
        if not isinstance(identity_source, str) or (identity_source and not SOURCE_NAME.fullmatch(identity_source)):
            raise BadInput("work item identity_source must be a source name such as entra or hr-push")
        reread = data.get("reread", False)
        if not isinstance(reread, bool):
            raise BadInput("work item reread must be true or false")
        users = data.get("users", [])
        if not isinstance(users, list) or len(users) > MAX_ITEM_USERS:
            raise BadInput(f"work item users must be a list of at most {MAX_ITEM_USERS} user ids")
        if users and kind != "group":
            raise BadInput("work item users are named only by a group item")
        if not all(isinstance(u, str) and GUID.fullmatch(u) for u in users):
            raise BadInput("work item users must each be a GUID")
        source_ref = data.get("source_ref", "")
        if not isinstance(source_ref, str):
            raise BadInput("work item source_ref must be a string")
        if problem := source_ref_problem(source_ref):
            raise BadInput(problem)
        return cls(
            kind=kind,
            id=ident,
            source=source,
            source_ref=source_ref,  # whole: never cut
            correlation_id=str(data.get("correlation_id") or uuid.uuid4().hex)[:64],
            enqueued_at=_enqueued_at(data.get("enqueued_at")),
            risk=risk,
            deferrals=deferrals,
            approved=approved,
            target=target,
            attempt=attempt,
            identity_source=identity_source,
            reread=reread,
            users=tuple(users),
        )


def item_source(source: str) -> str:
    """A work item's ``identity_source`` for an identity of ``source``: "" for the default source,
    so items of Entra ID keep the message format they always had."""
    return "" if source == DEFAULT_SOURCE else source


def source_ref_problem(ref: str) -> str:
    """Why ``ref`` cannot be a work item's source_ref, or "": at most :data:`MAX_SOURCE_REF`
    printable characters (it reaches audit rows and log lines)."""
    if len(ref) > MAX_SOURCE_REF:
        return f"work item source_ref is {len(ref)} characters; at most {MAX_SOURCE_REF} are accepted, none cut"
    if not ref.isprintable():
        return "work item source_ref must be printable (no line breaks or control characters)"
    return ""


def user_item(entra_id: str, source: str, source_ref: str = "", correlation_id: str | None = None) -> WorkItem:
    extra: dict[str, Any] = {"correlation_id": correlation_id} if correlation_id else {}
    return WorkItem("user", entra_id, source, source_ref, **extra)


_WORKING_ON: ContextVar[WorkItem | None] = ContextVar("entra_sync_working_on", default=None)


@contextmanager
def working_on(item: WorkItem) -> Iterator[None]:
    """While the worker converges ``item``: what a target writing audit rows of its own (a
    Salesforce leaver's reassignments) names as their correlation id and source."""
    token = _WORKING_ON.set(item)
    try:
        yield
    finally:
        _WORKING_ON.reset(token)


def current_item() -> WorkItem | None:
    """The work item being converged in this task, if any (see :func:`working_on`)."""
    return _WORKING_ON.get()
