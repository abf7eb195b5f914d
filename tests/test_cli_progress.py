"""The CLI's progress on long work: figures an operator can plan by (how far, how long, how long
left), redrawn in place on a terminal, throttled lines in a log."""

from __future__ import annotations

import io

from shared.cli.common import Progress, line


def test_in_a_log_a_phase_prints_at_most_every_few_seconds_and_when_it_ends() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress(out, every_s=5.0, clock=lambda: now[0], terminal=False)
    for t, done in ((0.0, 0), (1.0, 10), (6.0, 50), (7.0, 60), (8.0, 100)):
        now[0] = t
        progress("entra users", done, 100)
    progress.done()
    assert out.getvalue().splitlines() == [
        "entra users: 0 of 100 (0%), 0:00:00 spent",
        "entra users: 50 of 100 (50%), 0:00:06 spent, about 0:00:06 left",
        "entra users: 100 of 100 (100%), 0:00:08 spent",
    ]


def test_without_a_total_the_count_and_the_time_spent() -> None:
    assert line(12_345, None, 61.2) == "12,345, 0:01:01 spent"
    assert line(1_200, 10_000, 14.0) == "1,200 of 10,000 (12%), 0:00:14 spent, about 0:01:43 left"


def test_on_a_terminal_a_bar_with_the_count_redrawn_in_place() -> None:
    out = io.StringIO()
    progress = Progress(out, terminal=True)
    progress("auth0 accounts", 40, 80)
    progress.done()
    shown = out.getvalue()
    assert "auth0 accounts" in shown and "40/80" in shown and "50%" in shown
