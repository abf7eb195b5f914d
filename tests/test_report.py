"""Reconciliation reports: the three renderers on plain data, and the blob store against Azurite."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Callable, Coroutine
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient

from sandbox.azurite import Azurite
from shared import __version__
from shared.core.drift import (
    DETAIL_TYPES,
    DRIFT_ORDER,
    DRIFT_TITLES,
    Ambiguous,
    AttributeMismatch,
    Breaker,
    Conflict,
    Details,
    DriftRecord,
    Missing,
    Orphaned,
    Provenance,
    RoleMismatch,
    RunSummary,
    Skipped,
    Stale,
    granting_groups,
    sign_in_name,
)
from shared.errors import BadInput, NotFound
from shared.mapping.load import load_mapping
from shared.mapping.model import SourceSection, SyncMapping, TargetSection
from shared.services.report import (
    CSV_COLUMNS,
    RecordKeys,
    ReportStore,
    csv_safe,
    parse_json,
    provenance,
    public_url,
    render_csv,
    render_html,
    render_json,
    validate_run_id,
    what_differs,
)
from shared.settings import Settings
from shared.targets.scim.rules import ScimOptions
from tests.support import sandbox_env


def title(drift: str) -> str:
    """A class's title as an Auth0 run's report shows it."""
    return DRIFT_TITLES[drift].replace("{target}", "Auth0")


HOSTILE = '<script>alert("x")</script> O\'Brien & Zoë 山田'


def record(
    details: Details,
    entra_id: str | None,
    user_id: str | None,
    display: str,
    action: str = "reported",
    sign_in: str = "",
    new: bool | None = None,
) -> DriftRecord:
    """A record built the way the reconciler builds it."""
    return dataclasses.replace(details.record(entra_id, user_id, display), action=action, sign_in=sign_in, new=new)


def records() -> list[DriftRecord]:
    grace = {"email": ["grace@old.example", "grace@new.example"], "family_name": [None, "Hopper"]}
    return [
        record(Stale(321, last_login="2025-01-02T03:04:05Z", created_at=None), "e-6", "auth0|6", "Sam Stale"),
        record(Stale(400, created_at="2024-10-18T00:00:00Z"), "e-7", "auth0|7", "Nora Never"),
        record(Missing("active"), "e-1", None, "Ada Lovelace", action="enqueued", sign_in="ada@contoso.example"),
        record(Orphaned("source deleted"), None, "auth0|2", "Old Account", action="held"),
        record(AttributeMismatch(grace), "e-3", "auth0|3", "Grace Hopper", action="enqueued", sign_in="grace@x.test"),
        record(
            RoleMismatch(["Sales Writer"], ["Employee"], granted_by={"Sales Writer": ["g-emea", "g-sales"]}),
            "e-4",
            "auth0|4",
            "Sales Person",
            action="enqueued",
            sign_in="sales@contoso.example",
        ),
        record(Ambiguous(["auth0|5a", "auth0|5b"], "email", "ambiguous"), "e-5", None, "Two Matches"),
    ]


def summary(**kw: Any) -> RunSummary:
    base: dict[str, Any] = {
        "run_id": "20261122T020000Z-1a2b3c",
        "mode": "apply",
        "target": "auth0",
        "status": "completed",
        "started_at": "2026-11-22T02:00:00.000Z",
        "finished_at": "2026-11-22T02:03:25.500Z",
        "entra_users": 1_200,
        "entra_in_scope": 1_100,
        "accounts": 1_150,
        "managed_accounts": 1_090,
        "in_sync": 1_094,  # records() has drift for 6 in-scope identities and one orphan
        "counts": {"missing": 1, "orphaned": 1, "attribute_mismatch": 1, "role_mismatch": 1, "ambiguous": 1},
        "enqueued": 3,
        "read_by": "export job",
        "timings": {"entra": 12.5, "auth0": 40.25},
        "provenance": PROVENANCE,
    }
    base.update(kw)
    return RunSummary(**base)


PROVENANCE = Provenance(
    source="entra",
    source_kind="entra",
    tenant_id="11111111-2222-3333-4444-555555555555",
    target_kind="auth0",
    target_where={"domain": "contoso.eu.auth0.com", "base_url": "https://contoso.eu.auth0.com"},
    app_version="0.1.0",
    mapping_sha256="ab" * 32,
    trigger="cli",
    operator="alice",
)


INLINE = frozenset({"a", "b", "code", "em", "i", "span", "strong"})


class Page(HTMLParser):
    """The tags and the visible text of a page, as a browser would parse them."""

    def __init__(self, data: bytes):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(data.decode())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in INLINE:
            self.text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag not in INLINE:
            self.text.append(" ")

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def plain(self) -> str:
        """The visible text with whitespace collapsed; cells and blocks are separated by a space."""
        return " ".join("".join(self.text).split())

    def names(self) -> set[str]:
        return {tag for tag, _ in self.tags}


def csv_rows(data: bytes) -> list[dict[str, str]]:
    assert data.startswith(b"\xef\xbb\xbf")  # BOM, so Excel reads UTF-8
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


# ------------------------------------------------------------------------------------------------
# What differs, run ids
# ------------------------------------------------------------------------------------------------


def test_what_differs_reads_as_one_line_per_class() -> None:
    by_class = {r.drift + (r.entra_id or ""): what_differs(r) for r in records()}
    assert by_class["missinge-1"] == "no Auth0 account; Entra state: active"
    assert by_class["orphaned"] == "no Entra source: source deleted"
    assert by_class["attribute_mismatche-3"] == (
        "email: grace@old.example -> grace@new.example; family_name: (none) -> Hopper"
    )
    assert by_class["role_mismatche-4"] == "roles: +Sales Writer; -Employee"
    assert by_class["ambiguouse-5"] == "candidates: auth0|5a, auth0|5b (matched by email)"
    assert by_class["stalee-6"] == "last login 2025-01-02T03:04:05Z (321 days)"
    assert by_class["stalee-7"] == "never logged in, created 2024-10-18T00:00:00Z (400 days)"


def test_every_class_reads_back_the_details_it_wrote_through_the_stored_json() -> None:
    samples: dict[type[Details], Details] = {
        Missing: Missing("active"),
        Skipped: Skipped("joiner has no email after mapping; Auth0 needs one"),
        Orphaned: Orphaned("out of scope"),
        AttributeMismatch: AttributeMismatch({"name": ["Old", "New"]}),
        Conflict: Conflict({"email": ["ada@x.example", "grace@x.example"]}),
        RoleMismatch: RoleMismatch(["Sales Writer"], ["Employee"]),
        Ambiguous: Ambiguous(["auth0|a", "auth0|b"], "email", "ambiguous"),
        Stale: Stale(120, last_login="2025-01-01T00:00:00Z"),
    }
    assert set(samples) == set(DETAIL_TYPES)
    for kind, details in samples.items():
        stored = json.loads(json.dumps(details.record("e", "u", "Someone").to_dict()))
        back = DriftRecord.from_dict(stored)
        assert back.drift == kind.drift
        assert kind.of(back) == details


def test_details_of_one_class_are_not_read_from_a_record_of_another() -> None:
    with pytest.raises(ValueError, match="a 'missing' record has no Stale details"):
        Stale.of(Missing("active").record("e", None, "Someone"))


@pytest.mark.parametrize("good", ["20261122T020000Z-1a2b3c", "a", "run_1.2-x"])
def test_safe_run_ids_are_accepted(good: str) -> None:
    assert validate_run_id(good) == good


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a..b", ".hidden", "x-", "a b", "a\nb", "é", "x" * 101])
def test_unsafe_run_ids_are_refused(bad: str) -> None:
    with pytest.raises(BadInput, match="invalid run id"):
        validate_run_id(bad)


# ------------------------------------------------------------------------------------------------
# JSON
# ------------------------------------------------------------------------------------------------


def test_json_holds_the_summary_and_every_record_in_report_order() -> None:
    doc = json.loads(render_json(summary(), records()))
    assert list(doc) == ["schema_version", "summary", "record_count", "records"]
    assert doc["summary"]["run_id"] == "20261122T020000Z-1a2b3c"
    assert doc["summary"]["breaker"]["tripped"] is False
    assert doc["record_count"] == 7
    assert [r["drift"] for r in doc["records"]] == [
        "missing",
        "orphaned",
        "attribute_mismatch",
        "role_mismatch",
        "ambiguous",
        "stale",
        "stale",
    ]
    assert [r["display"] for r in doc["records"][-2:]] == ["Nora Never", "Sam Stale"]


def test_json_is_stable_and_round_trips() -> None:
    data = render_json(summary(), records())
    assert render_json(summary(), list(reversed(records()))) == data
    got_summary, got_records = parse_json(data)
    assert got_summary == summary()
    assert sorted(got_records, key=lambda r: (r.drift, r.display)) == sorted(
        records(), key=lambda r: (r.drift, r.display)
    )


def test_json_of_an_empty_run_is_valid_and_keeps_hostile_text_intact() -> None:
    doc = json.loads(render_json(summary(run_id="r1"), []))
    assert doc["records"] == []
    assert doc["record_count"] == 0
    record = DriftRecord("missing", "e", None, HOSTILE, {"state": "active"})
    assert json.loads(render_json(summary(), [record]))["records"][0]["display"] == HOSTILE


def test_json_of_an_unknown_schema_version_is_refused() -> None:
    with pytest.raises(BadInput, match="schema version 99 is not one of"):
        parse_json(b'{"schema_version": 99, "summary": {}, "records": []}')


# ------------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------------


def test_csv_has_one_row_per_record_with_what_differs_and_raw_details() -> None:
    rows = csv_rows(render_csv(summary(), records()))
    assert len(rows) == 7
    assert list(rows[0]) == list(CSV_COLUMNS)
    attribute = next(r for r in rows if r["drift"] == "attribute_mismatch")
    assert attribute == {
        "drift": "attribute_mismatch",
        "entra_id": "e-3",
        "user_id": "auth0|3",
        "display": "Grace Hopper",
        "sign_in": "grace@x.test",
        "new_since_last_run": "",
        "action": "enqueued",
        "what_differs": "email: grace@old.example -> grace@new.example; family_name: (none) -> Hopper",
        "granted_by": "",
        "details": attribute["details"],
        "run_id": "20261122T020000Z-1a2b3c",
        "target": "auth0",
        "target_kind": "auth0",
        "target_where": "base_url=https://contoso.eu.auth0.com; domain=contoso.eu.auth0.com",
        "source": "entra",
        "source_kind": "entra",
        "tenant_id": "11111111-2222-3333-4444-555555555555",
        "app_version": "0.1.0",
        "mapping_sha256": "ab" * 32,
        "trigger": "cli",
        "operator": "alice",
    }
    roles = next(r for r in rows if r["drift"] == "role_mismatch")
    assert roles["granted_by"] == "Sales Writer: g-emea, g-sales"
    assert json.loads(attribute["details"]) == records()[4].details
    orphan = next(r for r in rows if r["drift"] == "orphaned")
    assert orphan["entra_id"] == ""
    assert orphan["action"] == "held"


@pytest.mark.parametrize("danger", ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cells_that_a_spreadsheet_would_evaluate_get_a_leading_quote(danger: str) -> None:
    record = DriftRecord(
        "attribute_mismatch", danger, danger, danger, {"fields": {"title": [danger, "ok"]}}, action="enqueued"
    )
    row = csv_rows(render_csv(summary(), [record]))[0]
    assert row["display"] == "'" + danger
    assert row["entra_id"] == "'" + danger
    assert row["user_id"] == "'" + danger
    assert row["what_differs"] == f"title: {danger} -> ok"  # not at the start of the cell: harmless
    assert csv_safe(danger) == "'" + danger
    assert csv_safe("plain") == "plain"


def test_csv_keeps_quotes_commas_newlines_and_non_ascii_intact() -> None:
    record = DriftRecord("missing", "e", None, 'He said "hi", then\nleft — 山田 Zoë', {"state": "active"})
    assert csv_rows(render_csv(summary(), [record]))[0]["display"] == 'He said "hi", then\nleft — 山田 Zoë'


def test_csv_of_no_records_is_just_the_header() -> None:
    assert render_csv(summary(), []).decode("utf-8-sig") == ",".join(CSV_COLUMNS) + "\r\n"


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------


def test_html_is_self_contained_with_no_scripts_or_external_resources() -> None:
    page = Page(render_html(summary(), records(), []))
    assert page.names().isdisjoint({"script", "link", "img", "iframe", "object", "embed", "form"})
    for _, attrs in page.tags:
        assert not any(k.startswith("on") for k in attrs)
        assert not any("http" in (v or "") for k, v in attrs.items() if k in {"href", "src"})
    csp = next(a for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in (csp["content"] or "")


def test_html_title_carries_run_id_mode_status_and_times() -> None:
    page = Page(render_html(summary(), records(), []))
    text = page.plain
    assert "Reconciliation run 20261122T020000Z-1a2b3c of Auth0 completed" in text
    for expected in ("Mode apply", "Started 2026-11-22T02:00:00.000Z", "Finished 2026-11-22T02:03:25.500Z"):
        assert expected in text
    assert "Duration 3m 26s" in text
    assert "Auth0 read export job" in text


def test_html_counts_by_class_follow_drift_order_with_titles() -> None:
    text = Page(render_html(summary(), records(), [])).plain
    counts = text[text.index("Counts by class") : text.index("Trend")]
    positions = [counts.index(title(d)) for d in DRIFT_ORDER]
    assert positions == sorted(positions)
    assert f"{title('stale')} 2 " in counts
    assert "Total drift records 7 3 3 1" in counts  # records, enqueued, reported only, held
    assert "Identities with drift 7 3 3 1" in counts
    assert "In sync (in-scope identities with no drift) 1,094" in counts


def test_html_counts_records_and_identities_apart_so_that_the_numbers_add_up() -> None:
    both = [
        record(AttributeMismatch({"name": ["Old", "New"]}), "e-1", "auth0|1", "Two Ways", action="enqueued"),
        record(RoleMismatch(["Employee"], []), "e-1", "auth0|1", "Two Ways", action="enqueued"),
        record(Missing("active"), "e-2", None, "Ada", action="enqueued"),
        record(Orphaned("source deleted"), None, "auth0|9", "Gone", action="held"),
    ]
    run = summary(entra_in_scope=10, in_sync=8, enqueued=2, held=1)
    text = Page(render_html(run, both, [])).plain
    header = text[: text.index("Counts by class")]
    assert "In sync 8 of 10 in-scope identities" in header
    assert "Drift 4 records about 3 identities" in header
    assert "Enqueued 2 identities (3 records)" in header
    assert "Held 1 identity (1 record)" in header
    counts = text[text.index("Counts by class") : text.index("Trend")]
    assert "the 4 records below are about 3 identities" in counts
    assert "Of the 10 in-scope Entra identities, 8 are in sync and 2 have drift" in counts
    assert "Total drift records 4 3 1" in counts  # records: all, enqueued, held
    assert "Identities with drift 3 2 1" in counts


def test_html_tables_show_what_differs_and_what_was_done() -> None:
    text = Page(render_html(summary(), records(), [])).plain
    assert "Grace Hopper grace@x.test e-3 auth0|3 email grace@old.example grace@new.example enqueued" in text
    assert "family_name (none) Hopper" in text
    assert (
        "Sales Person sales@contoso.example e-4 auth0|4 Sales Writer Sales Writer: g-emea, g-sales Employee enqueued"
        in text
    )
    assert "Two Matches (none) e-5 (none) email auth0|5a auth0|5b reported only" in text
    assert "Sam Stale (none) e-6 auth0|6 2025-01-02T03:04:05Z 321 reported only" in text
    assert "Nora Never (none) e-7 auth0|7 never (created 2024-10-18T00:00:00Z) 400" in text
    assert "Old Account (none) (none) auth0|2 source deleted held" in text


def test_html_lists_joiners_the_worker_skips_apart_from_missing_ones_with_the_reason() -> None:
    why = "joiner has no email after mapping; Auth0 needs one"
    recs = [record(Skipped(why), "e-9", None, "No Mail"), record(Missing("active"), "e-1", None, "Ada")]
    text = Page(render_html(summary(), recs, [])).plain
    assert f"{title('missing')} (1)" in text
    assert f"{title('skipped')} (1)" in text
    assert f"No Mail (none) e-9 (none) {why} reported only" in text
    assert what_differs(recs[0]) == f"not created: {why}"


def test_html_of_a_dry_run_says_nothing_changed() -> None:
    dry = [DriftRecord("missing", "e-1", None, "Ada", {"state": "active"}, action="none")]
    text = Page(render_html(summary(mode="dry-run"), dry, [])).plain
    assert "Dry run: this run planned and reported only; nothing was changed in Auth0." in text
    assert "none (dry run)" in text


def test_html_escapes_hostile_values_everywhere() -> None:
    hostile = [
        DriftRecord("missing", HOSTILE, None, HOSTILE, {"state": HOSTILE}),
        DriftRecord("attribute_mismatch", "e", HOSTILE, HOSTILE, {"fields": {HOSTILE: [HOSTILE, '"><b>x']}}),
        DriftRecord("role_mismatch", "e", "u", HOSTILE, {"add": [HOSTILE], "remove": ["</td></tr>"]}),
        DriftRecord("ambiguous", "e", None, HOSTILE, {"candidates": [HOSTILE], "matched_by": HOSTILE}),
        DriftRecord("stale", "e", "u", HOSTILE, {"last_login": HOSTILE, "days": HOSTILE}),
        DriftRecord("<i>new class</i>", "e", "u", HOSTILE, {"x": HOSTILE}),
    ]
    run = summary(
        run_id="r1",
        status="held",
        mode=HOSTILE,
        error=HOSTILE,
        read_by=HOSTILE,
        timings={HOSTILE: 1.0},
        breaker=Breaker(tripped=True, reason=HOSTILE, deprovisions=9, limit=5, share=0.5, share_limit=0.05),
    )
    older = summary(run_id=HOSTILE, started_at=HOSTILE, counts={HOSTILE: 3})
    data = render_html(run, hostile, [older])
    page = Page(data)
    assert "script" not in page.names()
    assert "b" not in page.names()
    assert "i" not in page.names()
    assert b"<script" not in data
    assert b'"><b>' not in data
    assert page.plain.count('<script>alert("x")</script> O\'Brien & Zoë 山田') >= 15
    assert '"><b>x' in page.plain
    assert "<i>new class</i>" in page.plain  # an unknown class is shown, under its own (escaped) name


def test_html_banner_when_the_circuit_breaker_held_the_run() -> None:
    breaker = Breaker(tripped=True, reason="would block 40 of 1,090 managed users", deprovisions=40, limit=25)
    breaker.share, breaker.share_limit = 40 / 1090, 0.05
    data = render_html(summary(status="held", held=40, breaker=breaker), records(), [])
    page = Page(data)
    text = page.plain
    banner = text[text.index("Held by the circuit breaker") : text.index("Counts by class")]
    assert "Reason: would block 40 of 1,090 managed users" in banner
    assert "Users to block or delete 40 25" in banner
    assert "Share of managed users 3.7% 5.0%" in banner
    assert "The deprovisions of 40 identities are held" in banner
    assert "entra-sync approve 20261122T020000Z-1a2b3c" in banner
    command = [a for t, a in page.tags if t == "code" and a.get("class") == "command"]
    assert len(command) == 1


def test_html_notes_an_approved_run_without_asking_again() -> None:
    breaker = Breaker(tripped=True, reason="too many", deprovisions=40, limit=25, share=0.04, share_limit=0.05)
    text = Page(render_html(summary(status="approved", breaker=breaker), records(), [])).plain
    assert "Held by the circuit breaker, then approved" in text
    assert "entra-sync approve" not in text


def test_html_of_an_approved_run_says_who_approved_it_and_when() -> None:
    breaker = Breaker(tripped=True, reason="too many", deprovisions=1, limit=0)
    approved = summary(
        status="approved", held=1, breaker=breaker, approved_by="alice", approved_at="2026-11-22T08:15:00Z"
    )
    released = [record(Orphaned("source disabled"), "e-2", "auth0|2", "Gone Person", action="approved")]
    text = Page(render_html(approved, released, [])).plain
    assert "Approved 2026-11-22T08:15:00Z by alice" in text
    assert "Approved by alice at 2026-11-22T08:15:00Z: the held deprovisions of 1 identity were queued" in text
    assert "Gone Person (none) e-2 auth0|2 source disabled queued on approval" in text


def test_html_without_a_tripped_breaker_has_no_banner() -> None:
    text = Page(render_html(summary(), records(), [])).plain
    assert "circuit breaker" not in text
    assert "entra-sync approve" not in text


def test_html_of_a_failed_run_says_so() -> None:
    text = Page(render_html(summary(status="failed", error="Graph read timed out"), [], [])).plain
    assert "This run failed Graph read timed out" in text
    assert "All in sync" not in text


def test_html_of_an_empty_run_says_all_in_sync() -> None:
    text = Page(render_html(summary(counts={}), [], [])).plain
    assert "All in sync 1,100 in-scope Entra users and 1,150 Auth0 accounts were compared; no drift was found." in text
    assert "Total drift records 0" in text
    assert "No earlier runs to compare with yet." in text


def test_html_trend_lists_earlier_runs_oldest_first_with_the_current_last() -> None:
    newer = summary(run_id="r-2", started_at="2026-11-21T02:00:00Z", counts={"missing": 4, "stale": 6})
    older = summary(run_id="r-1", started_at="2026-11-20T02:00:00Z", counts={"missing": 10})
    current = summary()
    page = Page(render_html(current, records(), [newer, older, current]))  # unordered, current included
    text = page.plain
    trend = text[text.index("Trend") : text.index(title("missing") + " (1)")]
    assert "The last 3 runs, oldest first; this run is the last, highlighted row." in trend
    assert trend.index("r-1 ") < trend.index("r-2 ") < trend.index("20261122T020000Z-1a2b3c 2026")
    assert "r-1 2026-11-20T02:00:00Z apply completed 10 10 0 0 0 0 0" in trend
    assert "r-2 2026-11-21T02:00:00Z apply completed 10 4 0 0 0 0 6" in trend
    assert "1a2b3c 2026-11-22T02:00:00.000Z apply completed 7 1 1 1 1 1 2" in trend
    assert sum(t == "tr" and a.get("class") == "current" for t, a in page.tags) == 1
    # bars are scaled to the busiest run (10 identities): r-1 is all "missing", full width
    bars = [a["style"] for t, a in page.tags if t == "span" and "width:" in (a.get("style") or "")]
    assert bars[0] == "width:100.00%;background:#2563eb"
    assert bars[1:3] == ["width:40.00%;background:#2563eb", "width:60.00%;background:#64748b"]
    assert len(bars) == 3 + 6  # the current run has one segment per class present


def test_html_trend_leaves_out_classes_no_run_had() -> None:
    older = summary(run_id="r-1", started_at="2026-11-20T02:00:00Z", counts={"missing": 2, "ambiguous": 0})
    current = [DriftRecord("stale", "e", "u", "Sam", {"last_login": None, "days": 99})]
    text = Page(render_html(summary(), current, [older])).plain
    trend = text[text.index("Trend") : text.index(title("stale") + " (1)")]
    assert (
        "Missing in Auth0 Stale (no recent login) Run Started Mode Status Drift Total Missing in Auth0 Stale" in trend
    )
    assert title("ambiguous") not in trend


def test_html_caps_each_table_and_points_to_the_csv_and_json() -> None:
    many = [DriftRecord("missing", f"e-{i:05d}", None, f"User {i:05d}", {"state": "active"}) for i in range(25)]
    few = [DriftRecord("stale", "e-s", "u-s", "Stale One", {"last_login": None, "days": 99})]
    page = Page(render_html(summary(), many + few, [], row_cap=10))
    text = page.plain
    assert "Showing the first 10 of 25. The other 15 are in report.csv and report.json." in text
    assert "User 00009" in text
    assert "User 00010" not in text
    assert text.count("Showing the first") == 1  # the small table is not capped
    assert "Stale One" in text


def test_html_says_which_target_and_carries_the_provenance_at_the_top() -> None:
    page = Page(render_html(summary(), records(), []))
    text = page.plain
    top = text[: text.index("Counts by class")]
    assert top.startswith("Reconciliation 20261122T020000Z-1a2b3c")  # the <title>
    assert "Reconciliation run 20261122T020000Z-1a2b3c of Auth0 completed" in top
    assert (
        "Provenance Source entra (entra) Entra tenant 11111111-2222-3333-4444-555555555555 Target auth0 (auth0) "
        "Target location base_url=https://contoso.eu.auth0.com; domain=contoso.eu.auth0.com "
        f"entra-sync version 0.1.0 Mapping file SHA-256 {'ab' * 32} Trigger cli Operator alice "
        "New since last run nothing to compare with: no earlier finished run of this target"
    ) in top
    sections = [a for t, a in page.tags if t == "section" and a.get("class") == "target"]
    assert sections == [{"class": "target", "id": "target-auth0", "data-target": "auth0"}]


def test_html_of_a_run_without_provenance_says_not_recorded_rather_than_guess() -> None:
    text = Page(render_html(summary(provenance=Provenance()), [], [])).plain
    assert "Source (not recorded) Entra tenant (not recorded) Target auth0 Target location (not recorded)" in text
    assert "Trigger (not recorded) Operator (not recorded)" in text


def test_html_marks_records_new_since_the_last_run_and_counts_them_by_class() -> None:
    recs = [
        record(Missing("active"), "e-1", None, "Ada", action="enqueued", new=True),
        record(Missing("active"), "e-2", None, "Bob", action="enqueued", new=False),
        record(Stale(120, last_login="2025-01-01T00:00:00Z"), "e-3", "auth0|3", "Cy", new=True),
    ]
    run = summary(previous_run="20261121T020000Z-0a0b0c", new_records=2)
    page = Page(render_html(run, recs, []))
    text = page.plain
    assert "New since last run 2 records of 3 (compared with run 20261121T020000Z-0a0b0c)" in text
    counts = text[text.index("Counts by class") : text.index("Trend")]
    assert f"{title('missing')} 2 2 0 1 " in counts  # records, enqueued, reported only, new
    assert f"{title('stale')} 1 0 1 1 " in counts
    assert "Total drift records 3 2 1 2" in counts
    assert "Ada new (none) e-1" in text
    assert "Bob (none) e-2" in text
    assert sum(1 for t, a in page.tags if t == "span" and a.get("class") == "badge new") == 2


def test_csv_says_new_yes_no_or_nothing_to_compare() -> None:
    recs = [
        record(Missing("active"), "e-1", None, "Ada", new=True),
        record(Missing("active"), "e-2", None, "Bob", new=False),
        record(Missing("active"), "e-3", None, "Cy"),
    ]
    rows = csv_rows(render_csv(summary(), recs))
    assert [r["new_since_last_run"] for r in rows] == ["yes", "no", ""]


# ------------------------------------------------------------------------------------------------
# Provenance, sign-in names, justifying groups, older runs
# ------------------------------------------------------------------------------------------------


TENANT = "7c1a2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def settings(**extra: str) -> Settings:
    return Settings.from_env(sandbox_env(storage="UseDevelopmentStorage=true", AZURE_TENANT_ID=TENANT, **extra))


def test_provenance_names_source_tenant_target_location_version_mapping_hash_trigger_and_operator(
    tmp_path: Path,
) -> None:
    file = tmp_path / "mapping.yaml"
    file.write_bytes(b"version: 2\n# the bytes an auditor hashes\n")
    hidden = "https://svc:s3cret@hr.example.com/scim/v2/?token=t0ken#frag"
    mapping = SyncMapping(
        source=str(file),
        targets={
            "auth0": TargetSection("auth0", "auth0", "targets.auth0."),
            "scim:hr": TargetSection("scim:hr", "scim", "targets.scim:hr.", options=ScimOptions(base_url=hidden)),
            "salesforce": TargetSection(  # its options name the settings that say where the org is
                "salesforce", "salesforce", "targets.salesforce.", options=SimpleNamespace(settings_prefix="SALESFORCE")
            ),
            "memory:crm": TargetSection("memory:crm", "memory", "targets.memory:crm.", source="hr"),
        },
        sources={"entra": SourceSection("entra", "entra", ""), "hr": SourceSection("hr", "scim_inbox", "sources.hr.")},
    )
    env = settings(AUTH0_DOMAIN="contoso.eu.auth0.com", SALESFORCE_INSTANCE_URL="https://acme.my.salesforce.com/")

    auth0 = provenance(mapping, "auth0", settings=env, trigger="cli", operator="ann")
    assert auth0 == Provenance(
        source="entra",
        source_kind="entra",
        tenant_id=TENANT,
        target_kind="auth0",
        target_where={"domain": "contoso.eu.auth0.com", "base_url": "http://127.0.0.1:9/api/v2"},
        app_version=__version__,
        mapping_sha256=hashlib.sha256(file.read_bytes()).hexdigest(),
        trigger="cli",
        operator="ann",
    )
    scim = provenance(mapping, "scim:hr", settings=env)
    assert scim.target_where == {"base_url": "https://hr.example.com/scim/v2"}  # no user info, query or fragment
    assert "s3cret" not in json.dumps(dataclasses.asdict(scim)) and "t0ken" not in json.dumps(dataclasses.asdict(scim))
    assert provenance(mapping, "salesforce", settings=env).target_where == {
        "instance_url": "https://acme.my.salesforce.com"
    }
    fed_by_hr = provenance(mapping, "memory:crm", settings=env)
    assert (fed_by_hr.source, fed_by_hr.source_kind, fed_by_hr.tenant_id) == ("hr", "scim_inbox", "")
    # without the settings (a reconciler on its own): what the mapping says, nothing made up
    bare = provenance(mapping, "auth0")
    assert (bare.tenant_id, bare.target_where, bare.trigger, bare.operator) == ("", {}, "", "")
    assert bare.mapping_sha256 == auth0.mapping_sha256
    assert provenance(dataclasses.replace(mapping, source="<string>"), "auth0").mapping_sha256 == ""


def test_the_mapping_hash_is_of_the_bytes_the_app_read_not_of_the_file_edited_since(tmp_path: Path) -> None:
    file = tmp_path / "mapping.yaml"
    running = b"version: 2\r\ntargets:\r\n  auth0:\r\n    attributes: [{source: mail, target: email}]\r\n"
    file.write_bytes(running)  # CRLF line ends: the hash is of the bytes, as sha256sum prints it
    mapping = load_mapping(file)
    file.write_bytes(running.replace(b"mail", b"userPrincipalName"))  # edited after the app started
    assert provenance(mapping, "auth0").mapping_sha256 == hashlib.sha256(running).hexdigest() == mapping.sha256


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hr.example.com/scim/v2/", "https://hr.example.com/scim/v2"),
        ("https://u:p@hr.example.com:8443/scim?x=1", "https://hr.example.com:8443/scim"),
        ("http://127.0.0.1:5000/api/v2", "http://127.0.0.1:5000/api/v2"),
    ],
)
def test_a_target_location_keeps_no_credentials(url: str, shown: str) -> None:
    assert public_url(url) == shown


def test_the_sign_in_name_is_the_upn_else_the_username_else_an_email() -> None:
    assert sign_in_name({"userPrincipalName": "ada@contoso.example", "mail": "ada@mail.example"}) == (
        "ada@contoso.example"
    )
    assert sign_in_name({"userName": "bob@hr.example", "emails.work": "bob@work.example"}) == "bob@hr.example"
    assert sign_in_name({"userPrincipalName": "", "emails.primary": "cy@home.example"}) == "cy@home.example"
    assert sign_in_name({"displayName": "No Name"}) == ""


def test_the_groups_that_justify_an_entitlement_are_the_identitys_granting_ones() -> None:
    grants = [("g-staff", ("Employee",)), ("g-sales", ("Sales Reader", "Sales Writer")), ("g-emea", ("Sales Reader",))]
    assert granting_groups(grants, {"g-sales", "g-emea", "g-other"}) == {
        "Sales Reader": ["g-emea", "g-sales"],
        "Sales Writer": ["g-sales"],
    }
    assert granting_groups(grants, set()) == {}


def test_record_keys_are_read_from_report_json_in_pieces_of_any_size() -> None:
    data = render_json(summary(), records())
    expected = {r.key for r in records()}
    for size in (1, 7, 64, len(data)):
        reader = RecordKeys()
        for start in range(0, len(data), size):
            reader.feed(data[start : start + size])
        assert reader.done() == expected
    empty = RecordKeys()
    empty.feed(render_json(summary(), []))
    assert empty.done() == set()


def test_a_report_json_of_schema_1_still_loads_and_gives_its_keys() -> None:
    added = {"provenance", "previous_run", "new_records"}  # by schema 2
    old_summary = {k: v for k, v in summary().to_dict().items() if k not in added}
    old_records = [{k: v for k, v in r.to_dict().items() if k not in {"sign_in", "new"}} for r in records()]
    body = ",\n  ".join(json.dumps(r, sort_keys=True) for r in old_records)
    data = (
        f'{{"schema_version": 1,\n "summary": {json.dumps(old_summary)},\n "record_count": 7,\n'
        f' "records": [\n  {body}\n ]}}\n'
    ).encode()
    got_summary, got_records = parse_json(data)
    assert got_summary.provenance == Provenance()
    assert (got_summary.previous_run, got_summary.new_records) == ("", 0)
    assert {(r.sign_in, r.new) for r in got_records} == {("", None)}
    reader = RecordKeys()
    reader.feed(data)
    assert reader.done() == {r.key for r in records()}


def test_records_and_runs_of_a_newer_version_load_without_their_new_keys() -> None:
    newer = {**records()[0].to_dict(), "risk_level": "high"}
    assert DriftRecord.from_dict(newer) == records()[0]
    assert RunSummary.from_dict({**summary().to_dict(), "shards": 4}) == summary()


# ------------------------------------------------------------------------------------------------
# Scale
# ------------------------------------------------------------------------------------------------


def big(n: int) -> list[DriftRecord]:
    out = []
    for i in range(n):
        drift = DRIFT_ORDER[i % len(DRIFT_ORDER)]
        details: dict[str, Any] = {
            "missing": {"state": "active"},
            "skipped": {"reason": "joiner has no email after mapping; Auth0 needs one"},
            "orphaned": {"reason": "source deleted"},
            "attribute_mismatch": {"fields": {"email": [f"u{i}@old.example", f"u{i}@new.example"]}},
            "conflict": {"fields": {"email": [f"u{i}@old.example", f"taken{i}@new.example"]}},
            "role_mismatch": {"add": ["Sales Writer"], "remove": ["Employee"]},
            "ambiguous": {"candidates": [f"auth0|{i}a", f"auth0|{i}b"], "matched_by": "email"},
            "stale": {"last_login": "2025-01-01T00:00:00Z", "days": 120},
        }[drift]
        out.append(DriftRecord(drift, f"e-{i}", f"auth0|{i}", f"User {n - i}", details))
    return out


def test_a_large_run_is_whole_in_csv_and_json_and_capped_in_html() -> None:
    # Rendering speed at 100,000 records is measured in bench/, not asserted here.
    n = 2_100 * len(DRIFT_ORDER)  # past the page's cap in every class
    recs = big(n)
    as_json = render_json(summary(), recs)
    as_csv = render_csv(summary(), recs)
    as_html = render_html(summary(), recs, [])
    assert json.loads(as_json)["record_count"] == n
    assert as_csv.count(b"\r\n") == n + 1
    assert as_html.count(b"Showing the first 2,000 of") == len(DRIFT_ORDER)


# ------------------------------------------------------------------------------------------------
# ReportStore against Azurite
# ------------------------------------------------------------------------------------------------


def run(coro_fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    asyncio.run(coro_fn(*args))


async def with_store(
    azurite: Azurite, container: str, body: Callable[[ReportStore], Coroutine[Any, Any, None]]
) -> None:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        store = ReportStore(service, container)
        await store.ensure()
        await store.ensure()  # idempotent
        await body(store)


@pytest.mark.azurite
def test_reports_round_trip_with_their_content_types(azurite: Azurite, run_id: str) -> None:
    async def body(store: ReportStore) -> None:
        s = summary()
        names = await store.save(s, records(), [])
        assert names == {
            "json": f"runs/{s.run_id}/report.json",
            "csv": f"runs/{s.run_id}/report.csv",
            "html": f"runs/{s.run_id}/report.html",
        }
        assert await store.load(s.run_id, "json") == render_json(s, records())
        assert await store.load(s.run_id, "csv") == render_csv(s, records())
        assert await store.load(s.run_id, "html") == render_html(s, records(), [])
        types = {}
        for fmt, name in names.items():
            props = await store.container.get_blob_client(name).get_blob_properties()
            types[fmt] = props.content_settings.content_type
        assert types == {
            "json": "application/json; charset=utf-8",
            "csv": "text/csv; charset=utf-8",
            "html": "text/html; charset=utf-8",
        }
        await store.save(summary(status="approved"), [], [])  # a later save replaces the run's reports
        assert parse_json(await store.load(s.run_id, "json"))[0].status == "approved"

    run(with_store, azurite, f"reports-{run_id}", body)


@pytest.mark.azurite
def test_unknown_runs_and_formats_are_not_found_and_bad_run_ids_are_refused(azurite: Azurite, run_id: str) -> None:
    async def body(store: ReportStore) -> None:
        with pytest.raises(NotFound, match="no html report for run 'never-ran'"):
            await store.load("never-ran", "html")
        with pytest.raises(NotFound, match="no report format 'pdf'; use one of json, csv, html"):
            await store.load("never-ran", "pdf")
        with pytest.raises(BadInput, match="invalid run id"):
            await store.load("../other/report", "json")
        with pytest.raises(BadInput, match="invalid run id"):
            await store.save(summary(run_id="a/b"), [], [])
        assert [b.name async for b in store.container.list_blobs()] == []

    run(with_store, azurite, f"reports-{run_id}", body)


def test_the_tenants_differences_from_its_baseline_are_listed_with_what_became_of_them() -> None:
    lines = ["MFA factor otp: enabled is False, the baseline says True"]
    held = Page(render_html(summary(baseline=lines, baseline_held=True), records(), [])).plain
    assert "Tenant settings against the baseline: held for approval" in held
    assert "MFA factor otp: enabled is False, the baseline says True" in held
    reported = Page(render_html(summary(baseline=lines), records(), [])).plain
    assert "Tenant settings against the baseline: reported" in reported
    assert "baseline" not in Page(render_html(summary(), records(), [])).plain
