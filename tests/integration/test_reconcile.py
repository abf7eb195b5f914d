"""delta_sync and reconcile through the indexed functions and the reconciler, against the sandbox."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import tracemalloc
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import shared
from sandbox.azurite import Azurite
from sandbox.mirror import mirror
from sandbox.receiver import WebhookReceiver
from shared.core.drift import DriftRecord, RunSummary
from shared.core.model import LastApplied, Link
from shared.core.work import WorkItem
from shared.mapping.load import load_mapping
from shared.services.report import parse_json
from shared.settings import Secret
from tests.integration.world import World, audit_rows, drain, queued, services_for

REMEDIATE_ALL = "reconcile: {remediate: [missing, attribute_mismatch, role_mismatch, orphaned], max_deprovisions: 3}"


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=40, groups=6, mapping_extra=REMEDIATE_ALL).start()
    try:
        yield w
    finally:
        w.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def in_sync_start(world: World) -> int:
    return mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))


def api(world: World, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {world.auth0.static_token}"}
    answer = httpx.request(method, f"{world.auth0.base_url}{path}", headers=headers, **kwargs)
    answer.raise_for_status()
    return answer


def test_an_in_sync_tenant_reports_no_drift_and_a_dry_run_writes_nothing(world: World) -> None:
    created = in_sync_start(world)

    async def scenario() -> Any:
        async with services_for(world, reports=False) as svc:
            world.auth0.log.clear()
            summary, records = await svc.reconcilers["auth0"].run("dry-run")
            return summary, records, await queued(svc)

    summary, records, items = run(scenario())
    assert summary.counts == {}
    assert records == []
    assert summary.entra_in_scope == created
    assert summary.in_sync == created
    assert summary.read_by == "list"
    assert world.auth0_writes() == {}
    assert items == []


def test_every_drift_class_is_found_and_the_safe_ones_are_repaired(world: World, indexed: dict[str, Any]) -> None:
    in_sync_start(world)
    dump = world.graph.snapshot(full=True)["dump"]
    members = [u for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"]
    missing, renamed, unroled, leaver, stale, twin = (u["id"] for u in members[:6])
    api(world, "DELETE", f"/users/auth0|{missing}")
    api(world, "PATCH", f"/users/auth0|{renamed}", json={"name": "Changed In Auth0"})
    roles = world.auth0.user_role_names(f"auth0|{unroled}")
    if not roles:
        world.graph.add_member(world.group_ids[0], unroled)  # make sure a managed role is expected
    else:
        role_ids = {r["name"]: r["id"] for r in api(world, "GET", "/roles").json()}
        api(world, "DELETE", f"/users/auth0|{unroled}/roles", json={"roles": [role_ids[roles[0]]]})
    world.graph.update_user(leaver, accountEnabled=False)  # its notification was lost
    stale_roles = world.auth0.user_role_names(f"auth0|{stale}")
    api(world, "DELETE", f"/users/auth0|{stale}")
    world.auth0.add_user({"user_id": stale, "email": f"{stale}@old.example", "last_login": "2020-01-01T00:00:00Z",
                          "app_metadata": {"entra_object_id": stale}, "roles": stale_roles})  # fmt: skip
    api(world, "DELETE", f"/users/auth0|{twin}")
    for n in (1, 2):
        world.auth0.add_user(
            {"user_id": f"twin-{n}", "email": f"twin{n}@x.example", "app_metadata": {"entra_object_id": twin}}
        )

    async def scenario() -> Any:
        async with services_for(world, reports=False) as svc:
            first, records = await svc.reconcilers["auth0"].run("apply")
            enqueued = {i.id for i in await queued(svc, take=False)}
            await drain(indexed, svc)
            second, rest = await svc.reconcilers["auth0"].run("dry-run")
            return first, records, enqueued, second, rest

    first, records, enqueued, second, rest = run(scenario())
    by_class = {r.drift: r for r in records}
    assert first.counts == {
        "missing": 1,
        "attribute_mismatch": 2,
        "role_mismatch": 1,
        "orphaned": 1,
        "stale": 1,
        "ambiguous": 1,
    }  # fmt: skip  (the stale account also differs from Entra in name and email)
    assert by_class["missing"].entra_id == missing
    assert by_class["orphaned"].details == {"reason": "source disabled"}
    assert by_class["ambiguous"].details["candidates"] == ["auth0|twin-1", "auth0|twin-2"]
    assert by_class["stale"].details["days"] > 365
    assert {r.entra_id for r in records if r.drift == "attribute_mismatch"} == {renamed, stale}
    assert next(r for r in records if r.entra_id == renamed).details["fields"]["name"][0] == "Changed In Auth0"
    assert enqueued == {missing, renamed, unroled, leaver, stale}  # never the ambiguous one
    assert by_class["ambiguous"].action == "reported"
    assert second.counts == {"stale": 1, "ambiguous": 1}
    assert {r.drift for r in rest} == {"stale", "ambiguous"}
    assert world.account(leaver)["blocked"] is True  # type: ignore[index]
    assert world.auth0.get_user("auth0|twin-1")["name"] != "Changed"  # type: ignore[index]


def members(world: World) -> list[str]:
    """Enabled Member users: in scope, with an Auth0 account after ``in_sync_start``."""
    dump = world.graph.snapshot(full=True)["dump"]
    return [u["id"] for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"]


def age_account(world: World, entra_id: str, **times: str) -> None:
    """Put the same in-sync account back with other ``created_at`` / ``last_login`` times (the
    Management API cannot set them); without ``last_login`` it never logged in."""
    account = world.account(entra_id)
    assert account is not None
    roles = world.auth0.user_role_names(f"auth0|{entra_id}")
    api(world, "DELETE", f"/users/auth0|{entra_id}")
    kept = ("email", "email_verified", "name", "given_name", "family_name", "user_metadata", "app_metadata")
    same = {k: account[k] for k in kept if k in account}
    world.auth0.add_user({**same, "user_id": entra_id, "roles": roles, **times})


async def run_and_read_report(world: World, mode: str = "dry-run") -> tuple[RunSummary, list[DriftRecord], bytes, str]:
    """One reconciliation run with the real report store, and the report.html and report.csv it stored."""
    async with services_for(world) as svc:
        summary, records = await svc.reconcilers["auth0"].run(mode)
        page = await svc.reports.load(summary.run_id, "html")
        table = (await svc.reports.load(summary.run_id, "csv")).decode("utf-8-sig")
        return summary, records, page, table


def what_differs_by_identity(table: str) -> dict[str, str]:
    return {row["entra_id"]: row["what_differs"] for row in csv.DictReader(io.StringIO(table, newline=""))}


def test_the_stored_report_says_when_a_stale_account_last_logged_in(world: World) -> None:
    in_sync_start(world)
    logged_in, never = members(world)[:2]
    age_account(world, logged_in, created_at="2019-06-01T00:00:00Z", last_login="2020-01-01T00:00:00Z")
    age_account(world, never, created_at="2020-02-01T00:00:00Z")

    summary, _, page, table = run(run_and_read_report(world))

    assert summary.counts == {"stale": 2}
    differs = what_differs_by_identity(table)
    assert differs[logged_in].startswith("last login 2020-01-01T00:00:00Z (")
    assert differs[never].startswith("never logged in, created 2020-02-01T00:00:00Z (")
    assert b"2020-01-01T00:00:00Z" in page
    assert b"never (created 2020-02-01T00:00:00Z)" in page


def test_an_in_scope_user_the_worker_would_not_create_is_reported_as_skipped_not_missing(world: World) -> None:
    in_sync_start(world)
    no_mail = members(world)[0]
    api(world, "DELETE", f"/users/auth0|{no_mail}")
    world.graph.update_user(no_mail, mail=None)  # the mapping takes the email from mail: none after mapping

    async def scenario() -> Any:
        async with services_for(world, reports=False) as svc:  # remediate lists missing
            summary, records = await svc.reconcilers["auth0"].run("apply")
            return summary, records, await queued(svc)

    summary, records, items = run(scenario())
    assert summary.counts == {"skipped": 1}
    [skipped] = records
    assert (skipped.entra_id, skipped.action) == (no_mail, "reported")
    assert skipped.details == {"reason": "joiner has no email after mapping; Auth0 needs one"}
    assert items == []
    assert summary.enqueued == 0


def test_in_sync_counts_in_scope_identities_and_is_not_lowered_by_orphans_outside_the_scope(world: World) -> None:
    created = in_sync_start(world)
    disabled = world.member_user(enabled=False)["id"]  # no account yet: out of scope of the mirror
    gone = "0f0f0f0f-0000-4000-8000-00000000dead"  # no such Entra user
    for owner in (disabled, gone):
        world.auth0.add_user(
            {"user_id": owner, "email": f"{owner}@x.example", "app_metadata": {"entra_object_id": owner}}
        )

    summary, records, page, _ = run(run_and_read_report(world))

    assert sorted(r.details["reason"] for r in records) == ["source deleted", "source disabled"]
    assert summary.entra_in_scope == created
    assert summary.in_sync == created
    assert summary.drifted == 2
    assert f"In sync (in-scope identities with no drift)</td><td class=n>{created:,}<".encode() in page


def test_one_identity_in_two_classes_is_one_work_item_and_the_report_says_records_and_identities(
    world: World,
) -> None:
    in_sync_start(world)
    both = world.member_user()["id"]  # in group 0, which grants Employee
    api(world, "PATCH", f"/users/auth0|{both}", json={"name": "Changed In Auth0"})
    role_ids = {r["name"]: r["id"] for r in api(world, "GET", "/roles").json()}
    api(world, "DELETE", f"/users/auth0|{both}/roles", json={"roles": [role_ids["Employee"]]})

    summary, records, page, _ = run(run_and_read_report(world, "apply"))

    assert summary.counts == {"attribute_mismatch": 1, "role_mismatch": 1}
    assert {r.action for r in records} == {"enqueued"}
    assert (summary.enqueued, summary.drifted) == (1, 1)
    assert summary.in_sync == summary.entra_in_scope - 1
    text = page.decode()
    assert "<dt>Drift</dt><dd>2 records about 1 identity</dd>" in text
    assert "<dt>Enqueued</dt><dd>1 identity (2 records)</dd>" in text


def test_a_mapping_of_the_managers_mail_reconciles_clean_after_the_worker_synced(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any]
) -> None:
    world = World(azurite, tmp_path, users=30, groups=6).start()
    try:
        mapping = tmp_path / "mapping.yaml"
        by_id = "  - {source: manager.id, target: app_metadata.manager_object_id}\n"
        by_mail = "  - {source: manager.mail, target: app_metadata.manager_mail}\n"
        assert by_id in mapping.read_text()
        mapping.write_text(mapping.read_text().replace(by_id, by_id + by_mail))

        async def scenario() -> Any:
            async with services_for(world, reports=False) as svc:
                await svc.delta.backfill()
                await drain(indexed, svc)
                return await svc.reconcilers["auth0"].run("dry-run")

        summary, records = run(scenario())
        dump = world.graph.snapshot(full=True)["dump"]
        mail_of = {u["id"]: u.get("mail") for u in dump["users"]}
        synced = [a for u in dump["users"] if (a := world.account(u["id"])) is not None]
        with_manager = [a for a in synced if a["app_metadata"].get("manager_object_id")]
        assert with_manager, "the seeded tenant should give some synced user a manager"
        assert all(
            a["app_metadata"].get("manager_mail") == mail_of[a["app_metadata"]["manager_object_id"]]
            for a in with_manager
        )
        assert records == []
        assert summary.in_sync == summary.entra_in_scope == len(synced)
    finally:
        world.stop()


def test_the_circuit_breaker_holds_a_mass_disable_until_approved(
    world: World, indexed: dict[str, Any], receiver: WebhookReceiver
) -> None:
    in_sync_start(world)
    world.settings = dataclasses.replace(world.settings, notify_webhook_url=Secret(receiver.url()))
    dump = world.graph.snapshot(full=True)["dump"]
    leavers = [u["id"] for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"][:5]
    for uid in leavers:
        world.graph.update_user(uid, accountEnabled=False)

    async def scenario() -> Any:
        async with services_for(world, reports=False) as svc:  # the real alerts: the composition root's
            held, records = await svc.reconcilers["auth0"].run("apply")
            waiting = await queued(svc)
            untouched = all(world.account(uid)["blocked"] is False for uid in leavers)  # type: ignore[index]
            approved = await svc.reconcilers["auth0"].approve(held.run_id)
            await drain(indexed, svc)
            after = await svc.reconcilers["auth0"].summary(held.run_id)
            return held, records, waiting, untouched, approved, after, await audit_rows(svc)

    held, records, waiting, untouched, approved, after, rows = run(scenario())
    assert held.status == "held"
    assert held.breaker.tripped is True
    assert "5 accounts would be blocked or deleted; the limit is 3" in held.breaker.reason
    assert {r.action for r in records if r.drift == "orphaned"} == {"held"}
    assert waiting == []
    assert untouched
    alerts = receiver.texts()
    assert len(alerts) == 1
    assert f"entra-sync approve {held.run_id}" in alerts[0]
    assert [(r["action"], r["outcome"]) for r in rows if r["identity"] == "alerts"] == [("alert", "ok")]
    assert approved == 5
    assert after.status == "approved"
    assert all(world.account(uid)["blocked"] is True for uid in leavers)  # type: ignore[index]
    assert any(r["action"] == "approve" for r in rows)


def test_approving_a_held_run_records_who_and_when_and_stores_the_report_again(world: World) -> None:
    in_sync_start(world)
    leavers = members(world)[:4]  # the limit is 3
    for uid in leavers:
        world.graph.update_user(uid, accountEnabled=False)

    async def scenario() -> Any:
        async with services_for(world) as svc:
            held, _ = await svc.reconcilers["auth0"].run("apply")
            before = await svc.reports.load(held.run_id, "html")
            await svc.reconcilers["auth0"].approve(held.run_id, approver="alice")
            after = await svc.reconcilers["auth0"].summary(held.run_id)
            _, records = parse_json(await svc.reports.load(held.run_id, "json"))
            return held, before, after, records, await svc.reports.load(held.run_id, "html")

    held, before, after, records, page = run(scenario())
    assert held.status == "held"
    assert f"entra-sync approve {held.run_id}".encode() in before
    assert (after.status, after.approved_by) == ("approved", "alice")
    assert datetime.fromisoformat(after.approved_at) >= datetime.fromisoformat(after.finished_at)
    assert {r.action for r in records if r.drift == "orphaned"} == {"approved"}
    text = page.decode()
    assert "s-approved" in text
    assert f"<dt>Approved</dt><dd>{after.approved_at} by alice</dd>" in text
    assert f"entra-sync approve {held.run_id}" not in text


def test_an_entra_read_that_looks_partial_holds_the_run(world: World) -> None:
    in_sync_start(world)

    async def scenario() -> Any:
        async with services_for(world, reports=False) as svc:
            first, _ = await svc.reconcilers["auth0"].run("dry-run")
            for user in world.graph.snapshot(full=True)["dump"]["users"][:30]:
                world.graph.hard_delete_user(user["id"])
            second, _ = await svc.reconcilers["auth0"].run("apply")
            return first, second, await queued(svc)

    first, second, items = run(scenario())
    assert first.status == "completed"
    assert second.breaker.tripped is True
    assert "the Entra read looks partial" in second.breaker.reason
    assert {i.source for i in items} <= {"reconcile"}
    assert second.held > 0


def test_past_1000_accounts_the_auth0_side_is_read_with_an_export_job(azurite: Azurite, tmp_path: Path) -> None:
    world = World(azurite, tmp_path, users=1100, groups=6).start()
    try:
        created = in_sync_start(world)
        assert created > 1000

        async def scenario() -> Any:
            async with services_for(world, reports=False) as svc:
                world.auth0.log.clear()
                return await svc.reconcilers["auth0"].run("dry-run")

        summary, records = run(scenario())
        assert summary.read_by == "export job"
        assert summary.accounts == created
        assert records == []
        assert world.auth0.log.counts().get("mgmt.jobs.users_exports") == 1
        assert world.auth0_writes() == {}
    finally:
        world.stop()


def test_delta_sync_repairs_what_dropped_notifications_missed(world: World, indexed: dict[str, Any]) -> None:
    in_sync_start(world)
    dump = world.graph.snapshot(full=True)["dump"]
    changed = [u["id"] for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"][:10]

    async def scenario() -> Any:
        async with services_for(world) as svc:
            await svc.state.put("delta", "users", {"link": await svc.source.latest_delta_link("users")})
            await svc.state.put("delta", "groups", {"link": await svc.source.latest_delta_link("groups")})
            for n, uid in enumerate(changed):
                world.graph.update_user(uid, department=f"Dept {n}")  # no subscription: nothing is notified
            from azure.functions.timer import TimerRequest

            await indexed["delta_sync"].get_user_function()(TimerRequest(past_due=False))
            items = await queued(svc, take=False)
            await drain(indexed, svc)
            return items

    items = run(scenario())
    assert sorted(i.id for i in items) == sorted(changed)
    for n, uid in enumerate(changed):
        assert world.account(uid)["user_metadata"]["department"] == f"Dept {n}"  # type: ignore[index]


def test_an_expired_delta_token_falls_back_to_a_full_pass_and_a_fresh_link(world: World) -> None:
    async def scenario() -> Any:
        async with services_for(world) as svc:
            await svc.state.put("delta", "users", {"link": await svc.source.latest_delta_link("users")})
            await svc.state.put("delta", "groups", {"link": await svc.source.latest_delta_link("groups")})
            world.graph.expire_delta_tokens()
            outcome = await svc.delta.catch_up(WorkItem("delta", "all", "delta", "timer"))
            fresh = await svc.state.get("delta", "users")
            return outcome, fresh, await queued(svc)

    outcome, fresh, items = run(scenario())
    users = world.graph.snapshot()["users"]
    assert len({i.id for i in items}) == users  # everyone, once
    assert outcome.enqueued >= users
    assert "$deltatoken=" in fresh["link"]


def test_an_enterprise_identity_counts_as_the_users_account(azurite: Azurite, tmp_path: Path) -> None:
    from sandbox.auth0 import ENTERPRISE_CONNECTION

    extra = f"matching: {{enterprise_connection: {ENTERPRISE_CONNECTION}}}"
    world = World(azurite, tmp_path, users=20, groups=6, mapping_extra=extra).start()
    try:
        in_sync_start(world)
        user = world.member_user()
        api(world, "DELETE", f"/users/auth0|{user['id']}")
        # The person signs in through the Entra enterprise connection: no app_metadata, another email.
        world.auth0.add_user({"connection": ENTERPRISE_CONNECTION, "user_id": user["id"], "email": "sso@corp.example"})

        async def scenario() -> Any:
            async with services_for(world, reports=False) as svc:
                return await svc.reconcilers["auth0"].run("dry-run")

        summary, records = run(scenario())
        assert "missing" not in summary.counts
        found = [r for r in records if r.entra_id == user["id"]]
        assert [r.drift for r in found] == ["attribute_mismatch", "role_mismatch"]
        assert found[0].user_id.endswith(user["id"])
    finally:
        world.stop()


# -- memory ----------------------------------------------------------------------------------------

# What the run may keep per account (and its link) while it streams Entra: the account's own values
# and index entries. Parsed JSON and Link objects with their memory of the last write took about
# 4 KB, which made 100,000 users cost 465 MB.
RETAINED_BYTES_PER_ACCOUNT = 1_500  # measured: 1,087 (4,191 before)


def test_a_run_keeps_about_a_kilobyte_per_account_and_link_while_it_streams_entra(
    azurite: Azurite, tmp_path: Path
) -> None:
    """Reconciliation holds the target's side (every account, every link) for the length of the
    Entra read, so its memory is this figure times the target's size: counted in bytes still held,
    allocated by the product's code, once the accounts are read (no timing involved)."""
    world = World(azurite, tmp_path, users=1_300, groups=6, mapping_extra=REMEDIATE_ALL).start()
    try:
        created = in_sync_start(world)
        ours = str(Path(shared.__file__).parent) + "/*"
        held: list[int] = []

        def progress(phase: str, done: int, total: int | None) -> None:
            if phase == "auth0 accounts" and total is not None:  # the target read, finished
                snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, ours, all_frames=True)])
                held.append(sum(stat.size for stat in snapshot.statistics("filename")))

        async def scenario() -> tuple[RunSummary, list[DriftRecord]]:
            async with services_for(world, reports=True) as svc:
                job = svc.job()
                accounts = [a async for a in job.target.accounts()]
                remembered = LastApplied(values={"name": "x"}, entitlements=frozenset(), managed=job.section.managed,
                                         active=True)  # fmt: skip
                await job.links.put_many(
                    [
                        Link(a.owner or "", a.target_id, applied=remembered, target="auth0", source="entra")
                        for a in accounts
                    ]
                )
                tracemalloc.start(8)
                try:
                    return await svc.reconcilers["auth0"].run("dry-run", progress=progress)
                finally:
                    tracemalloc.stop()

        summary, records = run(scenario())
    finally:
        world.stop()
    assert summary.accounts == created > 1_000 and summary.read_by == "export job"
    assert summary.in_sync == created and records == []  # the links were followed: all in sync
    assert len(held) == 1
    assert held[0] / created < RETAINED_BYTES_PER_ACCOUNT, f"{held[0] / created:.0f} bytes held per account"
