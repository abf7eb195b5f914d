"""Tickets for the reconciliation findings that policy does not repair.

After each reconciliation run of a target, every ticket channel a ``findings`` route names gets
the run's unrepaired findings: drift records the run only reported (ambiguous matches, conflicts,
stale accounts, and any class the target's ``reconcile.remediate`` leaves out), frozen
Salesforce users (the target's housekeeping lines) and mapping entries naming groups the source
cannot give (``unknown_group``: such a run fails before it reads anything, so its tickets are the
only ones it changes). They are grouped by the route's ``tickets``
scope, one ticket per finding class (``class``) or per class and identity (``identity``):

* a group with no ticket yet opens one (its key is recorded *before* the ticket is opened, so a run
  that crashed in between searches the tracker by the key and adopts what it finds);
* a group with a ticket updates it with this run's findings;
* a ticket whose group is gone is closed with a note naming the run.

The ticket ids live in Table Storage (the state store, kind ``tickets|<channel>|<target>``). Any
other failed run says nothing about the findings, so it changes no ticket.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from shared.alerting.trackers import Tracker
from shared.core.drift import DriftRecord, RunSummary
from shared.core.ports import StateStore
from shared.services.reconcile import UNKNOWN_GROUP

log = logging.getLogger("entra_sync.tickets")

FINISHED: Final = frozenset({"completed", "held", "approved"})
FROZEN_PREFIX: Final = "frozen"  # the Salesforce target's housekeeping line for a frozen user
MAX_LINES: Final = 200  # findings listed in one ticket; it counts the rest


@dataclass(frozen=True)
class Finding:
    cls: str
    identity: str
    display: str


@dataclass
class Book:
    """What one sync did to one channel's tickets of one target."""

    opened: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)


def findings_of(records: Iterable[DriftRecord], housekeeping: Iterable[str]) -> list[Finding]:
    out = []
    for r in records:
        if r.action == "reported":
            who = r.identity or str(r.details.get("entry", ""))  # an unknown group: the mapping entry
            out.append(Finding(r.drift, who, r.display or r.sign_in or who))
    for line in housekeeping:
        if line.startswith(FROZEN_PREFIX):
            user = line.rsplit(": ", 1)[-1]
            out.append(Finding("frozen", user, user))
    return out


def grouped(target: str, findings: Sequence[Finding], scope: str, run_id: str) -> dict[str, tuple[str, str, str]]:
    """Finding key -> (class, title, body) for each ticket this run wants."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        key = f"{target}:{f.cls}" if scope == "class" else f"{target}:{f.cls}:{f.identity}"
        groups.setdefault(key, []).append(f)
    out = {}
    for key, members in groups.items():
        cls = members[0].cls
        if scope == "class":
            title = f"entra-sync: {len(members)} {cls} finding(s) in {target}"
        else:
            title = f"entra-sync: {cls} in {target}: {members[0].display}"
        lines = [f"- {m.display} ({m.identity})" for m in members[:MAX_LINES]]
        if len(members) > MAX_LINES:
            lines.append(f"... and {len(members) - MAX_LINES} more: entra-sync report {run_id}")
        body = "\n".join(
            [
                f"Reconciliation run {run_id} of {target} found {len(members)} {cls} finding(s) that policy does "
                "not repair:",
                *lines,
                f"Report: entra-sync report {run_id}",
            ]
        )
        out[key] = (cls, title, body)
    return out


class TicketBook:
    def __init__(self, state: StateStore, trackers: Mapping[str, Tracker], scopes: Mapping[str, str]):
        """``trackers`` by channel name; ``scopes``: each channel's ticket scope (from its route)."""
        self.state = state
        self.trackers = dict(trackers)
        self.scopes = dict(scopes)

    async def after_run(self, summary: RunSummary, records: Sequence[DriftRecord]) -> dict[str, Book]:
        """Bring every ticket channel in step with a finished run (see the module docs)."""
        only: frozenset[str] | None = None  # the classes the run can speak for (None: every one)
        if summary.status not in FINISHED:
            if not any(r.drift == UNKNOWN_GROUP for r in records):
                return {}
            only = frozenset({UNKNOWN_GROUP})
        if not self.trackers:
            return {}
        findings = findings_of(records, summary.housekeeping)
        books = {}
        for name, tracker in self.trackers.items():
            wanted = grouped(summary.target, findings, self.scopes.get(name, "class"), summary.run_id)
            books[name] = await self.sync(tracker, summary.target, wanted, summary.run_id, only)
        return books

    async def sync(
        self,
        tracker: Tracker,
        target: str,
        wanted: Mapping[str, tuple[str, str, str]],
        run_id: str,
        only: frozenset[str] | None = None,
    ) -> Book:
        """Open, update and close ``tracker``'s tickets of ``target`` to match ``wanted`` (finding key ->
        class, title, body); with ``only``, tickets of other classes are left as they are."""
        kind = f"tickets|{tracker.name}|{target}"
        stored: dict[str, dict[str, Any]] = {str(v["key"]): v for v in (await self.state.list(kind)).values()}
        book = Book()
        for key, (cls, title, body) in wanted.items():
            row = stored.get(key)
            ticket = str(row.get("ticket") or "") if row else ""
            if not ticket:
                await self.state.put(kind, key, {"key": key, "cls": cls, "ticket": "", "opened_run": run_id})
                ticket = (await tracker.find(key) if row else None) or await tracker.open(key, title, body)
                opened = {"key": key, "cls": cls, "ticket": ticket, "opened_run": run_id, "last_run": run_id}
                await self.state.put(kind, key, opened)
                book.opened.append(ticket)
                continue
            await tracker.update(ticket, title, body)
            await self.state.put(kind, key, {**row, "last_run": run_id})  # type: ignore[dict-item]
            book.updated.append(ticket)
        for key, row in stored.items():
            if key in wanted or (only is not None and row.get("cls") not in only):
                continue
            ticket = str(row.get("ticket") or "") or (await tracker.find(key) or "")
            if ticket:
                await tracker.close(
                    ticket, f"entra-sync: reconciliation run {run_id} of {target} no longer finds this."
                )
                book.closed.append(ticket)
            await self.state.delete(kind, key)
        if book.opened or book.closed:
            log.info("%s tickets of %s: opened %s, updated %s, closed %s", tracker.name, target,
                     len(book.opened), len(book.updated), len(book.closed))  # fmt: skip
        return book
