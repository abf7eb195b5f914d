"""The ``salesforce`` target against the Salesforce emulator (sandbox/salesforce), through the
product's worker (the function host's entry points), with Azurite and the Graph emulator: joiner,
mover, leaver (a refused deactivation frozen and reported; thousands of records reassigned, with a
worker killed half-way), matching an existing user, a licence that runs out during a backfill, a
spent daily allocation and an outage that quarantines this target alone."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.mapping import SALESFORCE_ATTRIBUTES
from sandbox.salesforce import SalesforceEmulator
from sandbox.server import FaultRule
from shared.core.work import user_item
from shared.stores.leases import LEASE_TTL_S
from tests.integration.test_crash_recovery import kill_when
from tests.integration.world import World, audit_rows, queued, run_worker, services_for
from tests.support import FakeClock

NAME = "salesforce"
SECTION = (
    "  salesforce:\n"
    + SALESFORCE_ATTRIBUTES
    + """\
    default_profile: Standard User
    profiles:
      - {group: GROUP1, profile: Sales User}
    roles:
      - {group: GROUP1, role: West}
    permission_sets:
      - {group: GROUP0, permission_sets: [Staff_Access]}
      - {group: GROUP1, permission_sets: [Sales_Reader, 'group:Sales_Bundle']}
      - {group: GROUP1, department: [Field Sales West], permission_sets: [West_Territory]}
    reassign: {to: [manager, fallback_user, queue], fallback_user: ops@sandbox.example.com, queue: Leavers,
               bulk_over: BULK_OVER}
"""
)
SEED: dict[str, Any] = {
    "profiles": [{"name": "Sales User", "license": "Salesforce"}],
    "roles": [{"name": "West"}],
    "permission_sets": [{"name": n, "label": n} for n in ("Staff_Access", "Sales_Reader", "By_Hand", "West_Territory")],
    "permission_set_groups": [{"name": "Sales_Bundle", "label": "Sales Bundle"}],
    "queues": [{"name": "Leavers", "sobjects": ["Lead", "Case"]}],
    "users": [{"Username": "ops@sandbox.example.com", "LastName": "Ops", "Email": "ops@sandbox.example.com"}],
}


def env_for(org: SalesforceEmulator) -> dict[str, str]:
    return {
        "SALESFORCE_INSTANCE_URL": org.origin,
        "SALESFORCE_CLIENT_ID": org.client_id,
        "SALESFORCE_CLIENT_SECRET": org.client_secret,
    }


@pytest.fixture
def org() -> Iterator[SalesforceEmulator]:
    emulator = SalesforceEmulator().start()
    try:
        emulator.seed(SEED)
        yield emulator
    finally:
        emulator.stop()


def start(azurite: Azurite, tmp_path: Path, org: SalesforceEmulator, bulk_over: int = 2000, **world: Any) -> World:
    section = SECTION.replace("BULK_OVER", str(bulk_over))
    options = {"users": 20, "groups": 3, **world}
    return World(azurite, tmp_path, other_targets=section, extra_env=env_for(org), **options).start()


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, org: SalesforceEmulator) -> Iterator[World]:
    w = start(azurite, tmp_path, org)
    try:
        yield w
    finally:
        w.stop()


def users(org: SalesforceEmulator) -> list[dict[str, Any]]:
    return list(org.org.records["User"].values())


def sf_user(org: SalesforceEmulator, entra_id: str) -> dict[str, Any] | None:
    found = [u for u in users(org) if str(u.get("FederationIdentifier") or "").lower() == entra_id]
    assert len(found) <= 1, f"{len(found)} Salesforce users for one person"
    return found[0] if found else None


def named(org: SalesforceEmulator, sobject: str, record_id: str | None, field: str = "Name") -> str | None:
    record = org.org.records[sobject].get(record_id or "") if record_id else None
    return None if record is None else str(record[field])


def held(org: SalesforceEmulator, user_id: str) -> set[str]:
    """The user's permission sets and groups (not its profile's own), by API name."""
    out = set()
    for a in org.org.records["PermissionSetAssignment"].values():
        if a["AssigneeId"] != user_id:
            continue
        if a.get("PermissionSetGroupId"):
            out.add("group:" + str(named(org, "PermissionSetGroup", a["PermissionSetGroupId"], "DeveloperName")))
        else:
            ps = org.org.records["PermissionSet"][a["PermissionSetId"]]
            if not ps.get("IsOwnedByProfile"):
                out.add(str(ps["Name"]))
    return out


def frozen(org: SalesforceEmulator, user_id: str) -> bool:
    return any(x["IsFrozen"] for x in org.org.records["UserLogin"].values() if x["UserId"] == user_id)


def calls(org: SalesforceEmulator) -> dict[str, int]:
    return org.log.counts()


def rows_of(rows: list[dict[str, Any]], entra_id: str) -> list[tuple[str, str]]:
    return [(r["action"], r["outcome"]) for r in rows if r["identity"] == entra_id and r["target"] == NAME]


def sync(
    world: World, indexed: dict[str, Any], *items: Any, keep: bool = True, **overrides: Any
) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with services_for(world, keep_storage=keep, **overrides) as svc:
            for item in items:
                await run_worker(indexed, item)
            return await audit_rows(svc)

    return asyncio.run(go())


def member_of(world: World, index: int) -> dict[str, Any]:
    """An enabled Member of the seeded group ``index`` (and of the scope)."""
    for uid in world.users_in(index):
        user = world.user(uid)
        if user.get("accountEnabled") and user.get("userType") == "Member" and user.get("mail"):
            return user
    raise AssertionError(f"no enabled member in group {index}")


# -- joiner, mover -----------------------------------------------------------------------------------


def test_a_joiner_gets_its_profile_role_and_permission_sets_in_a_create_and_one_call(
    world: World, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    user = member_of(world, 1)
    world.graph.add_member(world.group_ids[0], user["id"])
    rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    got = sf_user(org, user["id"])
    assert got is not None and got["IsActive"] is True
    assert got["Username"] == user["mail"].strip().lower() and got["Email"] == user["mail"].strip().lower()
    assert len(got["Alias"]) <= 8 and got["EmployeeNumber"] == user["employeeId"]
    assert (
        named(org, "Profile", got["ProfileId"]) == "Sales User" and named(org, "UserRole", got["UserRoleId"]) == "West"
    )
    assert held(org, got["Id"]) == {"Staff_Access", "Sales_Reader", "group:Sales_Bundle"}
    assert ("create", "ok") in rows_of(rows, user["id"]) and ("assign_permission_sets", "ok") in rows_of(
        rows, user["id"]
    )
    writes = {route: n for route, n in calls(org).items() if route.endswith((".create", ".update", ".delete"))}
    assert writes == {"salesforce.users.create": 1, "salesforce.collections.create": 1}  # the create and one call


def test_a_mover_writes_only_what_differs_and_a_group_change_moves_profile_role_and_sets(
    world: World, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    user = member_of(world, 1)
    sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    org.log.clear()
    world.graph.update_user(user["id"], jobTitle="Principal Seller")
    world.graph.remove_member(world.group_ids[1], user["id"])
    rows = sync(world, indexed, user_item(user["id"], "notification"))
    got = sf_user(org, user["id"])
    assert got is not None and got["Title"] == "Principal Seller"
    assert named(org, "Profile", got["ProfileId"]) == "Standard User" and got.get("UserRoleId") is None
    assert held(org, got["Id"]) & {"Sales_Reader", "group:Sales_Bundle"} == set()
    assert ("remove_permission_sets", "ok") in rows_of(rows, user["id"])
    counts = calls(org)
    assert counts.get("salesforce.users.update") == 1  # one PATCH with Title, ProfileId and UserRoleId
    org.log.clear()
    sync(world, indexed, user_item(user["id"], "notification"))
    assert not [r for r in calls(org) if r.endswith((".create", ".update", ".delete"))]  # a replay writes nothing


def test_a_permission_set_narrowed_to_a_department_follows_the_department(
    world: World, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    user = member_of(world, 1)
    world.graph.update_user(user["id"], department="Field Sales West")
    sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    got = sf_user(org, user["id"])
    assert got is not None and "West_Territory" in held(org, got["Id"])
    world.graph.update_user(user["id"], department="Finance")  # the territory move
    rows = sync(world, indexed, user_item(user["id"], "notification"))
    still = held(org, got["Id"])
    assert "West_Territory" not in still and {"Sales_Reader", "group:Sales_Bundle"} <= still  # the rest stay
    assert ("remove_permission_sets", "ok") in rows_of(rows, user["id"])
    world.graph.remove_member(world.group_ids[1], user["id"])
    world.graph.update_user(user["id"], department="Field Sales West")  # the department alone grants nothing
    sync(world, indexed, user_item(user["id"], "notification"))
    assert "West_Territory" not in held(org, got["Id"])


def test_a_user_who_already_exists_under_another_username_is_matched_not_duplicated(
    world: World, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    user = member_of(world, 0)
    mail = user["mail"].strip().lower()
    legacy = {"Username": "legacy.name@old-format.example", "Email": mail, "LastName": user["surname"]}
    org.seed({**SEED, "users": [*SEED["users"], legacy]})
    before = len(users(org))
    rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    assert len(users(org)) == before  # adopted, no second user
    got = sf_user(org, user["id"])
    assert got is not None and got["Username"] == mail  # stamped and renamed to the template
    assert ("create", "ok") not in rows_of(rows, user["id"]) and ("update", "ok") in rows_of(rows, user["id"])


def test_a_username_taken_in_another_org_gets_the_documented_suffix(
    world: World, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    user = member_of(world, 0)
    mail = user["mail"].strip().lower()
    org.org.add_other_org_usernames([mail])
    sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    got = sf_user(org, user["id"])
    local, _, domain = mail.rpartition("@")
    assert got is not None and got["Username"] == f"{local}.2@{domain}"
    org.log.clear()
    sync(world, indexed, user_item(user["id"], "notification"))
    assert "salesforce.users.update" not in calls(org)  # the suffixed name is the template's own: no churn


# -- leaver --------------------------------------------------------------------------------------------


def test_a_refused_deactivation_freezes_the_login_reports_the_blocker_and_is_retried(
    world: World, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    user = member_of(world, 1)
    sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    got = sf_user(org, user["id"])
    assert got is not None
    org.org.set_blockers(got["Id"], ["default_case_owner"])
    world.graph.update_user(user["id"], accountEnabled=False)
    rows = sync(world, indexed, user_item(user["id"], "notification"))
    got = sf_user(org, user["id"])
    assert got is not None and got["IsActive"] is True  # Salesforce refused
    assert frozen(org, got["Id"])  # but nobody can sign in
    deactivate = [r for r in rows if r["identity"] == user["id"] and r["action"] == "deactivate"][-1]
    assert deactivate["outcome"] == "warning" and "default owner" in deactivate["detail"]
    assert held(org, got["Id"]) == set()  # the managed sets came off all the same

    async def findings() -> list[str]:
        async with services_for(world, keep_storage=True) as svc:
            return await svc.job(NAME).target.tidy(False)  # what reconciliation reports beside drift

    assert any("frozen" in line and got["Username"] in line for line in asyncio.run(findings()))
    world.graph.update_user(user["id"], accountEnabled=True)  # back before anyone cleared it: thawed
    sync(world, indexed, user_item(user["id"], "notification"))
    assert not frozen(org, got["Id"]) and (sf_user(org, user["id"]) or {}).get("IsActive") is True
    world.graph.update_user(user["id"], accountEnabled=False)
    sync(world, indexed, user_item(user["id"], "notification"))  # refused again: frozen again
    assert frozen(org, got["Id"])
    org.org.set_blockers(got["Id"], [])  # an admin clears it
    rows = sync(world, indexed, user_item(user["id"], "notification"))
    assert (sf_user(org, user["id"]) or {}).get("IsActive") is False  # the next pass deactivates it
    assert ("licence_freed", "ok") in rows_of(rows, user["id"])


def seed_owner_with_records(org: SalesforceEmulator, world: World, user: dict[str, Any], count: int) -> str:
    """The leaver's Salesforce user, with a manager, ``count`` open Opportunities, some closed ones,
    and open Leads; returns its id."""
    manager = {"Username": "boss@sandbox.example.com", "LastName": "Boss", "Email": "boss@sandbox.example.com"}
    me = {
        "Username": user["mail"].strip().lower(), "Email": user["mail"].strip().lower(), "LastName": user["surname"],
        "FederationIdentifier": user["id"], "manager": manager["Username"],
    }  # fmt: skip
    org.seed({
        **SEED,
        "users": [*SEED["users"], manager, me],
        "generate": [
            {"type": "Opportunity", "count": count, "owner": me["Username"], "closed": 7},
            {"type": "Lead", "count": 30, "owner": me["Username"]},
        ],
    })  # fmt: skip
    return next(u["Id"] for u in users(org) if u["Username"] == me["Username"])


def open_owned(org: SalesforceEmulator, sobject: str, owner: str) -> list[str]:
    closed = "IsClosed" if sobject == "Opportunity" else "IsConverted"
    return [r["Id"] for r in org.org.records[sobject].values() if r["OwnerId"] == owner and not r.get(closed)]


def reassigned(rows: list[dict[str, Any]], entra_id: str) -> list[str]:
    import json

    out: list[str] = []
    for r in rows:
        if r["identity"] == entra_id and r["action"] == "reassign" and r["outcome"] in {"ok", "recovered"}:
            out += json.loads(r["diff"])["records"]
    return out


CHILD = """\
import asyncio, sys
from pathlib import Path
from shared.targets.salesforce.leaver import Leaver
marker, step, after = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
real = getattr(Leaver, step)
seen = []
async def paused(self, *args, **kwargs):
    seen.append(1)
    if len(seen) == after:  # what the step stands for reached Salesforce; nothing audited yet
        marker.touch()
        await asyncio.sleep(60)
        raise SystemExit("not killed")
    return await real(self, *args, **kwargs)
setattr(Leaver, step, paused)
sys.argv = sys.argv[:2]
from tests.integration.crash_child import main
main()
"""


def test_thousands_of_records_are_reassigned_once_each_though_the_worker_is_killed_half_way(
    azurite: Azurite, tmp_path: Path, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    w = start(azurite, tmp_path, org, bulk_over=5000)  # collections, 200 a call
    try:
        user = member_of(w, 0)
        sf_id = seed_owner_with_records(org, w, user, 3000)
        boss = next(u["Id"] for u in users(org) if u["Username"] == "boss@sandbox.example.com")
        opportunities = set(open_owned(org, "Opportunity", sf_id))
        leads = set(open_owned(org, "Lead", sf_id))
        assert len(opportunities) == 3000 - 7
        w.graph.update_user(user["id"], accountEnabled=False)
        item = user_item(user["id"], "notification")
        sync(w, indexed, keep=False)  # empty product storage
        org.log.clear()
        marker = tmp_path / "paused"  # the 4th batch landed in Salesforce, its audit row not yet written
        assert kill_when(w, ["-c", CHILD, item.to_json(), str(marker), "_moved", "4"], marker.exists) == -signal.SIGKILL
        left = set(open_owned(org, "Opportunity", sf_id))
        assert 0 < len(left) < len(opportunities)  # killed in the middle
        clock = FakeClock()
        clock.advance(LEASE_TTL_S + 1)  # the killed worker's lease has lapsed: the host redelivers
        rows = sync(w, indexed, item, clock=clock)
        assert open_owned(org, "Opportunity", sf_id) == [] and open_owned(org, "Lead", sf_id) == []
        assert set(open_owned(org, "Opportunity", boss)) == opportunities  # the manager has them
        assert set(open_owned(org, "Lead", boss)) == leads
        done = reassigned(rows, user["id"])
        assert sorted(done) == sorted(opportunities | leads)  # each audited, once
        assert any(r["action"] == "reassign" and r["outcome"] == "recovered" for r in rows)
        moves = [r for r in rows if r["action"] == "reassign"]
        assert {(r["correlation_id"], r["source"]) for r in moves} == {(item.correlation_id, "notification")}
        # Never twice: one collections call per 200 records, the killed batch not sent again.
        assert calls(org)["salesforce.collections.update"] == -(-len(opportunities) // 200) + 1
        assert (sf_user(org, user["id"]) or {}).get("IsActive") is False
    finally:
        w.stop()


@pytest.mark.parametrize("killed", [False, True], ids=["whole", "killed-then-redelivered"])
def test_beyond_bulk_over_the_records_go_through_one_bulk_api_job_even_across_a_kill(
    azurite: Azurite, tmp_path: Path, org: SalesforceEmulator, indexed: dict[str, Any], killed: bool
) -> None:
    w = start(azurite, tmp_path, org, bulk_over=1000)
    try:
        user = member_of(w, 0)
        sf_id = seed_owner_with_records(org, w, user, 2500)
        opportunities = set(open_owned(org, "Opportunity", sf_id))
        w.graph.update_user(user["id"], accountEnabled=False)
        item = user_item(user["id"], "notification")
        sync(w, indexed, keep=False)  # empty product storage
        org.log.clear()
        if killed:
            marker = tmp_path / "uploaded"  # the job is uploaded and closed: Salesforce runs it; nothing audited
            child = ["-c", CHILD, item.to_json(), str(marker), "settle_job", "1"]
            assert kill_when(w, child, marker.exists) == -signal.SIGKILL
            assert calls(org).get("salesforce.bulk.create") == 1
        clock = FakeClock()
        clock.advance((LEASE_TTL_S + 1) if killed else 0)  # the killed worker's lease lapsed: the host redelivers
        rows = sync(w, indexed, item, clock=clock)
        assert open_owned(org, "Opportunity", sf_id) == [] and open_owned(org, "Lead", sf_id) == []
        assert calls(org).get("salesforce.bulk.create") == 1  # with a kill: the killed attempt's job, no second
        bulk_rows = [r for r in rows if r["action"] == "reassign" and "Bulk API job" in r["detail"]]
        assert bulk_rows and {r["outcome"] for r in bulk_rows} == {"recovered" if killed else "ok"}
        done = reassigned(rows, user["id"])
        assert len(done) == len(set(done)) == 2500 - 7 + 30 and set(done) >= opportunities  # each audited, once
        assert (sf_user(org, user["id"]) or {}).get("IsActive") is False
    finally:
        w.stop()


# -- limits -----------------------------------------------------------------------------------------


def test_a_licence_that_runs_out_during_a_backfill_stops_creates_without_a_retry_storm(
    world: World, org: SalesforceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.cli import main

    licence = next(x for x in org.org.records["UserLicense"].values() if x["Name"] == "Salesforce")
    org.set_licenses("Salesforce", int(licence["UsedLicenses"]) + 3)  # three more users fit
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    sync(world, {}, keep=False)
    org.log.clear()
    assert main(["backfill", "--target", NAME]) != 0  # some could not be created: the run says so
    made = [u for u in users(org) if u.get("FederationIdentifier")]
    assert len(made) == 3
    sent = calls(org)  # creates go in collections of those in flight (at most 8 at once)
    assert "salesforce.users.create" not in sent and sent["salesforce.collections.create"] <= 3 + 8 + 3

    async def after() -> tuple[list[Any], list[dict[str, Any]]]:
        async with services_for(world, keep_storage=True) as svc:
            return await queued(svc), await audit_rows(svc)

    waiting, rows = asyncio.run(after())
    assert waiting == []  # nothing queued to retry
    failed = [r for r in rows if r["target"] == NAME and r["outcome"] == "failed"]
    assert failed and all("no free user licence" in r["error"] for r in failed)


def test_a_backfill_creates_users_and_assigns_permission_sets_many_to_a_call(
    world: World, org: SalesforceEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.cli import main

    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    sync(world, {}, keep=False)
    org.log.clear()
    assert main(["backfill", "--target", NAME, "--concurrency", "50"]) == 0
    made = [u for u in users(org) if u.get("FederationIdentifier")]
    assert len(made) >= 5
    counts = calls(org)
    assert "salesforce.users.create" not in counts and "salesforce.permission_set_assignments.create" not in counts
    assert counts["salesforce.collections.create"] < len(made)  # creates and assignments gathered, not one each


def test_a_spent_daily_allocation_is_reported_and_waited_out_without_calling_again(
    world: World, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    user, other = member_of(world, 0), member_of(world, 1)
    org.set_api_usage(used=100_000, limit=100_000)
    rows = sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    assert sf_user(org, user["id"]) is None
    deferred = [r for r in rows if r["identity"] == user["id"] and r["target"] == NAME]
    assert [(r["action"], r["outcome"]) for r in deferred] == [("deferred", "deferred")]  # waited out, not failed
    assert "daily API allocation is spent" in deferred[0]["detail"]
    assert world.account(user["id"]) is not None  # Auth0 went on
    org.log.clear()
    rows = sync(world, indexed, user_item(other["id"], "notification"))
    assert not [r for r in calls(org) if r != "salesforce.oauth.token"]  # the gate holds every call back
    assert ("deferred", "deferred") in rows_of(rows, other["id"]) and world.account(other["id"]) is not None


def test_an_outage_quarantines_salesforce_alone(world: World, org: SalesforceEmulator, indexed: dict[str, Any]) -> None:
    org.faults.configure([FaultRule("salesforce.*", status=503)])
    people = [member_of(world, 0), member_of(world, 1)]
    rows = sync(world, indexed, *(user_item(p["id"], "notification") for p in people), keep=False)
    for person in people:
        assert world.account(person["id"]) is not None  # the Auth0 share was applied
        mine = rows_of(rows, person["id"])
        assert ("sync", "retrying") in mine or ("deferred", "deferred") in mine, mine
        assert ("sync", "failed") not in mine
    assert users(org) and all(sf_user(org, p["id"]) is None for p in people)


# -- reconciliation ----------------------------------------------------------------------------------


def test_reconciliation_reports_drift_orphans_frozen_users_and_licence_use(
    world: World, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    from shared.services.reconcile import reconcile_every
    from shared.services.report import provenance

    seller, leaver = member_of(world, 1), member_of(world, 0)
    gone_for_good = next(world.user(u) for u in world.users_in(2) if u not in (seller["id"], leaver["id"]))
    people = (seller, leaver, gone_for_good)
    sync(world, indexed, *(user_item(p["id"], "notification") for p in people), keep=False)
    world.graph.update_user(gone_for_good["id"], accountEnabled=False)
    sync(world, indexed, user_item(gone_for_good["id"], "notification"))  # deactivated: its licence freed
    got = sf_user(org, seller["id"])
    assert got is not None
    standard = next(p["Id"] for p in org.org.records["Profile"].values() if p["Name"] == "Standard User")
    org.org.update("User", got["Id"], {"ProfileId": standard, "Title": "Changed by hand"}, trusted=True)
    gone = sf_user(org, leaver["id"])
    assert gone is not None
    org.org.set_blockers(gone["Id"], ["workflow_user"])
    world.graph.update_user(leaver["id"], accountEnabled=False)
    sync(world, indexed, user_item(leaver["id"], "notification"))  # refused: frozen, still active

    async def run() -> Any:
        async with services_for(world, keep_storage=True) as svc:
            made = provenance(svc.mapping, NAME, settings=svc.settings, trigger="cli", operator="auditor")
            (summary,) = await reconcile_every({NAME: svc.reconcilers[NAME]}, "dry-run", provenance=lambda _: made)
            return summary

    summary = asyncio.run(run())
    # the report says where the org is (its instance URL, no credentials) and who ran it
    assert summary.provenance.target_kind == "salesforce" and summary.provenance.operator == "auditor"
    assert org.origin in str(summary.provenance.target_where)
    assert org.client_secret not in str(summary.provenance.target_where)
    assert summary.counts.get("attribute_mismatch", 0) >= 1  # the profile and title changed by hand
    assert summary.counts.get("orphaned", 0) >= 1  # the frozen leaver is still an active user
    lines = summary.housekeeping
    assert any("frozen" in line and gone["Username"] in line for line in lines)
    assert any(line.startswith("licences Salesforce:") and "used of" in line for line in lines)
    freed = [line for line in lines if line.startswith("licences freed by deactivations in the last 24 hours")]
    username = (sf_user(org, gone_for_good["id"]) or {}).get("Username")
    assert freed == [f"licences freed by deactivations in the last 24 hours: 1: {username}"]


def test_check_asks_the_org_for_what_the_section_names(
    world: World, org: SalesforceEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.cli import main

    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    for line in (
        "salesforce: profiles: 2 of 2 the mapping names exist in the org",
        "salesforce: roles: 1 of 1 the mapping names exist in the org",
        "salesforce: queues: 1 of 1 the mapping names exist in the org",
        "salesforce: permission sets: 4 of 4 the mapping grants exist in the org",
        "salesforce: fallback user 'ops@sandbox.example.com' exists in the org",
    ):
        assert line in out, out
    assert "salesforce: licences: Salesforce " in out
    org.seed({**SEED, "permission_sets": [{"name": "Staff_Access", "label": "Staff"}], "queues": []})
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    assert "  - salesforce: the mapping grants 'Sales_Reader', which the org does not have" in out
    assert "  - salesforce: the mapping names the queue 'Leavers', which the org does not have" in out


# What each section of the combined page shows, read in the browser as a person reads it.
READ_SECTIONS = """(() => {
  const out = {};
  for (const section of document.querySelectorAll("section.target")) {
    const t = section.dataset.target;
    const counts = {};
    for (const row of section.querySelectorAll(`[id="${t}-counts"] tr[data-drift]`)) {
      counts[row.dataset.drift] = Number(row.cells[1].innerText.replace(/,/g, ""));
    }
    out[t] = {heading: section.querySelector("h2").innerText, counts};
  }
  const ids = [...document.querySelectorAll("[id]")].map((e) => e.id);
  return {sections: out, ids, title: document.title};
})()"""


def test_the_latest_run_of_every_target_reads_as_one_report_with_a_section_each(
    world: World,
    org: SalesforceEmulator,
    indexed: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from shared.cli import main
    from tests.integration.test_report_browser import chromium, headless_page

    browser = chromium()
    seller = member_of(world, 1)
    sync(world, indexed, user_item(seller["id"], "notification"), keep=False)
    got = sf_user(org, seller["id"])
    assert got is not None
    org.org.update("User", got["Id"], {"Title": "Changed by hand"}, trusted=True)
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    assert main(["reconcile", "--dry-run"]) == 0
    runs = dict(re.findall(r"run (\S+) of (\S+) \(dry-run\)", capsys.readouterr().out))
    assert set(runs.values()) == {"auth0", NAME}
    assert main(["report", "--latest", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_target = {r["summary"]["target"]: r for r in doc["runs"]}
    assert {t: r["summary"]["run_id"] for t, r in by_target.items()} == {t: i for i, t in runs.items()}
    assert by_target[NAME]["summary"]["counts"].get("attribute_mismatch", 0) >= 1  # the title changed by hand
    page_file = tmp_path / "latest.html"
    assert main(["report", "--latest", "--format", "html", "--output", str(page_file)]) == 0
    assert main(["report"]) == 2 and "name a run id, or --latest" in capsys.readouterr().err

    async def look() -> tuple[dict[str, Any], list[str]]:
        async with headless_page(tmp_path / "chromium-profile") as page:
            for domain in ("Runtime", "Log", "Page"):
                await page.call(f"{domain}.enable")
            await page.call("Page.navigate", url=page_file.resolve().as_uri())
            await page.until("Page.loadEventFired")
            return await page.evaluate(READ_SECTIONS), page.errors()

    shown, errors = asyncio.run(look())
    print(f"browser check of {page_file.name} with {browser}")
    assert errors == []
    assert shown["title"] == "Reconciliation of 2 targets"
    assert len(shown["ids"]) == len(set(shown["ids"]))  # each target's ids its own: its links stay in it
    assert set(shown["sections"]) == {"auth0", NAME}
    for target, section in shown["sections"].items():
        assert by_target[target]["summary"]["run_id"] in section["heading"]
        assert {d: n for d, n in section["counts"].items() if n} == by_target[target]["summary"]["counts"]


def test_a_deprovision_trusts_its_own_reads_record_only_while_fresh_and_unwritten(
    world: World, org: SalesforceEmulator, indexed: dict[str, Any]
) -> None:
    """The leaver's deprovision takes the user record its work item's read fetched, but never one
    written since (by this target) nor one older than READ_FRESH_S: then it asks Salesforce again."""
    from shared.core.model import Action, ActionKind
    from shared.targets.salesforce.target import READ_FRESH_S

    user = member_of(world, 1)
    sync(world, indexed, user_item(user["id"], "notification"), keep=False)
    got = sf_user(org, user["id"])
    assert got is not None
    clock = FakeClock()

    def user_queries() -> int:  # user_now sends nothing else
        return calls(org).get("salesforce.query", 0)

    async def scenario() -> list[Any]:
        async with services_for(world, keep_storage=True, clock=clock) as svc:
            target = svc.job(NAME).target
            seen = []
            await target.read(got["Id"], entitlements=False)
            before = user_queries()
            seen.append(((await target.user_now(got["Id"]))["Title"], user_queries() - before))
            await target.read(got["Id"], entitlements=False)
            await target.apply(got["Id"], Action(ActionKind.UPDATE, {"Title": "Written since"}), lambda: None)
            before = user_queries()
            seen.append(((await target.user_now(got["Id"]))["Title"], user_queries() - before))
            await target.read(got["Id"], entitlements=False)
            clock.advance(READ_FRESH_S + 1)
            before = user_queries()
            seen.append(((await target.user_now(got["Id"])) is not None, user_queries() - before))
            return seen

    fresh, written, stale = asyncio.run(scenario())
    assert fresh[1] == 0  # the record its own read fetched a moment ago
    assert written == ("Written since", 1)  # written by this target since: asked again, and current
    assert stale == (True, 1)  # older than READ_FRESH_S: asked again
