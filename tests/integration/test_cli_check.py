"""``entra-sync check`` against the sandbox: settings, then the mapping file, then its groups in
Entra ID; exit 2 on any problem, naming it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.azurite import Azurite
from sandbox.mapping import sandbox_mapping, three_role_grants
from sandbox.server import FaultRule
from shared.cli import main
from tests.integration.world import World, for_the_cli

MISSING = "7e57a11d-0000-4000-8000-00000000beef"


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with for_the_cli(World(azurite, tmp_path, users=10, groups=4), monkeypatch) as w:
        yield w


def check_with(monkeypatch: pytest.MonkeyPatch, world: World, mapping_text: str) -> int:
    path = world.tmp_path / "checked.yaml"
    path.write_text(mapping_text)
    monkeypatch.setenv("SYNC_MAPPING_FILE", str(path))
    return main(["check"])


def test_check_exits_0_when_settings_mapping_and_groups_are_sound(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_with(monkeypatch, world, sandbox_mapping(three_role_grants(world.group_ids))) == 0
    out = capsys.readouterr().out
    assert "settings: ok" in out
    assert "checked.yaml: ok (version 1; sources: entra (entra); targets: auth0 (9 attributes))" in out
    assert "groups: 3 of 3 found in Entra ID" in out
    assert "auth0: roles: 3 of 3 the mapping grants exist in Auth0" in out  # what ran against the target
    assert "auth0: connection: 'Username-Password-Authentication' exists in Auth0" in out


def test_check_exits_2_for_a_role_or_connection_the_target_does_not_have(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    grants = [(world.group_ids[0], ["Employe"]), (world.group_ids[1], ["Sales Reader"])]
    text = sandbox_mapping(grants).replace(
        "target: {connection: Username-Password-Authentication}", "target: {connection: Username-Password}"
    )
    assert check_with(monkeypatch, world, text) == 2
    out = capsys.readouterr().out
    assert "auth0: roles: 1 of 2 the mapping grants exist in Auth0" in out
    missing = "  - auth0: the mapping grants the role 'Employe', which Auth0 does not have (did you mean 'Employee'?)"
    assert missing in out
    assert "  - auth0: connection 'Username-Password' is not a connection of this Auth0 tenant" in out


def test_check_exits_2_naming_each_entry_whose_group_is_missing(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    grants = [(world.group_ids[0], ["Employee"]), (MISSING, ["Sales Reader"])]
    assert check_with(monkeypatch, world, sandbox_mapping(grants)) == 2
    out = capsys.readouterr().out
    assert "checked.yaml: 1 group problem(s):" in out
    assert f"  - roles[1].group: group {MISSING} does not exist in Entra ID (404)" in out


def test_check_exits_2_on_a_misspelt_property_without_reading_any_group(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = sandbox_mapping(three_role_grants(world.group_ids)).replace("{source: department,", "{source: departmnet,")
    world.graph.log.clear()
    assert check_with(monkeypatch, world, text) == 2
    out = capsys.readouterr().out
    assert "checked.yaml is invalid (1 problem(s))" in out
    assert "attributes[5].source: 'departmnet' is not a Microsoft Graph v1.0 user property; did you mean" in out
    assert world.graph.log.counts().get("groups.get", 0) == 0


def test_check_exits_2_listing_the_settings_problems(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GRAPH_CLIENT_STATE")
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    assert "GRAPH_CLIENT_STATE is required" in out
    assert "settings: ok" not in out


def test_check_exits_2_when_a_target_of_the_mapping_lacks_its_settings(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mapping names an Auth0 target; without AUTH0_* settings the app would refuse to start, so
    check must not say ok (issue 21: cmd_check never asked the kinds)."""
    for name in ("AUTH0_BASE_URL", "AUTH0_TOKEN"):
        monkeypatch.delenv(name)
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    assert "AUTH0_DOMAIN" in out and "settings: ok\n" not in out


def test_a_missing_permission_or_an_unreachable_service_is_named_with_what_to_do(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = sandbox_mapping(three_role_grants(world.group_ids))
    world.graph.faults.configure([FaultRule("groups.get", kind="error", status=403)])
    assert check_with(monkeypatch, world, text) == 2  # each entry's group could not be read: a problem
    out = capsys.readouterr().out
    assert "could not be read: Graph groups.get: 403" in out
    assert "the Graph application permission Group.Read.All" in out
    assert "infra/scripts/grant-graph-permissions.sh" in out
    world.graph.faults.configure([])

    world.auth0.faults.configure([FaultRule("mgmt.roles.list", kind="error", status=403)])
    assert check_with(monkeypatch, world, text) == 1
    err = capsys.readouterr().err
    assert "error: could not check auth0: Auth0 roles.list: 403" in err and "the scope read:roles" in err
    world.auth0.faults.configure([])

    monkeypatch.setenv("GRAPH_BASE_URL", "http://127.0.0.1:9/v1.0")  # nothing listens on the discard port
    assert check_with(monkeypatch, world, text) == 1
    err = capsys.readouterr().err
    assert "cannot reach 127.0.0.1:9 (ConnectError); check GRAPH_BASE_URL" in err and err.count("\n") == 1
