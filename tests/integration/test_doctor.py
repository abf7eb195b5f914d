"""``entra-sync doctor`` against the sandbox: the Graph emulator answers the managed identity's
application permissions, the Auth0 emulator issues client-credentials tokens with their scopes, a
SCIM application checks its token, Azurite holds the queues, tables and recorded subscriptions.
Each missing piece is named with its fix; a sound deployment exits 0."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

import sandbox.auth0
from sandbox.auth0 import Auth0Emulator
from sandbox.azurite import Azurite
from sandbox.mapping import scim_section
from sandbox.scim import ScimApp
from shared.cli import main
from shared.mapping.model import Deprovision, TargetSection
from shared.services.doctor import GRAPH_APP_ROLES, auth0_scopes, token_scopes
from shared.settings import Auth0Auth, Auth0Settings, Secret
from tests.integration.world import World, for_the_cli, open_services

PRINCIPAL = "0b5e55ed-0000-4000-8000-00000000d0c7"


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with ScimApp() as scim_app:
        section = scim_section(scim_app.base_url, [("GROUP0", "Staff")], name="crm")
        w = World(azurite, tmp_path, users=6, groups=3, other_targets=section,
                  extra_env={"SCIM_CRM_TOKEN": scim_app.token})  # fmt: skip
        with for_the_cli(w, monkeypatch) as started:
            # As an operator's shell with the azd environment loaded: the identity's principal id.
            monkeypatch.setenv("AZURE_MANAGED_IDENTITY_PRINCIPAL_ID", PRINCIPAL)
            yield started


def record_subscriptions(world: World, hours_left: dict[str, float]) -> None:
    """Storage made and emptied, then subscriptions recorded as subscriptions_renew records them."""

    async def record() -> None:
        svc = await open_services(world)
        try:
            for resource, hours in hours_left.items():
                expires = datetime.fromtimestamp(time.time() + hours * 3600, UTC).isoformat().replace("+00:00", "Z")
                await svc.state.put("subscription", resource, {"id": f"sub-{resource}", "expirationDateTime": expires,
                                                               "action": "created"})  # fmt: skip
        finally:
            await svc.aclose()

    asyncio.run(record())


def test_doctor_names_each_missing_piece_with_its_fix(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world.graph.grant_app_roles(PRINCIPAL, [GRAPH_APP_ROLES["User.Read.All"], GRAPH_APP_ROLES["Group.Read.All"]])
    monkeypatch.setenv("SCIM_CRM_TOKEN", "not-the-token")
    record_subscriptions(world, {"users": 10})  # groups: none recorded

    assert main(["doctor"]) == 2
    out = capsys.readouterr().out
    assert "ok       storage: 8 of 8 queues and tables answer" in out
    assert (
        "MISSING  graph permissions: the managed identity lacks IdentityRiskyUser.Read.All, IdentityRiskEvent.Read.All"
        in out
    )
    assert (
        f"fix: an administrator runs: bash infra/scripts/grant-graph-permissions.sh --principal-id {PRINCIPAL}" in out
    )
    assert "skipped  auth0 scopes: a static token (the sandbox's): its scopes are not read" in out
    assert "MISSING  scim:crm: the target refused or could not be asked" in out
    assert "fix: set the application's token: azd env set SCIM_CRM_TOKEN <token> && azd provision" in out
    assert "MISSING  subscription users: expires in 10 h: subscriptions_renew is not renewing it" in out
    assert "MISSING  subscription groups: none recorded" in out
    assert "fix: run subscriptions_renew now: azd hooks run postdeploy" in out
    assert "not-the-token" not in out


def test_doctor_exits_0_for_a_sound_deployment(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.graph.grant_app_roles(PRINCIPAL, list(GRAPH_APP_ROLES.values()))
    record_subscriptions(world, {"users": 28 * 24, "groups": 28 * 24})
    assert main(["doctor"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "MISSING" not in out and "UNKNOWN" not in out
    assert "ok       scim:crm: ServiceProviderConfig read" in out
    assert "ok       subscription groups: live for 28.0 more days" in out


def test_doctor_names_the_missing_queue_and_table_without_creating_them(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    async def drop() -> None:
        svc = await open_services(world)
        try:
            await svc.queues.delete_queue("sync-lane-poison")
            await svc.tables.delete_table("SyncAudit")
        finally:
            await svc.aclose()

    asyncio.run(drop())
    assert main(["doctor"]) == 2
    out = capsys.readouterr().out
    assert "MISSING  storage: queue sync-lane-poison does not exist" in out
    assert "MISSING  storage: table SyncAudit does not exist" in out
    assert "the app creates it when it starts" in out


def _auth0_app(emulator: Auth0Emulator, deprovision: Deprovision) -> SimpleNamespace:
    """What the Auth0 check reads of the app: the settings (client credentials) and the targets."""
    auth0 = Auth0Settings(emulator.base_url, None, Auth0Auth.CLIENT_CREDENTIALS, emulator.client_id,
                          Secret(emulator.client_secret), None)  # fmt: skip
    section = TargetSection("auth0", "auth0", "targets.auth0.", deprovision=deprovision)
    return SimpleNamespace(settings=SimpleNamespace(auth0=auth0), jobs={"auth0": SimpleNamespace(section=section)})


def test_the_auth0_check_reads_the_scopes_of_a_client_credentials_token(monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = Auth0Emulator().start()
    try:
        sound = asyncio.run(auth0_scopes(_auth0_app(emulator, Deprovision(action="disable", hard_delete="delete"))))
        assert (sound.state, sound.detail) == ("ok", "the token carries the 7 scopes the mapping needs")
        monkeypatch.setattr(sandbox.auth0, "SCOPES", sandbox.auth0.SCOPES.replace("delete:users ", ""))
        lacking = asyncio.run(auth0_scopes(_auth0_app(emulator, Deprovision(action="delete"))))
        assert (lacking.state, lacking.detail) == ("missing", "the token lacks delete:users")
        assert "Machine to Machine Applications" in lacking.fix
        # A policy that never deletes does not need the scope.
        assert asyncio.run(auth0_scopes(_auth0_app(emulator, Deprovision()))).state == "ok"
        wrong = _auth0_app(emulator, Deprovision())
        wrong.settings.auth0 = dataclasses.replace(wrong.settings.auth0, client_secret=Secret("wrong"))
        refused = asyncio.run(auth0_scopes(wrong))
        assert (
            refused.state == "missing" and "refused the machine-to-machine application's credentials" in refused.detail
        )
    finally:
        emulator.stop()


def test_scopes_are_read_from_the_answer_or_the_jwt() -> None:
    def jwt(claims: dict[str, object]) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"eyJhbGciOiJub25lIn0.{payload}.sig"

    assert token_scopes({"scope": "read:users update:users"}) == {"read:users", "update:users"}
    assert token_scopes({"access_token": jwt({"scope": "read:roles"})}) == {"read:roles"}
    assert token_scopes({"access_token": jwt({"permissions": ["create:users"]})}) == {"create:users"}
    assert token_scopes({"access_token": "opaque"}) == set()
