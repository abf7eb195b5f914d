"""Auth0 on day one, through the queue function and the composition root, on Azurite and the
emulators: the welcome sent once (replays, a re-enable, a killed worker), an SSO joiner linked at
first sign-in, organization membership and the MFA flag following group changes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.auth0 import ENTERPRISE_CONNECTION
from sandbox.azurite import Azurite
from sandbox.courier import MemoryCourier
from sandbox.mapping import sandbox_mapping, three_role_grants
from sandbox.server import FaultRule
from shared.core.work import user_item
from shared.stores.leases import LEASE_TTL_S
from tests.integration.test_crash_recovery import kill_when
from tests.integration.world import World, audit_rows, run_worker, services_for
from tests.support import FakeClock

DATABASE = "Username-Password-Authentication"
TICKET = "{send: password_change_ticket, result_url: 'https://app.example/welcome', ttl_s: 86400}"


def policy_mapping(world: World, welcome: str = TICKET, baseline: str = "", mailbox: str = "") -> None:
    """Group 3 signs in through Entra (SSO); groups 0 and 3 are members of acme; group 1 needs MFA."""
    g = world.group_ids
    target = "\n".join([
        "target:",
        f"  connection: {DATABASE}",
        f"  connections: [{{group: {g[3]}, connection: {ENTERPRISE_CONNECTION}}}]",
        f"  organizations: [{{group: {g[0]}, organization: acme, roles: [Org Member]}},",
        f"                  {{group: {g[3]}, organization: acme, roles: [Org Member]}}]",
        f"  policy: [{{group: {g[1]}, mfa_required: true, step_up: high}}]",
        "  mfa_enrollment_ticket: true",
        f"  welcome: {{{DATABASE}: {welcome}, {ENTERPRISE_CONNECTION}: {{send: none}}}}",
        *([f"  baseline: {baseline}"] if baseline else []),
        *([f"  welcome_mailbox: {mailbox}"] if mailbox else []),
    ])  # fmt: skip
    text = sandbox_mapping(three_role_grants(g), matching=f"{{enterprise_connection: {ENTERPRISE_CONNECTION}}}")
    path = world.tmp_path / "mapping.yaml"
    path.write_text(text.replace(f"target: {{connection: {DATABASE}}}", target))


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=16, groups=4).start()
    w.auth0.add_role("Org Member")
    w.auth0.add_organization("acme", {ENTERPRISE_CONNECTION: True})
    policy_mapping(w)

    async def empty() -> None:
        # Azurite outlives the test: no earlier test's links or claims.
        async with services_for(w, courier=MemoryCourier()):
            pass

    asyncio.run(empty())
    try:
        yield w
    finally:
        w.stop()


def someone(world: World, group: int, not_in: tuple[int, ...]) -> dict[str, Any]:
    """An enabled Member in ``group`` (through nesting too) and in none of ``not_in``."""
    dump = world.graph.snapshot(full=True)["dump"]
    inside = world.transitive_users(world.group_ids[group])
    outside = set().union(*(world.transitive_users(world.group_ids[i]) for i in not_in))
    return next(
        u for u in dump["users"]
        if u.get("userType") == "Member" and u["accountEnabled"] and u["id"] in inside - outside and u.get("mail")
    )  # fmt: skip


def sync(world: World, indexed: dict[str, Any], entra_id: str, times: int = 1, **services: Any) -> list[Any]:
    """The user's work item through the queue function ``times`` times; every audit row after."""

    async def run() -> list[dict[str, Any]]:
        async with services_for(world, keep_storage=True, **services) as svc:
            for _ in range(times):
                await run_worker(indexed, user_item(entra_id, "notification"))
            return await audit_rows(svc)

    return asyncio.run(run())


def welcomes(rows: list[dict[str, Any]], outcome: str = "ok") -> list[dict[str, Any]]:
    return [r for r in rows if r["action"] == "welcome" and r["outcome"] == outcome]


def test_a_joiner_is_welcomed_once_across_replays_and_a_re_enable_with_the_mapped_ticket(
    world: World, indexed: dict[str, Any]
) -> None:
    courier = MemoryCourier()
    user = someone(world, 0, not_in=(1, 3))
    rows = sync(world, indexed, user["id"], times=3, courier=courier)
    account = world.account(user["id"])
    assert account is not None and account["app_metadata"]["entra_welcome"] == "sent"
    tickets = world.auth0.sent_of("password_change_ticket")
    assert [t["body"]["user_id"] for t in tickets] == [account["user_id"]]
    assert tickets[0]["body"]["ttl_sec"] == 86400 and tickets[0]["body"]["result_url"] == "https://app.example/welcome"
    delivered = [(letter.to, tickets[0]["ticket"] in letter.text) for letter in courier.letters]
    assert delivered == [(account["email"], True)]
    assert len(welcomes(rows)) == 1
    created = next(r for r in rows if r["action"] == "create" and r["outcome"] == "ok")
    welcomed = welcomes(rows)[0]  # the same work item's: one correlation id ties the welcome to the create
    assert (welcomed["correlation_id"], welcomed["source"]) == (created["correlation_id"], "notification")
    assert all(tickets[0]["ticket"] not in str(r) for r in rows)  # the ticket is a credential: never audited
    assert world.auth0.memberships(account["user_id"]) == {"acme": ["Org Member"]}

    world.graph.update_user(user["id"], accountEnabled=False)
    sync(world, indexed, user["id"], courier=courier)
    assert world.account(user["id"])["blocked"] is True  # type: ignore[index]
    world.graph.update_user(user["id"], accountEnabled=True)
    sync(world, indexed, user["id"], courier=courier)
    assert world.account(user["id"])["blocked"] is False  # type: ignore[index]
    assert len(courier.letters) == 1 and len(world.auth0.sent_of("password_change_ticket")) == 1


def test_a_section_with_a_welcome_mailbox_mails_the_ticket_through_graph_from_that_mailbox(
    world: World, indexed: dict[str, Any]
) -> None:
    """No courier handed in: the composition root builds Graph sendMail from the section's mailbox, as
    the function app does in Azure."""
    policy_mapping(world, mailbox="welcome@contoso.example")
    user = someone(world, 0, not_in=(1, 3))
    rows = sync(world, indexed, user["id"], times=2)
    account = world.account(user["id"])
    assert account is not None and account["app_metadata"]["entra_welcome"] == "sent"
    (ticket,) = world.auth0.sent_of("password_change_ticket")
    (mail,) = world.graph.outbox.listed()
    assert (mail["mailbox"], mail["to"]) == ("welcome@contoso.example", [account["email"]])
    assert ticket["ticket"] in mail["body"]
    assert len(welcomes(rows)) == 1 and all(ticket["ticket"] not in str(r) for r in rows)


def test_a_worker_killed_between_the_create_and_the_welcome_leaves_it_pending_and_the_redelivery_sends_it_once(
    world: World, indexed: dict[str, Any]
) -> None:
    policy_mapping(world, welcome="{send: verification_email}")  # Auth0 mails it: the killed process needs no courier
    user = someone(world, 0, not_in=(1, 3))
    item = user_item(user["id"], "notification")
    # The organization write after the create answers slowly: the process is killed there, before the welcome.
    world.auth0.faults.configure([FaultRule("mgmt.organizations.members.add", kind="delay", delay_s=3.0, count=1)])
    created = lambda: any(e.route == "mgmt.users.write.create" for e in world.auth0.log.entries())  # noqa: E731
    assert kill_when(world, ["-m", "tests.integration.crash_child", item.to_json()], created) == -signal.SIGKILL
    world.auth0.faults.configure([])
    account = world.account(user["id"])
    assert account is not None and account["app_metadata"]["entra_welcome"] == "pending"
    assert world.auth0.sent_of("verification_email") == []

    clock = FakeClock()
    clock.advance(LEASE_TTL_S + 1)  # the killed worker's lease has lapsed: the host redelivers

    async def redeliver() -> list[dict[str, Any]]:
        async with services_for(world, keep_storage=True, clock=clock) as svc:
            await run_worker(indexed, item)
            await run_worker(indexed, item)  # and a replay
            return await audit_rows(svc)

    rows = asyncio.run(redeliver())
    assert [s["to"] for s in world.auth0.sent_of("verification_email")] == [account["email"]]
    assert world.account(user["id"])["app_metadata"]["entra_welcome"] == "sent"  # type: ignore[index]
    assert len(welcomes(rows)) == 1
    assert world.auth0.memberships(account["user_id"]) == {"acme": ["Org Member"]}


def test_an_sso_joiner_gets_no_database_account_and_is_linked_at_first_sign_in(
    world: World, indexed: dict[str, Any]
) -> None:
    courier = MemoryCourier()
    user = someone(world, 3, not_in=())
    rows = sync(world, indexed, user["id"], courier=courier)
    assert "mgmt.users.write.create" not in world.auth0_writes()
    skipped = [r for r in rows if r["identity"] == user["id"] and r["outcome"] == "skipped"]
    assert skipped and "first sign-in" in skipped[-1]["detail"]

    signed_in = world.auth0.sign_in(ENTERPRISE_CONNECTION, user["id"], user["mail"])  # Auth0 makes waad|<oid>
    sync(world, indexed, user["id"], courier=courier)
    account = world.auth0.get_user(signed_in["user_id"])
    assert account is not None and account["app_metadata"]["entra_object_id"] == user["id"]
    assert world.auth0.memberships(signed_in["user_id"]) == {"acme": ["Org Member"]}
    assert world.account(user["id"]) is None  # no database account beside it
    assert courier.letters == [] and world.auth0.sent_of("password_change_ticket") == []


def test_organization_membership_and_the_mfa_flag_follow_group_changes(world: World, indexed: dict[str, Any]) -> None:
    courier = MemoryCourier()
    user = someone(world, 0, not_in=(1, 3))
    sync(world, indexed, user["id"], courier=courier)
    user_id = f"auth0|{user['id']}"
    assert world.auth0.memberships(user_id) == {"acme": ["Org Member"]}

    world.graph.remove_member(world.group_ids[0], user["id"])
    world.graph.add_member(world.group_ids[1], user["id"])
    sync(world, indexed, user["id"], courier=courier)
    if user["id"] not in world.transitive_users(world.group_ids[0]):  # not still in it through nesting
        assert world.auth0.memberships(user_id) == {}
    metadata = world.auth0.get_user(user_id)["app_metadata"]  # type: ignore[index]
    assert metadata["mfa_required"] is True and metadata["step_up"] == "high"
    assert [s["body"] for s in world.auth0.sent_of("guardian_enrollment")] == [{"user_id": user_id, "send_mail": True}]

    world.graph.add_member(world.group_ids[0], user["id"])
    world.graph.remove_member(world.group_ids[1], user["id"])
    sync(world, indexed, user["id"], times=2, courier=courier)
    assert world.auth0.memberships(user_id) == {"acme": ["Org Member"]}
    assert "mfa_required" not in world.auth0.get_user(user_id)["app_metadata"]  # type: ignore[index]
    assert len(world.auth0.sent_of("guardian_enrollment")) == 1


BASELINE = (
    f"{{enforce: ENFORCE, connections: {{{DATABASE}: {{password_policy: good, brute_force_protection: true,"
    " password_history: {enable: true, size: 5}}},"
    " mfa: {factors: {otp: true}, policies: [all-applications]},"
    f" organizations: {{acme: {{{ENTERPRISE_CONNECTION}: true}}}}}}"
)


def drifted_tenant(world: World) -> None:
    """The tenant as someone left it: a weaker password policy, no OTP, no MFA policy, and the
    organization also open to the database connection."""
    world.auth0.set_connection_options(DATABASE, {"passwordPolicy": "fair", "brute_force_protection": True, "mfa": {}})
    world.auth0.set_guardian({"otp": False, "sms": True}, [])
    world.auth0.reset_organization_connections("acme", {ENTERPRISE_CONNECTION: False, DATABASE: False})


def reconcile(world: World, mode: str = "apply") -> Any:
    async def run() -> Any:
        async with services_for(world, keep_storage=True, courier=MemoryCourier()) as svc:
            summary, _ = await svc.reconcilers["auth0"].run(mode)
            return summary, await audit_rows(svc)

    return asyncio.run(run())


def test_a_baseline_drift_is_reported_then_enforced_only_after_the_run_is_approved(world: World) -> None:
    policy_mapping(world, baseline=BASELINE.replace("ENFORCE", "true"))
    drifted_tenant(world)
    summary, rows = reconcile(world)
    assert summary.status == "held" and summary.baseline_held
    assert sorted(summary.baseline) == sorted([
        f"connection {DATABASE}: password_policy is 'fair', the baseline says 'good'",
        f"connection {DATABASE}: password_history.enable is None, the baseline says True",
        f"connection {DATABASE}: password_history.size is None, the baseline says 5",
        "MFA factor otp: enabled is False, the baseline says True",
        "MFA policy: policies is [], the baseline says ['all-applications']",
        f"organization acme: connection {DATABASE} is 'enabled', the baseline says 'not enabled'",
        f"organization acme: connection {ENTERPRISE_CONNECTION} is 'enabled', "
        "the baseline says 'enabled, members on login'",
    ])  # fmt: skip
    alerts = [r for r in rows if r["action"] == "alert" and r["source_ref"] == f"baseline:{summary.run_id}"]
    assert len(alerts) == 1 and "otp" in alerts[0]["detail"] and f"approve {summary.run_id}" in alerts[0]["detail"]
    assert world.auth0.sent == []  # nothing written before the approval

    async def approve() -> None:
        async with services_for(world, keep_storage=True, courier=MemoryCourier()) as svc:
            await svc.reconcilers["auth0"].approve(summary.run_id, "security-lead")

    asyncio.run(approve())
    options = world.auth0.connection(DATABASE)["options"]
    assert options["passwordPolicy"] == "good" and options["password_history"] == {"enable": True, "size": 5}
    assert options["mfa"] == {} and options["brute_force_protection"] is True  # the rest sent back as it was
    tenant = world.auth0.tenant_settings()
    assert tenant["factors"]["otp"] is True and tenant["factors"]["sms"] is True  # sms: not declared, left
    assert tenant["policies"] == ["all-applications"]
    assert world.auth0.org_connections("acme") == {ENTERPRISE_CONNECTION: True}
    again, _ = reconcile(world)
    assert again.status == "completed" and again.baseline == []


def test_a_baseline_that_is_not_enforced_is_reported_and_never_written(world: World) -> None:
    policy_mapping(world, baseline=BASELINE.replace("ENFORCE", "false"))
    drifted_tenant(world)
    summary, _ = reconcile(world)
    assert summary.status == "completed" and not summary.baseline_held and len(summary.baseline) == 7
    assert world.auth0.sent == []


def test_a_re_enabled_joiner_is_welcomed_again_only_where_the_mapping_asks(
    world: World, indexed: dict[str, Any]
) -> None:
    policy_mapping(world, welcome=TICKET.replace("ttl_s: 86400", "ttl_s: 86400, again_on_enable: true"))
    courier = MemoryCourier()
    user = someone(world, 0, not_in=(1, 3))
    sync(world, indexed, user["id"], courier=courier)
    for enabled in (False, True, True):  # a leaver, a returner, a replay of the return
        world.graph.update_user(user["id"], accountEnabled=enabled)
        sync(world, indexed, user["id"], courier=courier)
    assert len(courier.letters) == 2  # the joiner's, and one for the return (not for its replay)
    assert len({letter.key for letter in courier.letters}) == 2


def test_the_operators_check_names_what_the_policy_needs_and_what_the_tenant_lacks(world: World) -> None:
    path = world.tmp_path / "mapping.yaml"
    path.write_text(path.read_text().replace("organization: acme, roles: [Org Member]}]", "organization: ghost}]"))

    async def check() -> tuple[list[str], list[str]]:
        async with services_for(world, keep_storage=True, courier=MemoryCourier()) as svc:
            return await svc.jobs["auth0"].target.live_check()  # type: ignore[attr-defined,no-any-return]

    ran, problems = asyncio.run(check())
    scopes = next(line for line in ran if line.startswith("scopes the section needs: "))
    for scope in ("create:user_tickets", "create:organization_members", "create:guardian_enrollment_tickets"):
        assert scope in scopes
    assert "update:connections" not in scopes  # no baseline in this mapping: not asked for
    assert "auth0: the mapping names the organization 'ghost', which Auth0 does not have" in problems
    assert "organization: 'acme' exists in Auth0" in ran
