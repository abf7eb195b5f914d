"""The chaos benchmark's measures: what counts as a write that took effect, and its audit rows."""

from __future__ import annotations

import math
from typing import Any

from bench.chaos import AUTH0_FAULTS, Auth0State, Change, audit_match, fault_rules, why_unmatched

UID = "auth0|0f0c0a0e-0000-4000-8000-000000000001"
PATH = "/api/v2/users/auth0%7C0f0c0a0e-0000-4000-8000-000000000001"


def entry(route: str, path: str = PATH, status: int = 200, at: float = 10.0) -> list[Any]:
    return [at, "PATCH", path, route, status, True]


def row(action: str, outcome: str = "ok", target_id: str = UID) -> dict[str, Any]:
    return {"target": "auth0", "identity": UID.removeprefix("auth0|"), "target_id": target_id, "action": action,
            "outcome": outcome}  # fmt: skip


def test_one_applied_row_per_write_that_took_effect_is_exact() -> None:
    entries = [
        entry("mgmt.users.write.update"),
        entry("mgmt.users.write.update"),
        entry("mgmt.users.sessions.delete"),
        entry("mgmt.users.write.update", status=503),  # failed: took no effect
        entry("mgmt.users.roles.assign", status=0),  # dropped: took no effect
        entry("mgmt.users.write.update", at=1.0),  # before the run
    ]
    rows = [row("update"), row("block"), row("revoke_sessions", "recovered"), row("assign_roles", "interrupted")]
    match = audit_match(entries, rows, since=5.0)
    assert (match.writes, match.rows, match.unaudited, match.extra) == (3, 3, 0, 0)
    assert match.exact


def test_a_write_without_its_row_and_a_row_twice_are_both_counted() -> None:
    entries = [entry("mgmt.users.write.update"), entry("mgmt.users.refresh_tokens.delete")]
    rows = [row("update"), row("update"), row("skip", "skipped")]
    match = audit_match(entries, rows, since=0.0)
    assert (match.unaudited, match.extra) == (1, 1)
    assert not match.exact
    assert len(match.examples) == 2


def test_creates_are_matched_by_count_with_their_rows() -> None:
    entries = [entry("mgmt.users.write.create", path="/api/v2/users")] * 2
    match = audit_match(entries, [row("create")], since=0.0)
    assert (match.writes, match.rows, match.unaudited, match.extra) == (2, 1, 1, 0)


def test_fault_rules_fail_the_shares_asked_for_in_all() -> None:
    rules = fault_rules("mgmt.*", AUTH0_FAULTS)
    passed = math.prod(1 - r["rate"] for r in rules)
    assert math.isclose(1 - passed, sum(share for _, _, share in AUTH0_FAULTS))
    assert [r["kind"] for r in rules] == [kind for kind, _, _ in AUTH0_FAULTS]


def test_the_auth0_state_shows_each_change_and_finds_duplicates() -> None:
    users: dict[str, dict[str, Any]] = {
        UID: {"user_id": UID, "email": "a@x.example", "blocked": True, "user_metadata": {"department": "Chaos 1"}},
        "auth0|other": {"user_id": "auth0|other", "email": "A@x.example", "app_metadata": {}},
    }
    state = Auth0State(users, {UID: {"Employee"}}, 0, 0)
    oid = UID.removeprefix("auth0|")
    assert state.shows(Change("leaver", oid))
    assert state.shows(Change("mover", oid, "Chaos 1"))
    assert not state.shows(Change("group change", oid))
    assert not state.shows(Change("joiner", oid))  # blocked
    assert state.duplicates() == [f"email a@x.example: {UID}, auth0|other"]


def test_an_unmatched_account_is_put_down_to_what_its_trail_shows() -> None:
    killed = [row("block", "recovered"), row("revoke_sessions")]
    failed = [{"action": "sync", "outcome": "retrying"}, row("revoke_sessions")]
    assert why_unmatched(killed) == "an attempt killed part-way"
    assert why_unmatched(failed) == "an attempt failed part-way and was retried"
    assert why_unmatched([row("update")]) == "neither a killed nor a failed attempt"
