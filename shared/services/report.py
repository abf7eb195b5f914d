"""Reconciliation reports: JSON and CSV for machines, one HTML page for people, kept in Blob Storage.

The renderers are pure (summary and records in, bytes out) and deterministic: records are ordered
by drift class (``DRIFT_ORDER``), then by display name and ids, so two reports of the same findings
are byte-identical and runs can be diffed. Work is linear in the number of records apart from one
sort, so 100,000 records render in seconds.

Each report carries the run's provenance (:func:`provenance`: source and tenant, target and where
it is, version, mapping hash, trigger, operator), each record the identity's sign-in name and its
"new since the last run" marker, each role to add the groups that justify it.

Every value that reaches the page passes through ``html.escape``; the page carries a Content
Security Policy that forbids scripts and external resources, as a second line. CSV cells that a
spreadsheet would read as a formula get a leading ``'``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import html
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient

from shared import __version__, names
from shared.core.drift import (
    DRIFT_ORDER,
    DRIFT_TITLES,
    Ambiguous,
    AttributeMismatch,
    Conflict,
    DriftRecord,
    Missing,
    Orphaned,
    Provenance,
    RoleMismatch,
    RunSummary,
    Skipped,
    Stale,
)
from shared.core.work import DEFAULT_SOURCE
from shared.errors import BadInput, NotFound
from shared.targets.registry import target_title

if TYPE_CHECKING:
    from shared.mapping.model import SyncMapping, TargetSection
    from shared.settings import Settings

REPORTS_CONTAINER: Final = names.REPORTS_CONTAINER

SCHEMA_VERSION: Final = 2  # of report.json; bump when its shape changes
# Versions parse_json reads: 2 added the provenance, the sign-in name and the "new" marker.
READABLE_VERSIONS: Final = (1, 2)
ROW_CAP: Final = 2_000  # rows per drift class on the HTML page; the CSV and JSON hold every record
TREND_RUNS: Final = 30  # runs in the trend table, the current one included
APPROVE_COMMAND: Final = "entra-sync approve {run_id}"

CONTENT_TYPES: Final = {
    "json": "application/json; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
CSV_COLUMNS: Final = (
    "drift", "entra_id", "user_id", "display", "sign_in", "new_since_last_run", "action", "what_differs",
    "granted_by", "details",
    # the run's provenance on every row, so a row taken out of the file still says where it comes from
    "run_id", "target", "target_kind", "target_where", "source", "source_kind", "tenant_id", "app_version",
    "mapping_sha256", "trigger", "operator",
)  # fmt: skip

# A run id becomes part of a blob name and of the approve command: letters, digits, ``_ - .``;
# it starts and ends with a letter or digit, so ``..`` and hidden names cannot form.
_RUN_ID: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,98}[A-Za-z0-9])?")

# A spreadsheet evaluates a cell starting with one of these (OWASP "CSV injection").
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")

ACTION_LABELS: Final = {
    "enqueued": "enqueued",
    "reported": "reported only",
    "held": "held",
    "approved": "queued on approval",
    "none": "none (dry run)",
}


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is safe in a blob name and a shell command, else raise BadInput."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise BadInput(
            f"invalid run id {run_id!r}: use 1-100 letters, digits, '_', '-' or '.', starting and ending "
            "with a letter or digit"
        )
    return run_id


# ------------------------------------------------------------------------------------------------
# Provenance
# ------------------------------------------------------------------------------------------------


def public_url(url: str) -> str:
    """``url`` without what may carry a secret (user info, query, fragment): scheme, host, port, path."""
    parts = urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (what ``sha256sum`` prints), or "" where it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


# Options a target kind may keep its location under, and how it is named in a report.
_WHERE_OPTIONS: Final = (("base_url", "base_url"), ("instance_url", "instance_url"), ("domain", "domain"))


def target_where(section: TargetSection, settings: Settings | None = None) -> dict[str, str]:
    """Where a target is, from its mapping section and the settings, never a secret: an Auth0
    domain (or the Management API's base URL), a SCIM base URL, a Salesforce instance URL (read
    from ``<settings_prefix>_INSTANCE_URL``)."""
    where: dict[str, str] = {}
    options = section.options
    for attr, name in _WHERE_OPTIONS:
        value = getattr(options, attr, None)
        if isinstance(value, str) and value:
            where[name] = public_url(value) if "://" in value else value
    if settings is None:
        return where
    if section.kind == "auth0" and settings.auth0 is not None:
        if settings.auth0.domain:
            where["domain"] = settings.auth0.domain
        where["base_url"] = public_url(settings.auth0.base_url)
    prefix = getattr(options, "settings_prefix", None)
    if isinstance(prefix, str) and prefix and "instance_url" not in where:
        instance = settings.env.get(f"{prefix}_INSTANCE_URL")
        if instance:
            where["instance_url"] = public_url(instance)
    return where


def provenance(
    mapping: SyncMapping, target: str, *, settings: Settings | None = None, trigger: str = "", operator: str = ""
) -> Provenance:
    """A run's provenance for the target named ``target`` in ``mapping``; ``settings`` add Entra
    ID's tenant and what the target's settings say of where it is (without them, those stay empty)."""
    section = mapping.target(target)
    source = mapping.sources.get(section.source)
    kind = source.kind if source is not None else ""
    tenant = settings.tenant_id if settings is not None and kind == DEFAULT_SOURCE else None
    return Provenance(
        source=section.source, source_kind=kind, tenant_id=tenant or "", target_kind=section.kind,
        target_where=target_where(section, settings), app_version=__version__,
        mapping_sha256=mapping.sha256 or file_sha256(mapping.source), trigger=trigger, operator=operator,
    )  # fmt: skip


def where_text(where: Mapping[str, str]) -> str:
    """A target's location on one line: ``domain=acme.eu.auth0.com; base_url=https://...``."""
    return "; ".join(f"{k}={v}" for k, v in sorted(where.items()))


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------


def _order_key(record: DriftRecord) -> tuple[int, str, str, str, str]:
    try:
        rank = DRIFT_ORDER.index(record.drift)
    except ValueError:
        rank = len(DRIFT_ORDER)  # classes this module does not know yet go last, by name
    return (rank, record.drift, record.display.casefold(), record.entra_id or "", record.user_id or "")


def ordered(records: Iterable[DriftRecord]) -> list[DriftRecord]:
    """Records in report order: by drift class, then display name, Entra id and Auth0 id."""
    return sorted(records, key=_order_key)


def _classes(present: Iterable[str]) -> list[str]:
    """DRIFT_ORDER, then any other class seen, by name."""
    extra = sorted(set(present) - set(DRIFT_ORDER))
    return [*DRIFT_ORDER, *extra]


def _title(drift: str, target: str = "Auth0") -> str:
    """A class's title for people; ``target`` is the target's title (see ``target_title``)."""
    return DRIFT_TITLES.get(drift, drift).replace("{target}", target)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def show_value(value: Any) -> str:
    """One attribute value as people read it: strings as they are, ``(none)`` and ``(empty)``
    told apart, anything else as JSON."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value if value else "(empty)"
    return _json(value)


def _fields(record: DriftRecord) -> list[tuple[str, Any, Any]]:
    """attribute_mismatch and conflict details as (field, Auth0 value, Entra value)."""
    kind = Conflict if record.drift == Conflict.drift else AttributeMismatch
    fields: Mapping[str, Sequence[Any]] = kind.of(record).fields or {}
    return [(name, pair[0], pair[1]) for name, pair in fields.items()]


def _texts(values: Iterable[Any] | None) -> list[str]:
    return [str(value) for value in values or ()]


def _last_login(stale: Stale) -> str:
    """When a stale account last logged in, or that it never did (and when it was created)."""
    if stale.last_login:
        return f"last login {stale.last_login}"
    return f"never logged in, created {stale.created_at}" if stale.created_at else "never logged in"


def what_differs(record: DriftRecord, target: str = "Auth0") -> str:
    """A one-line account of what differs, e.g. ``email: a@x -> b@x`` or ``roles: +Sales; -Staff``.

    Role changes are written ``roles: +added; -removed`` rather than ``+role ...`` so the text never
    starts like a formula and is not mangled by the CSV guard.
    """
    match record.drift:
        case Missing.drift:
            return f"no {target} account; Entra state: {Missing.of(record).state or 'unknown'}"
        case Skipped.drift:
            return f"not created: {Skipped.of(record).reason or 'the worker skips it'}"
        case Orphaned.drift:
            return f"no Entra source: {Orphaned.of(record).reason or 'unknown'}"
        case AttributeMismatch.drift:
            parts = [f"{name}: {show_value(a)} -> {show_value(e)}" for name, a, e in _fields(record)]
            return "; ".join(parts) or "(no fields listed)"
        case Conflict.drift:
            parts = [f"{name}: {show_value(e)} belongs to another account" for name, _, e in _fields(record)]
            return "; ".join(parts) or "(no fields listed)"
        case RoleMismatch.drift:
            roles = RoleMismatch.of(record)
            changes = [f"+{r}" for r in _texts(roles.add)] + [f"-{r}" for r in _texts(roles.remove)]
            return "roles: " + "; ".join(changes) if changes else "(no roles listed)"
        case Ambiguous.drift:
            ambiguous = Ambiguous.of(record)
            candidates = ", ".join(_texts(ambiguous.candidates)) or "(none listed)"
            return f"candidates: {candidates} (matched by {ambiguous.matched_by or 'unknown'})"
        case Stale.drift:
            stale = Stale.of(record)
            return f"{_last_login(stale)} ({stale.days} days)"
        case _:
            return _json(record.details)


# ------------------------------------------------------------------------------------------------
# JSON
# ------------------------------------------------------------------------------------------------


def render_json(summary: RunSummary, records: Iterable[DriftRecord]) -> bytes:
    """The whole run as JSON: schema version, summary, record count, then one record per line.

    Keys inside the summary and the records are sorted, so the output is stable; one record per line
    keeps the file greppable and diffable.
    """
    rows = [_json(r.to_dict()) for r in ordered(records)]
    head = (
        f'{{"schema_version": {SCHEMA_VERSION},\n'
        f' "summary": {_json(summary.to_dict())},\n'
        f' "record_count": {len(rows)},\n'
        f' "records": ['
    )
    body = ",\n  ".join(rows)
    return (head + ("\n  " + body + "\n ]}\n" if rows else "]}\n")).encode()


def parse_json(data: bytes) -> tuple[RunSummary, list[DriftRecord]]:
    """Read back what :func:`render_json` wrote, to render a report again later."""
    doc = json.loads(data)
    version = doc.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise BadInput(f"report.json schema version {version!r} is not one of {READABLE_VERSIONS}")
    return RunSummary.from_dict(doc["summary"]), [DriftRecord.from_dict(r) for r in doc["records"]]


class RecordKeys:
    """The keys (:attr:`DriftRecord.key`) of a report.json fed in pieces of any size. It relies on
    the layout :func:`render_json` writes (every version): one record per line, indented two spaces."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        *lines, self._tail = (self._tail + chunk).split(b"\n")
        for line in lines:
            self._line(line)

    def done(self) -> set[tuple[str, str]]:
        self._line(self._tail)
        self._tail = b""
        return self.keys

    def _line(self, line: bytes) -> None:
        if line.startswith(b"  {"):
            self.keys.add(DriftRecord.from_dict(json.loads(line.strip().rstrip(b","))).key)


# ------------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------------


def csv_safe(value: str) -> str:
    """Defuse a cell a spreadsheet would evaluate (``=``, ``+``, ``-``, ``@``, tab, CR first)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def new_text(new: bool | None) -> str:
    """The "new since last run" marker as text: yes, no, or empty where there was nothing to compare."""
    return "" if new is None else ("yes" if new else "no")


def granted_text(record: DriftRecord) -> str:
    """For a role mismatch, each entitlement to add and the groups that grant it: ``Sales: g1, g2``."""
    if record.drift != RoleMismatch.drift:
        return ""
    roles = RoleMismatch.of(record)
    by = roles.granted_by or {}
    return "; ".join(f"{role}: {', '.join(_texts(by.get(role))) or '(none)'}" for role in _texts(roles.add))


def render_csv(summary: RunSummary, records: Iterable[DriftRecord]) -> bytes:
    """One row per drift record, in report order, each with the run's provenance; UTF-8 with a
    byte-order mark so Excel reads non-ASCII names correctly; CRLF line ends (RFC 4180)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    t = target_title(summary.target)
    p = summary.provenance
    run = (
        summary.run_id, summary.target, p.target_kind, where_text(p.target_where), p.source, p.source_kind,
        p.tenant_id, p.app_version, p.mapping_sha256, p.trigger, p.operator,
    )  # fmt: skip
    for r in ordered(records):
        row = (
            r.drift, r.entra_id or "", r.user_id or "", r.display, r.sign_in, new_text(r.new), r.action,
            what_differs(r, t), granted_text(r), _json(r.details), *run,
        )  # fmt: skip
        writer.writerow([csv_safe(cell) for cell in row])
    return out.getvalue().encode("utf-8-sig")


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


_COLORS: Final = {
    "missing": "#2563eb",
    "skipped": "#0891b2",
    "orphaned": "#dc2626",
    "attribute_mismatch": "#d97706",
    "role_mismatch": "#7c3aed",
    "ambiguous": "#db2777",
    "stale": "#64748b",
}
_OTHER_COLOR: Final = "#0f766e"

_CSS: Final = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2937;
  margin: 0 auto; padding: 24px; max-width: 1280px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; }
h1 code { font-size: 20px; }
code { font-family: ui-monospace, "SFMono-Regular", Consolas, monospace; background: #f3f4f6;
  padding: 1px 4px; border-radius: 3px; }
.meta { display: flex; flex-wrap: wrap; gap: 4px 24px; margin: 8px 0 16px; padding: 0; }
.meta div { display: flex; gap: 6px; } .meta dt { color: #6b7280; } .meta dd { margin: 0; font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  background: #e5e7eb; color: #374151; vertical-align: middle; }
.s-completed { background: #dcfce7; color: #166534; } .s-held { background: #ffedd5; color: #9a3412; }
.s-approved { background: #dbeafe; color: #1e40af; } .s-failed { background: #fee2e2; color: #991b1b; }
.a-enqueued, .a-approved { background: #dbeafe; color: #1e40af; } .a-held { background: #ffedd5; color: #9a3412; }
.badge.new { background: #fef9c3; color: #854d0e; }
.a-reported { background: #f3f4f6; color: #374151; } .a-none { background: #fff; color: #6b7280;
  border: 1px solid #d1d5db; }
.banner { border-radius: 6px; padding: 12px 16px; margin: 16px 0; border-left: 6px solid; break-inside: avoid; }
.banner h2 { margin: 0 0 6px; font-size: 17px; } .banner p { margin: 6px 0; }
.banner.alarm { background: #fff7ed; border-color: #ea580c; }
.banner.error { background: #fef2f2; border-color: #dc2626; }
.banner.info { background: #eff6ff; border-color: #3b82f6; }
.banner.ok { background: #f0fdf4; border-color: #16a34a; }
.banner .command { font-size: 15px; padding: 6px 10px; display: inline-block; background: #fff;
  border: 1px solid #fdba74; user-select: all; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
th { background: #f9fafb; font-weight: 600; font-size: 13px; color: #374151; }
td { overflow-wrap: break-word; max-width: 420px; }
.scroll { overflow-x: auto; }
table.trend { font-size: 13px; } table.trend td { white-space: nowrap; padding: 3px 8px; }
table.trend th { vertical-align: bottom; } table.trend th.n { white-space: normal; max-width: 6em; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr.first td { border-top: 1px solid #d1d5db; }
tr.current td { background: #fefce8; font-weight: 600; }
.nil { color: #9ca3af; font-style: italic; }
.id { font-family: ui-monospace, Consolas, monospace; font-size: 12px; color: #4b5563; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.bar { display: flex; width: 160px; height: 14px; background: #f3f4f6; border-radius: 2px; overflow: hidden; }
.bar span { display: block; height: 100%; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12px; color: #4b5563; margin: 4px 0; }
.note { color: #6b7280; font-size: 13px; }
.cap { background: #fffbeb; border: 1px solid #fde68a; padding: 6px 10px; border-radius: 4px; }
ul.plain { margin: 0; padding-left: 18px; }
footer { margin-top: 40px; color: #6b7280; font-size: 12px; border-top: 1px solid #e5e7eb; padding-top: 8px; }
@media print { body { padding: 0; } .banner .command { border-color: #999; } }
"""

# Defence in depth behind html.escape: no scripts, no fetches, inline styles only.
_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _nil(text: str) -> str:
    return f'<span class="nil">{esc(text)}</span>'


def _cell_value(value: Any) -> str:
    if value is None or value == "":
        return _nil(show_value(value))
    return esc(show_value(value))


def _id(value: str | None) -> str:
    return f'<span class="id">{esc(value)}</span>' if value else _nil("(none)")


def _action(action: str) -> str:
    label = ACTION_LABELS.get(action, action)
    css = f"a-{action}" if action in ACTION_LABELS else ""
    return f'<span class="badge {css}">{esc(label)}</span>'


def _color(drift: str) -> str:
    return _COLORS.get(drift, _OTHER_COLOR)


def _duration(start: str, end: str) -> str:
    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return ""
    if seconds < 0:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _counts(records: Sequence[DriftRecord]) -> Counter[str]:
    return Counter(r.drift for r in records)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


@dataclass(frozen=True)
class Tally:
    """Drift counted both ways: records (one per identity and class) and identities (people or
    accounts). One identity in two classes is two records; the worker gets one work item per identity."""

    records: Counter[str]  # action -> records
    identities: Counter[str]  # action -> identities with a record of that action
    total_records: int
    total_identities: int

    @classmethod
    def of(cls, records: Sequence[DriftRecord]) -> Tally:
        by_action: dict[str, set[str]] = {}
        for r in records:
            by_action.setdefault(r.action, set()).add(r.identity)
        return cls(
            records=Counter(r.action for r in records),
            identities=Counter({action: len(who) for action, who in by_action.items()}),
            total_records=len(records),
            total_identities=len({r.identity for r in records}),
        )

    def both(self, action: str) -> str:
        """``3 identities (4 drift records)`` for one action."""
        n = self.identities[action]
        return f"{_plural(n, 'identity', 'identities')} ({_plural(self.records[action], 'record', 'records')})"


def _header(summary: RunSummary, tally: Tally) -> list[str]:
    s = summary
    out = [
        f'<h1>Reconciliation run <code>{esc(s.run_id)}</code> of <span class="target">{esc(target_title(s.target))}'
        f'</span> <span class="badge s-{esc(s.status)}">{esc(s.status)}</span></h1>',
        '<dl class="meta">',
    ]
    items: list[tuple[str, str]] = [
        ("Mode", s.mode),
        ("Started", s.started_at or "—"),
        ("Finished", s.finished_at or "—"),
    ]
    if duration := _duration(s.started_at, s.finished_at):
        items.append(("Duration", duration))
    items += [
        ("Entra users", f"{s.entra_users:,} ({s.entra_in_scope:,} in scope)"),
        (f"{target_title(s.target)} accounts", f"{s.accounts:,} ({s.managed_accounts:,} managed)"),
        ("In sync", f"{s.in_sync:,} of {s.entra_in_scope:,} in-scope identities"),
        (
            "Drift",
            f"{_plural(tally.total_records, 'record', 'records')} about "
            f"{_plural(tally.total_identities, 'identity', 'identities')}",
        ),
        ("Enqueued", tally.both("enqueued")),
        ("Held", tally.both("held")),
    ]
    if s.approved_at or s.approved_by:
        items.append(("Approved", f"{s.approved_at or '—'} by {s.approved_by or '(unknown)'}"))
    if s.read_by:
        items.append((f"{target_title(s.target)} read", s.read_by))
    out += [f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in items]
    out.append("</dl>")
    if s.timings:
        phases = ", ".join(f"{esc(k)} {v:.1f} s" for k, v in s.timings.items())
        out.append(f'<p class="note">Time per phase: {phases}</p>')
    return out


def _provenance(summary: RunSummary, total: int) -> list[str]:
    """Where the findings come from: source, target, version, mapping, trigger, operator, and what
    the "new" markers compare with."""
    p = summary.provenance
    source = f"{p.source} ({p.source_kind})" if p.source_kind else p.source
    if summary.previous_run:
        counted = _plural(summary.new_records, "record", "records")
        new = f"{counted} of {total:,} (compared with run {summary.previous_run})"
    else:
        new = "nothing to compare with: no earlier finished run of this target"
    items: list[tuple[str, str, str]] = [
        ("source", "Source", source),
        ("tenant", "Entra tenant", p.tenant_id),
        ("target", "Target", f"{summary.target} ({p.target_kind})" if p.target_kind else summary.target),
        ("where", "Target location", where_text(p.target_where)),
        ("version", "entra-sync version", p.app_version),
        ("mapping", "Mapping file SHA-256", p.mapping_sha256),
        ("trigger", "Trigger", p.trigger),
        ("operator", "Operator", p.operator),
        ("new", "New since last run", new),
    ]
    if p.source_kind and p.source_kind != DEFAULT_SOURCE and not p.tenant_id:
        items = [i for i in items if i[0] != "tenant"]  # only Entra ID's own source has a tenant here
    rows = [
        f'<div data-provenance="{key}"><dt>{esc(label)}</dt><dd>{esc(v) if v else _nil("(not recorded)")}</dd></div>'
        for key, label, v in items
    ]
    return ['<section id="provenance"><h2>Provenance</h2><dl class="meta">', *rows, "</dl></section>"]


def _banners(summary: RunSummary, total: int) -> list[str]:
    s, b = summary, summary.breaker
    out: list[str] = []
    if s.status == "failed":
        out.append(
            '<section class="banner error"><h2>This run failed</h2>'
            f"<p>{esc(s.error) if s.error else 'No error message was recorded.'}</p>"
            "<p>The findings below may be incomplete.</p></section>"
        )
    if b.tripped and s.mode == "dry-run":
        out.append(
            '<section class="banner alarm" id="circuit-breaker">'
            "<h2>An applied run would be held by the circuit breaker</h2>"
            f"<p><strong>Reason:</strong> {esc(b.reason) if b.reason else _nil('(none recorded)')} "
            f"({b.deprovisions:,} users to block or delete, limit {b.limit:,}; {b.share:.1%} of managed users, "
            f"limit {b.share_limit:.1%}). A dry run holds nothing and has nothing to approve.</p></section>"
        )
    elif b.tripped and s.status != "approved":
        command = APPROVE_COMMAND.format(run_id=s.run_id)
        out.append(
            '<section class="banner alarm" id="circuit-breaker">'
            "<h2>Held by the circuit breaker: nothing was blocked or deleted</h2>"
            f"<p><strong>Reason:</strong> {esc(b.reason) if b.reason else _nil('(none recorded)')}</p>"
            "<table><thead><tr><th></th><th class=n>This run</th><th class=n>Limit</th></tr></thead><tbody>"
            f"<tr><td>Users to block or delete</td><td class=n>{b.deprovisions:,}</td><td class=n>{b.limit:,}</td></tr>"
            f"<tr><td>Share of managed users</td><td class=n>{b.share:.1%}</td>"
            f"<td class=n>{b.share_limit:.1%}</td></tr>"
            "</tbody></table>"
            f"<p>The deprovisions of {_plural(s.held, 'identity', 'identities')} are held until someone approves "
            "this run. After reviewing the tables below, approve it with:</p>"
            f'<p><code class="command">{esc(command)}</code></p></section>'
        )
    elif b.tripped:
        out.append(
            '<section class="banner info"><h2>Held by the circuit breaker, then approved</h2>'
            f"<p><strong>Approved by</strong> {esc(s.approved_by) if s.approved_by else _nil('(not recorded)')} "
            f"<strong>at</strong> {esc(s.approved_at) if s.approved_at else _nil('(not recorded)')}: the held "
            f"deprovisions of {_plural(s.held, 'identity', 'identities')} were queued for the worker.</p>"
            f"<p><strong>Reason it was held:</strong> {esc(b.reason)} ({b.deprovisions:,} users to block or "
            f"delete, limit {b.limit:,}; {b.share:.1%} of managed users, limit {b.share_limit:.1%}).</p></section>"
        )
    if s.mode == "dry-run":
        out.append(
            '<section class="banner info"><p><strong>Dry run:</strong> this run planned and reported only; '
            f"nothing was changed in {esc(target_title(s.target))}.</p></section>"
        )
    if total == 0 and s.status != "failed":
        out.append(
            '<section class="banner ok"><h2>All in sync</h2>'
            f"<p>{s.entra_in_scope:,} in-scope Entra users and {s.accounts:,} {esc(target_title(s.target))} "
            "accounts were compared; "
            "no drift was found.</p></section>"
        )
    return out


def _counts_table(
    classes: Sequence[str], records: Sequence[DriftRecord], summary: RunSummary, tally: Tally
) -> list[str]:
    by_action: dict[str, Counter[str]] = {}
    for r in records:
        by_action.setdefault(r.drift, Counter())[r.action] += 1
    actions = [a for a in ACTION_LABELS if any(a in c for c in by_action.values())]
    compared = bool(summary.previous_run)
    new = Counter(r.drift for r in records if r.new)
    in_scope_drifted = max(0, summary.entra_in_scope - summary.in_sync)
    out = [
        "<h2>Counts by class</h2>",
        '<p class="note">Each drift record is one identity in one class, and one identity can be in several '
        f"classes: the {_plural(tally.total_records, 'record', 'records')} below are about "
        f"{_plural(tally.total_identities, 'identity', 'identities')}. The worker gets one work item per "
        f"identity. Of the {summary.entra_in_scope:,} in-scope Entra identities, {summary.in_sync:,} are in sync "
        f"and {in_scope_drifted:,} have drift; the others with drift are outside the scope (orphans).</p>",
        '<table id="counts"><thead><tr><th>Drift class</th><th class=n>Records</th>',
        *(f"<th class=n>{esc(ACTION_LABELS[a])}</th>" for a in actions),
        "<th class=n>New since last run</th>" if compared else "",
        "</tr></thead><tbody>",
    ]
    total = Counter[str]()
    for drift in classes:
        c = by_action.get(drift, Counter())
        n = sum(c.values())
        total.update(c)
        title = esc(_title(drift, target_title(summary.target)))
        name = f'<a href="#drift-{esc(drift)}">{title}</a>' if n else title
        out.append(
            f'<tr data-drift="{esc(drift)}"><td><span class="swatch" style="background:{_color(drift)}"></span>'
            f"{name}</td><td class=n>{n:,}</td>"
            + "".join(f"<td class=n>{c[a]:,}</td>" for a in actions)
            + (f"<td class=n>{new[drift]:,}</td>" if compared else "")
            + "</tr>"
        )
    new_total = f"<th class=n>{sum(new.values()):,}</th>" if compared else ""
    out.append(
        f'<tr data-total="records"><th>Total drift records</th><th class=n>{sum(total.values()):,}</th>'
        + "".join(f"<th class=n>{total[a]:,}</th>" for a in actions)
        + new_total
        + "</tr>"
    )
    out.append(
        f'<tr data-total="identities"><th>Identities with drift</th><th class=n>{tally.total_identities:,}</th>'
        + "".join(f"<th class=n>{tally.identities[a]:,}</th>" for a in actions)
        + ("<th></th>" if compared else "")
        + "</tr>"
    )
    out.append(
        f'<tr data-total="in_sync"><td>In sync (in-scope identities with no drift)</td>'
        f"<td class=n>{summary.in_sync:,}</td>{'<td></td>' * (len(actions) + compared)}</tr>"
    )
    out.append("</tbody></table>")
    return out


def _trend(summary: RunSummary, current: Counter[str], history: Sequence[RunSummary]) -> list[str]:
    t = target_title(summary.target)
    earlier = [h for h in history if h.run_id != summary.run_id and h.target == summary.target]
    earlier.sort(key=lambda h: h.started_at)  # stable: equal or missing times keep the caller's order
    earlier = earlier[-(TREND_RUNS - 1) :] if TREND_RUNS > 1 else []
    runs: list[tuple[RunSummary, Mapping[str, int]]] = [(h, h.counts) for h in earlier]
    runs.append((summary, current))
    # Only classes seen in some run: columns of zeros would push the table past the page.
    classes = [d for d in _classes(k for _, c in runs for k in c) if any(c.get(d, 0) for _, c in runs)]
    peak = max((sum(c.values()) for _, c in runs), default=0) or 1
    out = ["<h2>Trend</h2>"]
    if not earlier:
        out.append('<p class="note">No earlier runs to compare with yet.</p>')
    else:
        out.append(
            f'<p class="note">The last {len(runs)} runs, oldest first; this run is the last, highlighted row.</p>'
        )
    out.append('<div class="legend">')
    out += [
        f'<span><span class="swatch" style="background:{_color(d)}"></span>{esc(_title(d, t))}</span>' for d in classes
    ]
    out.append("</div>")
    out.append('<div class="scroll"><table class="trend"><thead><tr><th>Run</th><th>Started</th><th>Mode</th>')
    out.append("<th>Status</th><th>Drift</th><th class=n>Total</th>")
    out += [f"<th class=n>{esc(_title(d, t))}</th>" for d in classes]
    out.append("</tr></thead><tbody>")
    for run, counts in runs:
        is_current = run is summary
        total = sum(counts.get(d, 0) for d in classes)
        bar = "".join(
            f'<span style="width:{100 * counts[d] / peak:.2f}%;background:{_color(d)}" '
            f'title="{esc(_title(d, t))}: {counts[d]:,}"></span>'
            for d in classes
            if counts.get(d, 0) > 0
        )
        out.append(
            f"<tr{' class=current' if is_current else ''}><td>{esc(run.run_id)}</td><td>{esc(run.started_at)}</td>"
            f'<td>{esc(run.mode)}</td><td>{esc(run.status)}</td><td><div class="bar">{bar}</div></td>'
            f"<td class=n>{total:,}</td>" + "".join(f"<td class=n>{counts.get(d, 0):,}</td>" for d in classes) + "</tr>"
        )
    out.append("</tbody></table></div>")
    return out


def _identity_cells(r: DriftRecord, rowspan: int = 1) -> str:
    span = f' rowspan="{rowspan}"' if rowspan > 1 else ""
    name = esc(r.display) or _nil("(no name)")
    if r.new:
        name += ' <span class="badge new" title="no record of this identity in this class last run">new</span>'
    sign_in = esc(r.sign_in) if r.sign_in else _nil("(none)")
    return (
        f"<td{span}>{name}</td><td{span}>{sign_in}</td><td{span}>{_id(r.entra_id)}</td><td{span}>{_id(r.user_id)}</td>"
    )


def _identity_head(target: str) -> str:
    return f"<th>Identity</th><th>UPN or email</th><th>Entra object id</th><th>{esc(target)} id</th>"


def _granted_cell(roles: RoleMismatch) -> str:
    """Each role to add and the identity's groups whose grant in the mapping justifies it."""
    by = roles.granted_by or {}
    lines = [
        f"{esc(role)}: " + (", ".join(_id(g) for g in _texts(by.get(role))) or _nil("(no group recorded)"))
        for role in _texts(roles.add)
    ]
    return "<br>".join(lines) or _nil("(nothing to add)")


def _rows(drift: str, records: Sequence[DriftRecord], target: str = "Auth0") -> tuple[str, list[str]]:
    """The table head and body rows for one drift class."""
    rows: list[str] = []
    if drift in {AttributeMismatch.drift, Conflict.drift}:
        head = f"{_identity_head(target)}<th>Field</th><th>{esc(target)} value</th><th>Entra value</th><th>Done</th>"
        for r in records:
            fields = _fields(r) or [("(no fields listed)", None, None)]
            span = len(fields)
            for i, (name, auth0, entra) in enumerate(fields):
                cells = f"<td>{esc(name)}</td><td>{_cell_value(auth0)}</td><td>{_cell_value(entra)}</td>"
                if i == 0:
                    more = f' rowspan="{span}"' if span > 1 else ""
                    rows.append(
                        f'<tr class="first">{_identity_cells(r, span)}{cells}<td{more}>{_action(r.action)}</td></tr>'
                    )
                else:
                    rows.append(f"<tr>{cells}</tr>")
        return head, rows
    if drift == RoleMismatch.drift:
        head = (
            f"{_identity_head(target)}<th>Roles to add</th><th>Justified by (group granting it)</th>"
            "<th>Roles to remove</th><th>Done</th>"
        )
        for r in records:
            roles = RoleMismatch.of(r)
            add = "<br>".join(esc(x) for x in _texts(roles.add)) or _nil("(none)")
            remove = "<br>".join(esc(x) for x in _texts(roles.remove)) or _nil("(none)")
            rows.append(
                f"<tr>{_identity_cells(r)}<td>{add}</td><td>{_granted_cell(roles)}</td><td>{remove}</td>"
                f"<td>{_action(r.action)}</td></tr>"
            )
        return head, rows
    if drift == Ambiguous.drift:
        head = (
            f"{_identity_head(target)}<th>Matched by</th><th>Candidates (never fixed automatically)</th><th>Done</th>"
        )
        for r in records:
            ambiguous = Ambiguous.of(r)
            candidates = "".join(f"<li>{_id(c)}</li>" for c in _texts(ambiguous.candidates))
            cell = f'<ul class="plain">{candidates}</ul>' if candidates else _nil("(none listed)")
            rows.append(
                f"<tr>{_identity_cells(r)}<td>{_cell_value(ambiguous.matched_by)}</td><td>{cell}</td>"
                f"<td>{_action(r.action)}</td></tr>"
            )
        return head, rows
    if drift == Stale.drift:
        head = f"{_identity_head(target)}<th>Last login</th><th class=n>Days</th><th>Done</th>"
        for r in records:
            stale = Stale.of(r)
            never = f"never (created {stale.created_at})" if stale.created_at else "never"
            rows.append(
                f"<tr>{_identity_cells(r)}<td>{esc(stale.last_login) if stale.last_login else _nil(never)}</td>"
                f"<td class=n>{esc(stale.days)}</td><td>{_action(r.action)}</td></tr>"
            )
        return head, rows
    one_column: dict[str, tuple[str, Callable[[DriftRecord], str]]] = {
        Missing.drift: ("Entra state", lambda r: Missing.of(r).state),
        Skipped.drift: ("Why the worker does not create it", lambda r: Skipped.of(r).reason),
        Orphaned.drift: ("Reason", lambda r: Orphaned.of(r).reason),
    }
    if drift in one_column:
        label, value = one_column[drift]
        head = f"{_identity_head(target)}<th>{label}</th><th>Done</th>"
        for r in records:
            rows.append(f"<tr>{_identity_cells(r)}<td>{_cell_value(value(r))}</td><td>{_action(r.action)}</td></tr>")
        return head, rows
    head = f"{_identity_head(target)}<th>Details</th><th>Done</th>"
    for r in records:
        rows.append(f"<tr>{_identity_cells(r)}<td>{esc(_json(r.details))}</td><td>{_action(r.action)}</td></tr>")
    return head, rows


def _section(drift: str, records: Sequence[DriftRecord], row_cap: int, target: str) -> list[str]:
    shown = records[:row_cap]
    head, rows = _rows(drift, shown, target)
    out = [
        f'<section id="drift-{esc(drift)}"><h2><span class="swatch" style="background:{_color(drift)}"></span>'
        f"{esc(_title(drift, target))} <span class=note>({len(records):,})</span></h2>"
    ]
    if len(records) > len(shown):
        out.append(
            f'<p class="cap">Showing the first {len(shown):,} of {len(records):,}. The other '
            f"{len(records) - len(shown):,} are in <code>report.csv</code> and <code>report.json</code>.</p>"
        )
    out += [f"<table><thead><tr>{head}</tr></thead><tbody>", *rows, "</tbody></table></section>"]
    return out


def _housekeeping(summary: RunSummary) -> list[str]:
    """What the run did (or, a dry run, would do) to the target's own objects, such as its groups."""
    if not summary.housekeeping:
        return []
    done = "would do" if summary.mode == "dry-run" else "did"
    items = "".join(f"<li>{esc(line)}</li>" for line in summary.housekeeping)
    return [
        f'<section id="housekeeping"><h2>What this run {done} to the target\'s groups</h2><ul>{items}</ul></section>'
    ]


def _baseline(summary: RunSummary) -> list[str]:
    """The tenant's settings that differ from the declared baseline, and what became of them."""
    if not summary.baseline:
        return []
    fate = "held for approval (entra-sync approve this run corrects them)" if summary.baseline_held else "reported"
    items = "".join(f"<li>{esc(line)}</li>" for line in summary.baseline)
    title = f"Tenant settings against the baseline: {esc(fate)}"
    return [f'<section id="baseline"><h2>{title}</h2><ul>{items}</ul></section>']


def render_html(
    summary: RunSummary,
    records: Iterable[DriftRecord],
    history: Sequence[RunSummary] = (),
    *,
    row_cap: int = ROW_CAP,
) -> bytes:
    """One self-contained page: header, banners, counts by class, trend, then a table per class.

    ``history`` holds earlier runs' summaries in any order (sorted here by start time; the current
    run, if present, is ignored and drawn last from ``records``). Tables stop at ``row_cap`` rows
    per class, with a line pointing to the CSV and JSON for the rest.
    """
    recs = ordered(records)
    title = f"Reconciliation {summary.run_id} · {summary.status}"
    head, body = _target_parts(summary, recs, history, row_cap)
    out = [
        *_page_start(title),
        "<header>",
        *head,
        "</header><main>",
        # One run covers one target: the page is that target's section (render_runs puts one such
        # section per target on one page).
        f'<section class="target" id="target-{esc(summary.target)}" data-target="{esc(summary.target)}">',
        *body,
        "</section></main><footer>entra-sync reconciliation report "
        f"(schema {SCHEMA_VERSION}) for run <code>{esc(summary.run_id)}</code>. Every record is also in "
        "<code>report.csv</code> and <code>report.json</code> next to this page.</footer></body></html>\n",
    ]
    return "\n".join(out).encode()


def render_runs(
    runs: Sequence[tuple[RunSummary, Sequence[DriftRecord], Sequence[RunSummary]]],
    *,
    row_cap: int = ROW_CAP,
) -> bytes:
    """One page for several runs, one section per target (the latest run of each, say): each
    section is what the target's own report shows, its ids prefixed with the target's name so that
    its links stay within it; a contents list first."""
    title = f"Reconciliation of {_plural(len(runs), 'target', 'targets')}"
    contents = "".join(
        f'<li><a href="#target-{esc(s.target)}">{esc(target_title(s.target))}</a>: run <code>{esc(s.run_id)}</code> '
        f'<span class="badge s-{esc(s.status)}">{esc(s.status)}</span></li>'
        for s, _, _ in runs
    )
    out = [*_page_start(title), f'<header><h1>{esc(title)}</h1><ul class="plain">{contents}</ul></header><main>']
    for summary, records, history in runs:
        head, body = _target_parts(summary, ordered(records), history, row_cap)
        head[0] = head[0].replace("<h1>", "<h2>", 1).replace("</h1>", "</h2>", 1)
        scoped = _scoped("\n".join([*head, *body]), summary.target)
        out += [
            f'<section class="target" id="target-{esc(summary.target)}" data-target="{esc(summary.target)}">',
            scoped,
            "</section>",
        ]
    out.append(
        "</main><footer>entra-sync reconciliation report "
        f"(schema {SCHEMA_VERSION}) of {_plural(len(runs), 'run', 'runs')}: "
        + ", ".join(f"<code>{esc(s.run_id)}</code>" for s, _, _ in runs)
        + ". Every record is also in each run's <code>report.csv</code> and <code>report.json</code>.</footer>"
        "</body></html>\n"
    )
    return "\n".join(out).encode()


# An id or in-page link inside a target's part of a page (this module writes every one of them; the
# values it escapes cannot hold a quote): prefixed per target where several share a page.
_SCOPED_ID: Final = re.compile(r'(\bid="|\bhref="#)(?=[a-z])')


def _scoped(fragment: str, target: str) -> str:
    return _SCOPED_ID.sub(lambda m: f"{m.group(1)}{target}-", fragment)


def _page_start(title: str) -> list[str]:
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
    ]


def _target_parts(
    summary: RunSummary, recs: Sequence[DriftRecord], history: Sequence[RunSummary], row_cap: int
) -> tuple[list[str], list[str]]:
    """A run's heading and provenance, and its findings: banners, counts, trend, housekeeping and a
    table per drift class."""
    counts = _counts(recs)
    classes = _classes(counts)
    by_class: dict[str, list[DriftRecord]] = {}
    for r in recs:
        by_class.setdefault(r.drift, []).append(r)
    total = len(recs)
    tally = Tally.of(recs)
    head = [*_header(summary, tally), *_provenance(summary, total)]
    body = [
        *_banners(summary, total),
        *_counts_table(classes, recs, summary, tally),
        *_trend(summary, counts, history),
        *_housekeeping(summary),
        *_baseline(summary),
    ]
    for drift in classes:
        if by_class.get(drift):
            body += _section(drift, by_class[drift], row_cap, target_title(summary.target))
    return head, body


# ------------------------------------------------------------------------------------------------
# Storage
# ------------------------------------------------------------------------------------------------


class ReportStore:
    """Reports in Blob Storage, one folder per run: ``runs/<run_id>/report.{json,csv,html}``."""

    def __init__(self, service: BlobServiceClient, container: str = REPORTS_CONTAINER):
        self.container = service.get_container_client(container)

    @staticmethod
    def blob_name(run_id: str, fmt: str) -> str:
        if fmt not in CONTENT_TYPES:
            raise NotFound(f"no report format {fmt!r}; use one of {', '.join(CONTENT_TYPES)}")
        return f"runs/{validate_run_id(run_id)}/report.{fmt}"

    async def ensure(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.container.create_container()

    async def save(
        self, summary: RunSummary, records: Iterable[DriftRecord], history: Sequence[RunSummary] = ()
    ) -> dict[str, str]:
        """Render and write the three reports; return format -> blob name."""
        run_id = validate_run_id(summary.run_id)
        recs = ordered(records)
        rendered = {
            "json": render_json(summary, recs),
            "csv": render_csv(summary, recs),
            "html": render_html(summary, recs, history),
        }
        written: dict[str, str] = {}
        for fmt, data in rendered.items():
            name = self.blob_name(run_id, fmt)
            await self.container.upload_blob(
                name,
                data,
                overwrite=True,
                content_settings=ContentSettings(content_type=CONTENT_TYPES[fmt]),
                metadata={"run_id": run_id},
            )
            written[fmt] = name
        return written

    async def record_keys(self, run_id: str) -> set[tuple[str, str]]:
        """The (identity, drift class) of every record of a run's report.json, read in chunks: memory
        holds the keys and one chunk, never the records. NotFound where the run has no report."""
        name = self.blob_name(run_id, "json")
        keys = RecordKeys()
        try:
            stream = await self.container.download_blob(name)
            async for chunk in stream.chunks():
                keys.feed(chunk)
        except ResourceNotFoundError as exc:
            raise NotFound(f"no json report for run {run_id!r} in container {self.container.container_name}") from exc
        return keys.done()

    async def load_run(self, run_id: str) -> tuple[RunSummary, list[DriftRecord]]:
        """A run's summary and records as its report.json holds them, to render them again."""
        return parse_json(await self.load(run_id, "json"))

    async def load(self, run_id: str, fmt: str) -> bytes:
        """One stored report; NotFound for an unknown run or format, BadInput for an unsafe run id."""
        name = self.blob_name(run_id, fmt)
        try:
            stream = await self.container.download_blob(name)
            return await stream.readall()
        except ResourceNotFoundError as exc:
            raise NotFound(f"no {fmt} report for run {run_id!r} in container {self.container.container_name}") from exc
