"""How the propagation benchmark accounts for a change it did not see converge: superseded by a later
change, skipped for the product's reason, still waiting (queued, deferred), failed, or lost (traced)."""

from __future__ import annotations

from bench.load import Change, Row, account_for


def change(kind: str, at: float, user: str = "u1", runs: list[tuple[float, float, bool]] | None = None,
           missing: tuple[str, ...] = ("auth0",)) -> Change:  # fmt: skip
    c = Change(kind, user, at=at, notified=at + 0.01, missing=missing)
    c.runs = runs or []
    return c


def row(at: float, outcome: str, detail: str = "", action: str = "sync", target: str = "auth0") -> Row:
    return Row(at, target, action, outcome, detail)


def test_a_mover_whose_user_left_before_the_worker_read_is_superseded_by_that_leaver() -> None:
    mover = change("mover", 10.0, runs=[(10.3, 10.4, True)])
    leaver = change("leaver", 10.2)
    leaver.converged = 10.4
    fate = account_for(mover, [mover, leaver], [], queued=False)
    assert fate.verdict == "superseded"
    assert "leaver" in fate.why and "200 ms" in fate.why


def test_a_run_that_finished_before_the_later_change_leaves_the_change_unexplained() -> None:
    """The worker read the user after the mover and before the leaver: it should have written the mover."""
    mover = change("mover", 10.0, runs=[(10.05, 10.1, True)])
    leaver = change("leaver", 10.2)
    fate = account_for(mover, [mover, leaver], [row(10.08, "ok", action="none")], queued=False)
    assert fate.verdict == "lost"
    assert "none ok" in fate.why and "+50 ms" in fate.why  # the trace: the run and the audit rows


def test_a_group_change_undone_before_either_reached_the_target_is_superseded_both_ways() -> None:
    added = change("group change", 10.0, runs=[(10.4, 10.5, True)])
    removed = change("group change", 10.1, runs=[(10.4, 10.5, True)])
    both = [added, removed]
    assert account_for(added, both, [], queued=False).verdict == "superseded"
    fate = account_for(removed, both, [], queued=False)
    assert (fate.verdict, "undid" in fate.why) == ("superseded", True)


def test_a_group_item_run_between_two_toggles_is_no_read_of_the_member() -> None:
    """The Sales group's item runs many times a second under load; one that ran between an add and
    the remove that undid it may only have asked for a re-run of the leased groups delta. Only the
    member's own run, or an audit row of it, shows the worker read the user in between."""
    group_runs = [(10.02, 10.05, True)]
    added = change("group change", 10.0, runs=group_runs)
    removed = change("group change", 10.1, runs=group_runs)
    added.user_runs, removed.user_runs = [(10.3, 10.4, True)], [(10.3, 10.4, True)]
    both = [added, removed]
    assert account_for(added, both, [], queued=False).verdict == "superseded"
    assert account_for(removed, both, [], queued=False).verdict == "superseded"
    # The member's own run in between read the add alone: it should have written it.
    added.user_runs = [(10.03, 10.06, True), (10.3, 10.4, True)]
    assert account_for(added, both, [], queued=False).verdict == "lost"
    # So did the group item, when it converged the member itself (its audit row is the proof).
    added.user_runs = [(10.3, 10.4, True)]
    fate = account_for(added, both, [row(10.04, "ok", action="none")], queued=False)
    assert fate.verdict == "lost" and "none ok" in fate.why


def test_the_products_own_reason_is_reported_for_a_skip_a_wait_and_a_failure() -> None:
    leaver = change("leaver", 10.0)
    skip = row(10.1, "skipped", "disabled in Entra; already disabled and revoked", action="skip")
    assert account_for(leaver, [leaver], [skip], queued=False) == account_for(leaver, [leaver], [skip], True)
    fate = account_for(leaver, [leaver], [skip], queued=False)
    assert (fate.verdict, fate.why) == ("skipped", "auth0: disabled in Entra; already disabled and revoked")
    wait = row(10.2, "deferred", "rate limited until the reset; runs again in 3 s", action="deferred")
    assert account_for(leaver, [leaver], [skip, wait], queued=False).verdict == "waiting"
    assert account_for(leaver, [leaver], [row(10.2, "poisoned", "gave up")], queued=False).verdict == "failed"
    assert account_for(leaver, [leaver], [row(9.0, "skipped")], queued=True).verdict == "waiting"  # queued
    # Rows of the other target, or from before the change, explain nothing about this one.
    other = row(10.1, "skipped", "x", target="scim:crm")
    assert account_for(leaver, [leaver], [other, row(9.0, "skipped")], queued=False).verdict == "lost"


def test_a_leaver_is_never_superseded() -> None:
    leaver = change("leaver", 10.0)
    later = [leaver, change("mover", 10.1), change("leaver", 10.2), change("group change", 10.3)]
    assert account_for(leaver, later, [], queued=False).verdict == "lost"


def test_rows_of_bulk_work_on_the_same_user_say_nothing_about_the_change() -> None:
    """A backfill item for the leaver's user, run after the leaver's own writes, audits a skip: that is
    the backlog's row, not the leaver's fate."""
    leaver = change("leaver", 10.0)
    backfill = Row(10.5, "auth0", "skip", "skipped", "disabled in Entra; already disabled and revoked", "backfill")
    assert account_for(leaver, [leaver], [backfill], queued=False).verdict == "lost"
    intent = Row(10.2, "auth0", "intent", "intent", "an intent is recorded")
    assert account_for(leaver, [leaver], [backfill, intent], queued=False).verdict == "waiting"
