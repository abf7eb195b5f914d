"""The operator CLI against the sandbox: reconcile, runs, report, approve, backfill, audit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.azurite import Azurite
from sandbox.mirror import mirror
from shared.cli import main
from shared.mapping import load_mapping
from tests.integration.world import World
from tests.support import sandbox_env


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(
        azurite,
        tmp_path,
        users=30,
        groups=6,
        mapping_extra="reconcile: {remediate: [missing, orphaned], max_deprovisions: 2}",
    ).start()
    env = sandbox_env(
        storage=azurite.connection_string,
        graph_base_url=w.graph.base_url,
        auth0_base_url=w.auth0.base_url,
        SYNC_MAPPING_FILE=str(tmp_path / "mapping.yaml"),
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        yield w
    finally:
        w.stop()


def test_a_dry_run_then_its_report_in_every_format(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    someone = next(
        u for u in world.graph.snapshot(full=True)["dump"]["users"] if u["accountEnabled"] and u["userType"] == "Member"
    )
    world.graph.update_user(someone["id"], displayName="Renamed <b>In</b> Entra")

    assert main(["reconcile", "--dry-run"]) == 0
    out = capsys.readouterr().out
    run_id = re.search(r"run (\S+) \(dry-run\): completed", out).group(1)  # type: ignore[union-attr]
    assert "attribute_mismatch   1" in out

    assert main(["runs"]) == 0
    assert run_id in capsys.readouterr().out

    assert main(["report", run_id, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["counts"] == {"attribute_mismatch": 1}
    assert report["records"][0]["entra_id"] == someone["id"]

    assert main(["report", run_id, "--format", "csv"]) == 0
    assert "Renamed <b>In</b> Entra" in capsys.readouterr().out

    html = tmp_path / "report.html"
    assert main(["report", run_id, "--format", "html", "--output", str(html)]) == 0
    page = html.read_text()
    assert "Renamed &lt;b&gt;In&lt;/b&gt; Entra" in page
    assert "<b>In</b>" not in page


def test_a_held_run_exits_3_and_approve_releases_it(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    members = [
        u for u in world.graph.snapshot(full=True)["dump"]["users"] if u["accountEnabled"] and u["userType"] == "Member"
    ]
    for user in members[:4]:
        world.graph.update_user(user["id"], accountEnabled=False)

    assert main(["reconcile", "--apply"]) == 3
    out = capsys.readouterr().out
    run_id = re.search(r"run (\S+) \(apply\): held", out).group(1)  # type: ignore[union-attr]
    assert "CIRCUIT BREAKER: 4 accounts would be blocked or deleted; the limit is 2" in out
    assert f"entra-sync approve {run_id}" in out

    assert main(["approve", run_id, "--by", "test-operator"]) == 0
    assert "approved by test-operator: 4 held deprovisions queued" in capsys.readouterr().out
    assert main(["report", run_id, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["approved_by"] == "test-operator"
    assert main(["approve", run_id]) == 1  # already approved
    assert "not held" in capsys.readouterr().err

    assert main(["audit", "--identity", "reconcile"]) == 0
    assert "approved by test-operator" in capsys.readouterr().out


def test_bad_input_gets_a_clear_error(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["report", "../../etc/passwd"]) == 1
    assert "is not a reconciliation run id" in capsys.readouterr().err
    monkeypatch.delenv("GRAPH_CLIENT_STATE")
    assert main(["runs"]) == 2
    assert "GRAPH_CLIENT_STATE is required" in capsys.readouterr().err


def test_backfill_queues_every_user_once(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backfill"]) == 0
    assert f"backfill: {world.graph.snapshot()['users']} users queued" in capsys.readouterr().out
