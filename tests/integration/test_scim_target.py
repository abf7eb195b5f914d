"""The outbound SCIM target against scim2-server (sandbox/scim.py), in its three profiles: ``full``
(PATCH, PUT, ETags, bulk), ``entra`` (Entra's own SCIM API: PATCH only, no ETags, no bulk, ``eq``
and ``and`` filters) and ``put-only`` (no PATCH: whole resources replaced with ``If-Match``).

Every test runs the product's worker (through the function host's entry point) on a version 2
mapping with the Auth0 target and one SCIM application, and looks at what the SCIM server holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.scim import BOTH, CURSOR, ENTRA, FULL, INDEX, PUT_ONLY, ScimApp
from sandbox.server import FaultRule, RateLimit
from shared.core.work import user_item
from shared.services.reconcile import ReconcileFailed, reconcile_every
from shared.targets.scim.target import NO_EXTERNAL_ID
from tests.integration.world import World, audit_rows, queued, run_worker, services_for, waiting

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SECTION = """\
  scim:crm:
    base_url: BASE
    token_setting: SCIM_CRM_TOKEN
    attributes:
      - {source: userPrincipalName, target: userName}
      - {source: mail, target: 'emails[type eq "work"].value', transforms: [trim, lower]}
      - {source: givenName, target: name.givenName}
      - {source: surname, target: name.familyName}
      - {source: displayName, target: displayName}
      - {source: jobTitle, target: title}
      - {source: department, target: 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department'}
    groups:
      - {group: GROUP0, groups: [Staff]}
      - {group: GROUP1, groups: [Sales]}
    deprovision: {action: disable, hard_delete: delete}
EXTRA"""


def start(azurite: Azurite, tmp_path: Path, app: ScimApp, extra: str = "", **world: Any) -> World:
    section = SECTION.replace("BASE", app.base_url).replace("EXTRA", extra)
    options = {"users": 30, "groups": 4, **world}
    return World(azurite, tmp_path, other_targets=section, extra_env={"SCIM_CRM_TOKEN": app.token}, **options).start()


@pytest.fixture(params=[FULL, ENTRA, PUT_ONLY])
def app(request: pytest.FixtureRequest) -> Iterator[ScimApp]:
    server = ScimApp(profile=request.param).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def full_app() -> Iterator[ScimApp]:
    server = ScimApp().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, app: ScimApp) -> Iterator[World]:
    w = start(azurite, tmp_path, app)
    try:
        yield w
    finally:
        w.stop()


def scim_user(app: ScimApp, entra_id: str) -> dict[str, Any] | None:
    found = [u for u in app.users() if u.get("externalId") == entra_id]
    assert len(found) <= 1, f"{len(found)} SCIM users for one person"
    return found[0] if found else None


def group(app: ScimApp, name: str) -> dict[str, Any]:
    found = app.group_by_name(name)
    assert found is not None, f"no SCIM group {name}"
    return found


def writes(app: ScimApp) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in app.log.entries():
        if e.write:
            counts[e.route] = counts.get(e.route, 0) + 1
    return counts


def hire(world: World, upn: str, name: str = "New Hire") -> dict[str, Any]:
    """A new enabled Member in the first mapped group."""
    given, _, surname = name.partition(" ")
    user = world.graph.create_user(
        displayName=name, givenName=given, surname=surname or "Hire", mail=f"{given.lower()}@sandbox.example",
        userPrincipalName=upn, accountEnabled=True, userType="Member",
    )  # fmt: skip
    world.graph.add_member(world.group_ids[0], user["id"])
    return dict(user)


def sync(world: World, indexed: dict[str, Any], *items: Any, keep: bool = True) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with services_for(world, keep_storage=keep) as svc:
            for item in items:
                await run_worker(indexed, item)
            return await audit_rows(svc)

    return asyncio.run(go())


def cli_backfill(world: World, monkeypatch: pytest.MonkeyPatch) -> int:
    """``entra-sync backfill --target scim:crm`` as an operator runs it, on the world's settings."""
    from shared.cli import main

    for name, value in world.env.items():
        monkeypatch.setenv(name, value)

    async def empty() -> None:
        async with services_for(world):
            pass

    asyncio.run(empty())
    return main(["backfill", "--target", "scim:crm"])


def scim_rows(rows: list[dict[str, Any]], entra_id: str) -> list[tuple[str, str]]:
    return [(r["action"], r["outcome"]) for r in rows if r["identity"] == entra_id and r["target"] == "scim:crm"]


# -- joiner, mover, leaver ----------------------------------------------------------------------------


def test_a_joiner_is_created_with_its_external_id_and_pushed_into_its_group(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    got = scim_user(app, user["id"])
    assert got is not None
    assert got["userName"] == user["userPrincipalName"] and got["active"] is True
    assert got["emails"] == [{"value": user["mail"].strip().lower(), "type": "work", "primary": True}]
    assert got["displayName"] == user["displayName"]
    assert got.get(ENTERPRISE, {}).get("department") == user.get("department")
    staff = group(app, "Staff")
    assert staff["externalId"] == world.group_ids[0] and app.members_of(staff["id"]) == {got["id"]}
    assert app.group_by_name("Sales") is None  # only what a member's groups need is created
    assert ("create", "ok") in scim_rows(rows, user["id"]) and ("add_to_groups", "ok") in scim_rows(rows, user["id"])
    assert "scim.users.replace" not in writes(app) or app.profile == PUT_ONLY
    membership = "scim.groups.replace" if app.profile == PUT_ONLY else "scim.groups.patch"
    assert writes(app) == {"scim.users.create": 1, "scim.groups.create": 1, membership: 1}


def test_a_mover_sends_only_what_differs_and_a_field_mapped_to_nothing_is_removed(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    app.log.clear()
    world.graph.update_user(user["id"], department="Research", jobTitle=None)
    rows = sync(world, indexed, user_item(user["id"], "notification"))
    got = scim_user(app, user["id"])
    assert got is not None and got[ENTERPRISE]["department"] == "Research" and "title" not in got
    update = [r for r in rows if r["target"] == "scim:crm" and r["action"] == "update"][-1]
    assert set(json.loads(update["diff"])) >= {f"{ENTERPRISE}:department"}
    expected = "scim.users.replace" if app.profile == PUT_ONLY else "scim.users.patch"
    assert writes(app) == {expected: 1}  # one write, of the kind the server offers
    app.log.clear()
    replay = sync(world, indexed, user_item(user["id"], "notification"))
    assert writes(app) == {}  # a replay writes nothing
    assert scim_rows(replay, user["id"]) == scim_rows(rows, user["id"])  # and leaves no row: nothing happened


def test_a_renamed_user_is_followed_by_external_id_and_keeps_one_resource(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    first = scim_user(app, user["id"])
    assert first is not None
    new_upn = "renamed." + user["userPrincipalName"]
    world.graph.update_user(user["id"], userPrincipalName=new_upn, mail="renamed." + user["mail"])
    sync(world, indexed, user_item(user["id"], "notification"), keep=False)  # the link is gone too
    after = scim_user(app, user["id"])
    assert after is not None and after["id"] == first["id"] and after["userName"] == new_upn
    assert len(app.users()) == 1


def test_a_leaver_is_deactivated_a_returner_activated_and_a_hard_delete_deletes(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    uid = user["id"]
    sync(world, indexed, user_item(uid, "notification"), keep=False)
    world.graph.update_user(uid, accountEnabled=False)
    rows = sync(world, indexed, user_item(uid, "notification"))
    got = scim_user(app, uid)
    assert got is not None and got["active"] is False  # deactivated, not deleted
    assert ("deactivate", "ok") in scim_rows(rows, uid)
    world.graph.update_user(uid, accountEnabled=True)
    sync(world, indexed, user_item(uid, "notification"))
    assert (scim_user(app, uid) or {}).get("active") is True
    world.graph.soft_delete_user(uid)
    sync(world, indexed, user_item(uid, "notification"))
    assert (scim_user(app, uid) or {}).get("active") is False  # soft-deleted: still there, inactive
    world.graph.hard_delete_user(uid)
    rows = sync(world, indexed, user_item(uid, "notification"))
    assert scim_user(app, uid) is None
    assert ("delete", "ok") in scim_rows(rows, uid)


# -- groups -------------------------------------------------------------------------------------------


def test_group_membership_follows_entra_and_removal_uses_the_rfc_value_filter(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    uid = user["id"]
    sync(world, indexed, user_item(uid, "notification"), keep=False)
    scim_id = (scim_user(app, uid) or {})["id"]
    world.graph.add_member(world.group_ids[1], uid)
    sync(world, indexed, user_item(uid, "notification"))
    sales = group(app, "Sales")
    assert sales["externalId"] == world.group_ids[1] and scim_id in app.members_of(sales["id"])
    other = app.add_group("Not mapped", members=[scim_id])  # the application's own group
    world.graph.remove_member(world.group_ids[1], uid)
    rows = sync(world, indexed, user_item(uid, "notification"))
    assert scim_id not in app.members_of(sales["id"])
    assert app.members_of(other["id"]) == {scim_id}  # never touched
    assert ("remove_from_groups", "ok") in scim_rows(rows, uid)


def test_a_group_renamed_in_the_mapping_is_renamed_on_the_server_and_keeps_its_members(
    azurite: Azurite, tmp_path: Path, full_app: ScimApp, indexed: dict[str, Any]
) -> None:
    world = start(azurite, tmp_path, full_app)
    try:
        user = world.member_user()
        sync(world, indexed, user_item(user["id"], "notification"), keep=False)
        staff = group(full_app, "Staff")
        mapping = Path(world.settings.mapping_file)
        mapping.write_text(mapping.read_text().replace("groups: [Staff]", "groups: [Everyone]"))

        async def reconcile() -> tuple[Any, bytes]:
            async with services_for(world, keep_storage=True) as svc:
                (run,) = await reconcile_every({"scim:crm": svc.reconcilers["scim:crm"]}, "apply")
                return run, await svc.reports.load(run.run_id, "html")  # the stored report, as an operator reads it

        summary, page = asyncio.run(reconcile())
        html = page.decode()
        assert "What this run did to the target's groups" in html
        assert "<li>renamed the group &#x27;Staff&#x27; to &#x27;Everyone&#x27;</li>" in html
        renamed = group(full_app, "Everyone")
        assert renamed["id"] == staff["id"] and full_app.group_by_name("Staff") is None
        assert full_app.members_of(renamed["id"]) == full_app.members_of(staff["id"]) != set()
        assert any("renamed the group 'Staff' to 'Everyone'" in line for line in summary.housekeeping)
        assert summary.counts.get("role_mismatch", 0) == 0  # the members were right all along
    finally:
        world.stop()


def test_a_group_the_mapping_drops_is_deleted_only_with_the_policy_and_only_if_it_was_ours(
    azurite: Azurite, tmp_path: Path, full_app: ScimApp, indexed: dict[str, Any]
) -> None:
    world = start(azurite, tmp_path, full_app, extra="    delete_unmapped_groups: true\n")
    try:
        user = world.member_user()
        world.graph.add_member(world.group_ids[1], user["id"])
        sync(world, indexed, user_item(user["id"], "notification"), keep=False)
        sales = group(full_app, "Sales")
        theirs = full_app.add_group("Theirs", externalId="not-ours")
        mapping = Path(world.settings.mapping_file)
        mapping.write_text(
            mapping.read_text().replace("      - {group: " + world.group_ids[1] + ", groups: [Sales]}\n", "")
        )

        async def reconcile(mode: str) -> list[Any]:
            async with services_for(world, keep_storage=True) as svc:
                return await reconcile_every({"scim:crm": svc.reconcilers["scim:crm"]}, mode)

        (dry,) = asyncio.run(reconcile("dry-run"))
        assert any("delete the group 'Sales'" in line for line in dry.housekeeping)
        assert full_app.group_by_name("Sales") is not None  # a dry run changes nothing
        (applied,) = asyncio.run(reconcile("apply"))
        assert full_app.group_by_name("Sales") is None and sales["id"] not in {g["id"] for g in full_app.groups()}
        assert full_app.group_by_name("Theirs") == theirs  # not ours: untouched
        assert any("deleted the group 'Sales'" in line for line in applied.housekeeping)
    finally:
        world.stop()


# -- correlation: adopt, never duplicate ----------------------------------------------------------------


def test_an_existing_user_is_adopted_by_user_name_stamped_and_updated_not_duplicated(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    existing = app.add_user(user["userPrincipalName"], displayName="Old Name")  # made by hand, no externalId
    rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    got = scim_user(app, user["id"])
    assert got is not None and got["id"] == existing["id"] and got["displayName"] == user["displayName"]
    assert len(app.users()) == 1
    assert ("link", "ok") in scim_rows(rows, user["id"]) and ("create", "ok") not in scim_rows(rows, user["id"])


def test_a_user_name_held_by_another_person_is_refused_and_left_alone(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    theirs = app.add_user(user["userPrincipalName"], externalId="00000000-0000-4000-8000-00000000beef")
    rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    assert scim_rows(rows, user["id"]) == [("conflict", "refused")]
    assert app.users() == [theirs | {"meta": app.users()[0]["meta"]}]  # not written to
    assert "scim.users.create" not in writes(app)


def test_racing_joiners_make_one_resource(
    world: World, app: ScimApp, indexed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer (a second deployment, a worker whose lease lapsed) creates the user between
    this worker's read and its create: the create meets 409, the worker reads again and converges."""
    user = world.member_user()
    from shared.targets.scim import target as scim_target

    real = scim_target.ScimTarget.apply

    async def racing(self: Any, target_id: str, action: Any, fence: Any) -> Any:
        if action.kind.value == "create" and not app.user_by_username(user["userPrincipalName"]):
            app.add_user(user["userPrincipalName"], externalId=user["id"], displayName="First writer")
        return await real(self, target_id, action, fence)

    monkeypatch.setattr(scim_target.ScimTarget, "apply", racing)
    rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    assert len(app.users()) == 1
    got = scim_user(app, user["id"])
    assert got is not None and got["displayName"] == user["displayName"]  # converged after the race
    assert ("link", "ok") in scim_rows(rows, user["id"])


# -- servers that refuse things ---------------------------------------------------------------------------


def test_a_server_that_refuses_external_id_filters_is_matched_by_user_name_and_the_audit_says_so(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any]
) -> None:
    app = ScimApp(profile=ENTRA, externalid_filter=False).start()
    world = start(azurite, tmp_path, app)
    try:
        user, other = world.member_user(), hire(world, "other@sandbox.onmicrosoft.com", "Other Person")
        rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
        created = [r for r in rows if r["target"] == "scim:crm" and r["action"] == "create"]
        assert created and NO_EXTERNAL_ID in created[0]["detail"]
        existing = app.add_user(other["userPrincipalName"])
        sync(world, indexed, user_item(other["id"], "notification"), keep=False)
        got = app.user_by_username(other["userPrincipalName"])
        assert got is not None and got["id"] == existing["id"] and got["externalId"] == other["id"]
        assert len(app.users()) == 2
    finally:
        world.stop()
        app.stop()


def test_a_filter_value_is_escaped_so_a_crafted_name_matches_only_itself(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    crafted = 'x" or userName pr or "y@sandbox.onmicrosoft.com'
    decoy = app.add_user("decoy@sandbox.onmicrosoft.com")
    hire = world.graph.create_user(
        displayName="Crafted Name", givenName="Crafted", surname="Name", mail="crafted@sandbox.example",
        userPrincipalName=crafted, accountEnabled=True, userType="Member",
    )  # fmt: skip
    world.graph.add_member(world.group_ids[0], hire["id"])
    sync(world, indexed, user_item(hire["id"], "notification"), keep=False)
    got = scim_user(app, hire["id"])
    assert got is not None and got["userName"] == crafted and got["id"] != decoy["id"]
    assert app.user_by_username("decoy@sandbox.onmicrosoft.com") == decoy | {"meta": decoy["meta"]}


def test_rate_limits_are_waited_out_and_bad_data_is_failed_with_the_servers_detail(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user, other = world.member_user(), hire(world, "other@sandbox.onmicrosoft.com", "Other Person")
    app.limits.configure({"scim.users.create": RateLimit(burst=0, per_second=1 / 120)})
    rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    deferred = [r for r in rows if r["target"] == "scim:crm" and r["action"] == "deferred"]
    assert deferred and "without spending an attempt" in deferred[0]["detail"]
    assert scim_user(app, user["id"]) is None and world.account(user["id"]) is not None  # Auth0 went on
    app.limits.configure({})
    app.faults.configure([FaultRule("scim.users.create", kind="error", status=400, count=1)])
    # Fresh storage: the 429 closed the application's rate gate for 120 s, for every identity and
    # instance (test_target_health.py); bad data is this part's subject.
    share = dataclasses.replace(user_item(other["id"], "notification"), target="scim:crm")
    rows = sync(world, indexed, share, keep=False)
    failed = [r for r in rows if r["identity"] == other["id"] and r["outcome"] == "failed"]
    assert failed and "400" in failed[0]["error"]
    assert not [r for r in rows if r["identity"] == other["id"] and r["outcome"] == "retrying"]


def test_a_server_outage_retries_the_share_and_loses_nothing(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    app.faults.configure([FaultRule("scim.*", kind="error", status=503)])
    rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    assert ("sync", "retrying") in scim_rows(rows, user["id"])

    async def scheduled() -> int:
        async with services_for(world, keep_storage=True) as svc:
            return await waiting(svc)

    assert asyncio.run(scheduled()) == 1  # the SCIM share waits on the queue (the lane: a notification's)
    app.faults.configure([])
    sync(world, indexed, dataclasses.replace(user_item(user["id"], "notification"), target="scim:crm"))
    assert scim_user(app, user["id"]) is not None


# -- reconciliation and backfill --------------------------------------------------------------------------


def test_reconciliation_reports_scim_drift_and_repairs_it(world: World, app: ScimApp, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    got = scim_user(app, user["id"])
    assert got is not None
    app.set_profile(app.profile)  # the resources stay
    app.edit_user(got["id"], displayName="Changed by hand")  # an admin changed it in the application

    async def run() -> tuple[Any, Any]:
        async with services_for(world, keep_storage=True) as svc:
            (first,) = await reconcile_every({"scim:crm": svc.reconcilers["scim:crm"]}, "apply")
            for item in await queued(svc):
                await run_worker(indexed, item)
            (second,) = await reconcile_every({"scim:crm": svc.reconcilers["scim:crm"]}, "dry-run")
            return first, second

    first, second = asyncio.run(run())
    assert first.target == "scim:crm" and first.counts.get("attribute_mismatch") == 1
    assert first.counts.get("missing", 0) >= 1  # the rest of the tenant was never synced
    assert (scim_user(app, user["id"]) or {}).get("displayName") == user["displayName"]
    assert second.drifted == 0


def test_backfill_adopts_existing_users_stamps_them_and_creates_the_rest(
    world: World, app: ScimApp, indexed: dict[str, Any], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    dump = world.graph.snapshot(full=True)["dump"]
    in_0 = world.transitive_users(world.group_ids[0])
    in_scope = [u for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"]
    existing = [app.add_user(u["userPrincipalName"]) for u in in_scope[:3]]
    assert cli_backfill(world, monkeypatch) == 0
    out = capsys.readouterr()
    assert f"{len(in_scope)} in scope" in out.out and "adopted 3" in out.out
    assert f"created {len(in_scope) - 3}" in out.out and "failed 0" in out.out
    assert "scim:crm backfill" in out.err  # progress
    users = app.users()
    assert len(users) == len(in_scope)  # one each, the existing ones adopted
    for was in existing:
        now = next(u for u in users if u["id"] == was["id"])
        assert now["externalId"] in {u["id"] for u in in_scope}
    staff = group(app, "Staff")
    by_name = {u["userName"].casefold(): u["id"] for u in users}
    assert app.members_of(staff["id"]) == {
        by_name[u["userPrincipalName"].casefold()] for u in in_scope if u["id"] in in_0
    }
    assert world.auth0_writes() == {}  # only the target asked for


# -- member changes of one group go together ---------------------------------------------------------------


def test_concurrent_member_changes_of_one_group_share_writes_and_a_lost_lease_stops_only_its_own(
    full_app: ScimApp,
) -> None:
    from sandbox.mapping import scim_section
    from shared.bootstrap import BuildContext
    from shared.clock import SYSTEM
    from shared.core.model import Action, ActionKind
    from shared.errors import LeaseLost
    from shared.mapping.load import parse_mapping
    from shared.settings import Settings
    from shared.targets.scim.kind import SCIM
    from tests.support import sandbox_env

    group_id = "00000001-1111-4222-8333-444444444444"
    text = "version: 2\ntargets:\n" + scim_section(full_app.base_url, [(group_id, "Staff")])
    section = parse_mapping(text).target("scim:crm")
    env = sandbox_env(storage="UseDevelopmentStorage=true") | {"SCIM_CRM_TOKEN": full_app.token}
    ids = full_app.seed_users(40)

    def lost() -> None:
        raise LeaseLost("lease lapsed", retry_after_s=1.0)

    async def go() -> list[BaseException | object]:
        target = SCIM.build(section, BuildContext(Settings.from_env(env), SYSTEM))
        try:
            grant = Action(ActionKind.GRANT, entitlements=("Staff",))
            await target.apply(ids[0], grant, lambda: None)  # the group is made first
            full_app.log.clear()
            fences = [lost if n == 7 else (lambda: None) for n in range(1, 40)]
            return await asyncio.gather(
                *(target.apply(uid, grant, f) for uid, f in zip(ids[1:], fences, strict=True)), return_exceptions=True
            )
        finally:
            await target.aclose()  # type: ignore[attr-defined]

    results = asyncio.run(go())
    assert [type(r).__name__ for r in results].count("LeaseLost") == 1 and isinstance(results[6], LeaseLost)
    staff = group(full_app, "Staff")
    assert full_app.members_of(staff["id"]) == set(ids[:40]) - {ids[7]}
    patches = writes(full_app).get("scim.groups.patch", 0)
    assert 1 <= patches < 39 / 2, patches  # 39 changes in a handful of writes


def test_a_value_the_scim_schema_refuses_fails_for_good_naming_it_and_is_not_retried(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    user = hire(world, "bad.mail@sandbox.onmicrosoft.com", "Bad Mail")
    world.graph.update_user(user["id"], mail="not an address")
    rows = sync(
        world, indexed, dataclasses.replace(user_item(user["id"], "notification"), target="scim:crm"), keep=False
    )
    mine = [r for r in rows if r["identity"] == user["id"] and r["target"] == "scim:crm"]
    failed = [r for r in mine if r["outcome"] == "failed"]
    assert failed and "refuses" in failed[0]["error"] and "emails" in failed[0]["error"], mine
    assert not [r for r in mine if r["outcome"] == "retrying"]
    assert scim_user(app, user["id"]) is None


def test_the_circuit_breaker_holds_a_scim_run_that_would_deactivate_too_many(
    azurite: Azurite, tmp_path: Path, full_app: ScimApp
) -> None:
    import uuid

    policy = "    reconcile: {remediate: [missing, orphaned], max_deprovisions: 5, max_deprovision_share: 0.05}\n"
    world = start(azurite, tmp_path, full_app, extra=policy)
    try:
        ghosts = [
            full_app.add_user(f"ghost{n}@sandbox.onmicrosoft.com", externalId=str(uuid.uuid4()))["id"] for n in range(8)
        ]  # stamped by an earlier sync for Entra users that are gone

        async def run() -> tuple[Any, list[Any]]:
            async with services_for(world) as svc:
                (summary,) = await reconcile_every({"scim:crm": svc.reconcilers["scim:crm"]}, "apply")
                return summary, await queued(svc)

        summary, items = asyncio.run(run())
        assert summary.counts.get("orphaned") == 8 and summary.breaker.tripped
        assert not {i.id for i in items} & {u.get("externalId") for u in full_app.users()}  # no deprovision queued
        assert all(u["active"] for u in full_app.users() if u["id"] in ghosts)
    finally:
        world.stop()


# -- paging: the whole listing or a failed run ------------------------------------------------------------


def _reconcile(world: World, mode: str = "dry-run") -> Any:
    async def run() -> Any:
        async with services_for(world, keep_storage=True) as svc:
            try:
                (summary,) = await reconcile_every({"scim:crm": svc.reconcilers["scim:crm"]}, mode)
            except ReconcileFailed as exc:
                return exc, (await svc.reconcilers["scim:crm"].history(), await audit_rows(svc))
            return summary, None

    return asyncio.run(run())


@pytest.mark.parametrize("paging", [CURSOR, BOTH])
def test_reconciliation_pages_by_cursor_where_the_server_offers_it_and_reads_every_user(
    azurite: Azurite, tmp_path: Path, paging: str
) -> None:
    """A server that pages by cursor only (RFC 9865) answers a startIndex with 501: reading it by
    index failed the run. Cursors read all 150, four to a page (the server's maxPageSize)."""
    app = ScimApp(paging=paging, max_page_size=40).start()
    world = start(azurite, tmp_path, app)
    try:
        app.seed_users(150)
        summary, _ = _reconcile(world)
        assert summary.accounts == 150 and summary.read_by == "list by cursor"
        listings = [e for e in app.log.entries() if e.route == "scim.users.list"]
        assert len(listings) == 4  # ceil(150 / 40): the page size the server announced
    finally:
        world.stop()
        app.stop()


@pytest.mark.parametrize(
    ("paging", "fault"), [(INDEX, "repeat"), (INDEX, "short"), (CURSOR, "repeat"), (CURSOR, "short")]
)
def test_a_listing_the_server_breaks_fails_the_run_loudly_instead_of_reporting_part_as_all(
    azurite: Azurite, tmp_path: Path, paging: str, fault: str
) -> None:
    """The review's server answered the second page again: reconciliation saw 100 of 150 users (87
    in its run) and called the run complete. Now the run fails, is recorded, reported and alerted
    as failed, and queues nothing; a backfill stops before it writes anything."""
    app = ScimApp(paging=paging).start()
    world = start(azurite, tmp_path, app, extra="    page_size: 50\n")
    try:
        app.seed_users(150)
        app.break_listing(fault, page=2)
        failed, (runs, rows) = _reconcile(world, "apply")
        assert isinstance(failed, ReconcileFailed) and "PartialListing" in str(failed), failed
        run = runs[-1]  # this run: the latest
        assert run.status == "failed" and "PartialListing" in run.error and run.accounts == 0
        assert [r["outcome"] for r in rows if r["action"] == "reconcile_apply" and run.run_id in r.values()] == [
            "failed"
        ]

        async def after() -> list[Any]:
            async with services_for(world, keep_storage=True) as svc:
                return await queued(svc)

        assert asyncio.run(after()) == []  # nothing acted on
        assert not [route for route in writes(app) if route.startswith("scim.users.")]  # (tidy made the groups)
    finally:
        world.stop()
        app.stop()


def test_a_backfill_over_a_broken_listing_fails_before_it_creates_anyone(
    azurite: Azurite, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill adopts what the listing shows and creates the rest: on a listing that left users
    out it would create a second account for each. It fails instead, writing nothing."""
    app = ScimApp().start()
    world = start(azurite, tmp_path, app, extra="    page_size: 50\n")
    try:
        dump = world.graph.snapshot(full=True)["dump"]
        for user in dump["users"]:  # every Entra user is in the application already, by userName
            app.add_user(user["userPrincipalName"])
        app.seed_users(120)
        app.break_listing("repeat", page=2)
        assert cli_backfill(world, monkeypatch) != 0
        assert "a repeated page" in capsys.readouterr().err
        assert writes(app) == {}  # no user created twice, nothing adopted from a partial view
    finally:
        world.stop()
        app.stop()


# -- the media type, and no read twice ---------------------------------------------------------------------


def test_every_request_body_is_sent_as_application_scim_json(
    world: World, app: ScimApp, indexed: dict[str, Any]
) -> None:
    """RFC 7644 section 8.1: a joiner (POST user and group, PATCH or PUT of the group), a mover (PATCH
    or PUT of the user) and a leaver, each labelled application/scim+json."""
    user = world.member_user()
    uid = user["id"]
    sync(world, indexed, user_item(uid, "notification"), keep=False)
    world.graph.update_user(uid, department="Moved")
    sync(world, indexed, user_item(uid, "notification"))
    world.graph.update_user(uid, accountEnabled=False)
    sync(world, indexed, user_item(uid, "notification"))
    sent = app.media_types()
    routes = {route for route, _ in sent}
    assert {"scim.users.create", "scim.groups.create"} <= routes
    assert routes & {"scim.users.patch", "scim.users.replace"} and routes & {"scim.groups.patch", "scim.groups.replace"}
    assert {media for _, media in sent} == {"application/scim+json"}, sent


def test_a_joiner_in_three_groups_resolves_each_group_once_and_a_patch_answer_is_kept(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any]
) -> None:
    """The review counted 10 GET /Groups for one joiner in 3 mapped groups (each looked up by
    externalId, by displayName, then again before its create), and a GET of the user after every
    PATCH. Now: a group not yet there is looked up once each way, then created; a second joiner
    needs no group lookup at all; a group deleted on the server meanwhile is made again on the 404."""
    app = ScimApp(profile=ENTRA).start()
    world = start(azurite, tmp_path, app)
    mapping = Path(world.settings.mapping_file)
    sales = "      - {group: " + world.group_ids[1] + ", groups: [Sales]}\n"
    support = "      - {group: " + world.group_ids[2] + ", groups: [Support]}\n"
    mapping.write_text(mapping.read_text().replace(sales, sales + support))
    try:
        first = hire(world, "first.joiner@sandbox.onmicrosoft.com", "First Joiner")
        second = hire(world, "second.joiner@sandbox.onmicrosoft.com", "Second Joiner")
        for person in (first, second):
            for gid in world.group_ids[1:3]:
                world.graph.add_member(gid, person["id"])

        def gets(route: str) -> int:
            return sum(1 for e in app.log.entries() if e.route == route and e.method == "GET")

        async def run() -> None:
            async with services_for(world):  # one process: one worker, its caches warm across items
                for person in (first, second):
                    app.log.clear()
                    await run_worker(
                        indexed, dataclasses.replace(user_item(person["id"], "notification"), target="scim:crm")
                    )
                    counts[person["id"]] = (gets("scim.groups.list"), writes(app))
                for n, change in enumerate(({"department": "Moved"}, {"jobTitle": "Lead"})):
                    app.log.clear()
                    world.graph.update_user(second["id"], **change)
                    item = dataclasses.replace(user_item(second["id"], "notification"), target="scim:crm")
                    await run_worker(indexed, item)
                    counts[f"mover {n}"] = (gets("scim.users.get"), writes(app))
                support = group(app, "Support")
                app._serve("DELETE", f"/Groups/{support['id']}")  # an admin deleted it on the server
                app.log.clear()
                third = hire(world, "third.joiner@sandbox.onmicrosoft.com", "Third Joiner")
                world.graph.add_member(world.group_ids[2], third["id"])
                await run_worker(
                    indexed, dataclasses.replace(user_item(third["id"], "notification"), target="scim:crm")
                )
                counts["third"] = (gets("scim.groups.list"), writes(app))
                counts["support"] = app.members_of(group(app, "Support")["id"]) == {scim_user(app, third["id"])["id"]}  # type: ignore[index]

        counts: dict[str, Any] = {}
        asyncio.run(run())
        assert counts[first["id"]] == (6, {"scim.users.create": 1, "scim.groups.create": 3, "scim.groups.patch": 3})
        assert counts[second["id"]] == (0, {"scim.users.create": 1, "scim.groups.patch": 3})
        # Planned from the link's memory; each PATCH's answer is the resource the next write needs.
        assert counts["mover 0"] == counts["mover 1"] == (0, {"scim.users.patch": 1})
        # Staff, then Support: a 404 (forgotten), looked up again (2), made again, and patched.
        assert counts["third"] == (2, {"scim.users.create": 1, "scim.groups.create": 1, "scim.groups.patch": 3})
        assert counts["support"]
    finally:
        world.stop()
        app.stop()


def test_check_asks_the_scim_application_itself_and_names_a_token_it_refuses(
    world: World, app: ScimApp, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.cli import main

    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^scim:crm: ServiceProviderConfig read \(PATCH (yes|no), ETags (yes|no), cursors (yes|no)\)$", out, re.M
    )
    assert re.search(r"^scim:crm: the token lists users \(\d+ in all\)$", out, re.M), out
    monkeypatch.setenv("SCIM_CRM_TOKEN", "not-the-token-" + "x" * 20)
    assert main(["check"]) == 1
    captured = capsys.readouterr()
    assert "error: could not check scim:crm:" in captured.err and "401" in captured.err
    assert "not-the-token-" not in captured.out + captured.err
