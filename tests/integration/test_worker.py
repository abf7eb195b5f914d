"""sync_worker through the indexed function, with the SDKs against the emulators and Azurite."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.azurite import Azurite
from sandbox.server import FaultRule, RateLimit
from shared import names
from shared.core.model import Account, DeprovisionState, Link
from shared.core.work import WorkItem, user_item
from shared.stores.keys import encode_key
from tests.integration.world import World, audit_rows, queued, run_worker, services_for, waiting


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path).start()
    try:
        yield w
    finally:
        w.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_joiner_gets_an_account_with_mapped_attributes_roles_and_a_link(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    world.graph.add_member(world.group_ids[1], user["id"])

    async def scenario() -> tuple[Any, list[dict[str, Any]]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await svc.job().links.get(user["id"]), await audit_rows(svc)

    link, rows = run(scenario())
    account = world.account(user["id"])
    assert account is not None
    assert account["email"] == user["mail"].lower()
    assert account["name"] == user["displayName"]
    assert account["user_metadata"]["department"] == user["department"]
    assert account["app_metadata"]["entra_object_id"] == user["id"]
    assert account["blocked"] is False
    assert sorted(world.auth0.user_role_names(account["user_id"])) == ["Employee", "Sales Reader", "Sales Writer"]
    assert link is not None
    assert link.target_id == f"auth0|{user['id']}"
    assert [r["action"] for r in rows] == ["create", "link", "assign_roles"]
    assert all(r["outcome"] == "ok" for r in rows)
    assert "password" not in rows[0]["diff"]


def test_a_replay_calls_nothing_and_a_check_that_reads_the_target_is_recorded(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()

    async def scenario() -> tuple[list[dict[str, Any]], int, list[dict[str, Any]]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            joined = await audit_rows(svc)
            world.auth0.log.clear()
            await run_worker(indexed, user_item(user["id"], "delta"))  # what the link remembers is current
            await run_worker(indexed, user_item(user["id"], "notification"))
            replayed = len(world.auth0.log.entries())
            await run_worker(indexed, user_item(user["id"], "reconcile"))  # reads the account itself
            return joined, replayed, await audit_rows(svc)

    joined, replayed, rows = run(scenario())
    assert replayed == 0  # not a read, not a write
    assert world.auth0_writes() == {}
    assert len(rows) == len(joined) + 1  # the replays left no row; the reconciliation's check did
    assert (rows[-1]["action"], rows[-1]["detail"], rows[-1]["source"]) == ("none", "in sync", "reconcile")


def test_mover_changes_reach_the_same_account_with_one_write(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.graph.update_user(
                user["id"], department="Sales", displayName="Ada Promoted", mail="ada.new@contoso.example"
            )
            world.auth0.log.clear()
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await audit_rows(svc)

    rows = run(scenario())
    account = world.account(user["id"])
    assert account is not None
    assert account["email"] == "ada.new@contoso.example"
    assert account["name"] == "Ada Promoted"
    assert account["user_metadata"]["department"] == "Sales"
    assert account["email_verified"] is True
    assert world.auth0_writes() == {"mgmt.users.write.update": 1}
    assert world.auth0.snapshot()["users"] == 1  # an email change never makes a second account
    update = rows[-1]
    assert update["action"] == "update"
    assert '"email": ["' in update["diff"]


def test_roles_follow_groups_and_unmanaged_roles_stay(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    world.graph.add_member(world.group_ids[1], user["id"])
    world.graph.add_member(world.group_ids[2], user["id"])

    async def scenario() -> None:
        async with services_for(world):
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.grant_role_by_hand(f"auth0|{user['id']}", "Billing Admin")
            world.graph.remove_member(world.group_ids[1], user["id"])
            await run_worker(indexed, user_item(user["id"], "notification"))

    run(scenario())
    uid = f"auth0|{user['id']}"
    assert sorted(world.auth0.user_role_names(uid)) == ["Billing Admin", "Employee", "Sales Reader"]


def test_leaver_is_blocked_and_signed_out_then_unblocked_when_re_enabled(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    uid = f"auth0|{user['id']}"

    async def scenario() -> tuple[Any, Any, list[dict[str, Any]]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.auth0.add_sessions(uid, 3, refresh_tokens=2)
            world.graph.update_user(user["id"], accountEnabled=False)
            await run_worker(indexed, user_item(user["id"], "notification"))
            left = await svc.job().links.get(user["id"])
            blocked = dict(world.account(user["id"]) or {})
            sessions = world.auth0.sessions_of(uid)
            world.graph.update_user(user["id"], accountEnabled=True)
            await run_worker(indexed, user_item(user["id"], "notification"))
            return left, (blocked, sessions), await audit_rows(svc)

    left, (blocked, sessions), rows = run(scenario())
    assert blocked["blocked"] is True
    assert sessions == {"sessions": 0, "refresh_tokens": 0}
    assert left.deprovision is DeprovisionState.DONE
    assert left.disabled_by_sync is True
    account = world.account(user["id"])
    assert account is not None
    assert account["blocked"] is False
    actions = [r["action"] for r in rows]
    assert actions[3:] == [
        "start_deprovision", "block", "revoke_sessions", "revoke_refresh_tokens", "finish_deprovision",
        "unblock", "clear_deprovision",
    ]  # fmt: skip


def test_soft_delete_blocks_and_hard_delete_follows_its_delete_policy(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()

    async def scenario() -> Any:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.graph.soft_delete_user(user["id"])
            await run_worker(indexed, user_item(user["id"], "notification"))
            soft = dict(world.account(user["id"]) or {})
            world.graph.hard_delete_user(user["id"])
            await run_worker(indexed, user_item(user["id"], "notification"))
            return soft, await svc.job().links.get(user["id"])

    soft, link = run(scenario())
    assert soft["blocked"] is True
    assert world.account(user["id"]) is None  # deleted: the mapping's hard_delete policy
    assert link is not None
    assert link.target_deleted is True  # the link stays for the audit trail


def test_revocation_refused_by_the_plan_still_blocks_and_warns(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    world.auth0.set_plan("free")

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.graph.update_user(user["id"], accountEnabled=False)
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await audit_rows(svc)

    rows = run(scenario())
    account = world.account(user["id"])
    assert account is not None
    assert account["blocked"] is True
    warnings = [r for r in rows if r["outcome"] == "warning"]
    assert [r["action"] for r in warnings] == ["revoke_sessions", "revoke_refresh_tokens"]
    assert "Enterprise plan" in warnings[0]["detail"]
    assert rows[-1]["action"] == "finish_deprovision"


def test_a_disabled_user_never_gets_an_account(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user(enabled=False)

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await audit_rows(svc)

    rows = run(scenario())
    assert world.account(user["id"]) is None
    assert [(r["action"], r["outcome"]) for r in rows] == [("skip", "skipped")]


@pytest.mark.parametrize("how", ["email", "app_metadata"])
def test_an_existing_account_is_matched_and_linked_not_duplicated(
    world: World, indexed: dict[str, Any], how: str
) -> None:
    user = world.member_user()
    spec: dict[str, Any] = {"user_id": "legacy-1", "email": user["mail"].lower(), "name": "Legacy"}
    if how == "app_metadata":
        spec = {"user_id": "legacy-1", "email": "other@legacy.example", "app_metadata": {"entra_object_id": user["id"]}}
    world.auth0.add_user(spec)

    async def scenario() -> Any:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await svc.job().links.get(user["id"])

    link = run(scenario())
    assert link is not None
    assert link.target_id == "auth0|legacy-1"
    assert world.auth0.snapshot()["users"] == 1
    legacy = world.auth0.get_user("auth0|legacy-1")
    assert legacy is not None
    assert legacy["name"] == user["displayName"]
    assert legacy["app_metadata"]["entra_object_id"] == user["id"]


def test_ambiguous_and_conflicting_matches_are_never_touched(world: World, indexed: dict[str, Any]) -> None:
    first, second = world.member_user(), world.member_user(skip=1)
    for n in (1, 2):
        world.auth0.add_user(
            {"user_id": f"dup-{n}", "email": f"dup{n}@x.example", "app_metadata": {"entra_object_id": first["id"]}}
        )
    world.auth0.add_user(
        {"user_id": "theirs", "email": second["mail"].lower(), "app_metadata": {"entra_object_id": "another"}}
    )

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(first["id"], "notification"))
            await run_worker(indexed, user_item(second["id"], "notification"))
            return await audit_rows(svc)

    rows = run(scenario())
    assert world.auth0_writes() == {}
    assert world.auth0.snapshot()["users"] == 3
    assert sorted((r["action"], r["outcome"]) for r in rows) == [("ambiguous", "refused"), ("conflict", "refused")]
    assert "auth0|dup-1, auth0|dup-2" in next(r["detail"] for r in rows if r["action"] == "ambiguous")


def test_five_concurrent_deliveries_of_a_joiner_make_one_account_and_one_write_each(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()

    async def scenario() -> None:
        async with services_for(world):
            await asyncio.gather(*(run_worker(indexed, user_item(user["id"], "notification")) for _ in range(5)))

    run(scenario())
    assert world.auth0.snapshot()["users"] == 1
    assert world.auth0_writes() == {"mgmt.users.write.create": 1, "mgmt.users.roles.assign": 1}


def test_a_rate_limit_is_waited_out_until_the_reset_not_hammered(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    world.auth0.limits.configure({"mgmt.*": RateLimit(burst=2, per_second=1.0, retry_after=False)})

    async def scenario() -> float:
        async with services_for(world):
            started = time.monotonic()
            await run_worker(indexed, user_item(user["id"], "notification"))
            return time.monotonic() - started

    elapsed = run(scenario())
    assert world.account(user["id"]) is not None
    limited = [e for e in world.auth0.log.entries() if e.status == 429]
    served = [e for e in world.auth0.log.entries() if e.status < 400]
    # The joiner needs reads, a create and a role assignment: more than the burst, so it waits,
    # and each 429 is followed by a pause until the reset instead of a burst of retries.
    assert len(served) >= 4
    assert len(limited) <= len(served)
    assert elapsed >= 1.0


def test_a_5xx_retries_that_targets_share_with_back_off_and_converges_once(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    world.auth0.faults.configure([FaultRule("mgmt.users.write.create", kind="error", status=503, count=1)])

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))  # completes: the share waits
            assert await waiting(svc) == 1
            retry = dataclasses.replace(user_item(user["id"], "notification"), target="auth0", attempt=1)
            await run_worker(indexed, retry)  # the re-scheduled share, once visible
            return await audit_rows(svc)

    rows = run(scenario())
    assert world.auth0.snapshot()["users"] == 1
    assert world.account(user["id"]) is not None
    retrying = [r for r in rows if r["outcome"] == "retrying"]
    assert len(retrying) == 1 and "503" in retrying[0]["error"] and "runs again in" in retrying[0]["detail"]


def test_a_timeout_is_transient(world: World, indexed: dict[str, Any]) -> None:
    user = world.member_user()
    world.auth0.faults.configure([FaultRule("mgmt.users.get", kind="drop", count=1)])

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await audit_rows(svc)

    rows = run(scenario())
    assert [(r["action"], r["outcome"]) for r in rows] == [("sync", "retrying")]
    assert "TransientError" in rows[0]["error"]


def test_a_worker_dying_between_block_and_revocation_is_completed_on_redelivery(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    uid = f"auth0|{user['id']}"

    async def scenario() -> tuple[Any, Any]:
        async with services_for(world) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            world.auth0.add_sessions(uid, 2)
            world.graph.update_user(user["id"], accountEnabled=False)
            world.auth0.faults.configure([FaultRule("mgmt.users.sessions.delete", kind="error", status=500, count=1)])
            await run_worker(indexed, user_item(user["id"], "notification"))  # the revocation fails: a retry waits
            midway = await svc.job().links.get(user["id"])
            retry = dataclasses.replace(user_item(user["id"], "notification"), target="auth0", attempt=1)
            await run_worker(indexed, retry)
            return midway, await svc.job().links.get(user["id"])

    midway, final = run(scenario())
    assert midway.deprovision is DeprovisionState.PENDING
    assert world.auth0.sessions_of(uid)["sessions"] == 0
    assert final.deprovision is DeprovisionState.DONE
    assert final.disabled_by_sync is True  # the block stays ours, so a re-enable will lift it


def test_a_malformed_work_item_is_audited_and_not_retried(world: World, indexed: dict[str, Any]) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await run_worker(indexed, '{"v": 1, "kind": "user", "id": "not-a-guid", "source": "delta"}')
            await run_worker(indexed, "not json at all")
            return await audit_rows(svc)

    rows = run(scenario())
    assert [(r["action"], r["outcome"]) for r in rows] == [("refuse_work_item", "refused")] * 2
    assert "not a GUID" in rows[0]["detail"] or "not a GUID" in rows[1]["detail"]


def test_the_last_attempt_of_a_targets_share_goes_to_the_poison_queue_with_its_error(
    world: World, indexed: dict[str, Any]
) -> None:
    user = world.member_user()
    world.auth0.faults.configure([FaultRule("mgmt.users.get", kind="error", status=503)])

    async def scenario() -> tuple[list[dict[str, Any]], list[WorkItem]]:
        async with services_for(world) as svc:
            last = dataclasses.replace(user_item(user["id"], "notification"), target="auth0", attempt=4)
            await run_worker(indexed, last)  # the fifth attempt: nothing is re-scheduled after it
            return await audit_rows(svc), await queued(
                svc, names.LANE_POISON_QUEUE
            )  # a notification's share: the lane's

    rows, poison = run(scenario())
    assert [(i.id, i.target, i.attempt) for i in poison] == [(user["id"], "auth0", 5)]
    poisoned = [r for r in rows if r["identity"] == user["id"]]
    assert [(r["action"], r["outcome"]) for r in poisoned] == [("sync", "poisoned")]
    assert "503" in poisoned[0]["error"]
    # No NOTIFY_WEBHOOK_URL in this world: the alert's audit row says it could not be sent.
    alerts = [r for r in rows if r["identity"] == "alerts"]
    assert [(r["action"], r["outcome"]) for r in alerts] == [("alert", "failed")]
    assert "NOTIFY_WEBHOOK_URL is not set" in alerts[0]["error"]


@pytest.mark.parametrize(
    ("mail", "name"),
    [
        ("q\"uote's@x.example", 'Zoë "Q" O\'Brien'),
        ("back\\slash*star@x.example", "Name: with OR spaces"),
        ("a+b(c)@x.example", "Ünïcødé 山田 太郎"),
    ],
)
def test_awkward_emails_and_names_match_exactly(world: World, indexed: dict[str, Any], mail: str, name: str) -> None:
    user = world.member_user()
    world.graph.update_user(user["id"], mail=mail, displayName=name)
    # A look-alike account whose email differs only by the awkward characters must not match.
    world.auth0.add_user({"user_id": "lookalike", "email": "quotes@x.example"})

    async def scenario() -> None:
        async with services_for(world):
            await run_worker(indexed, user_item(user["id"], "notification"))
            await run_worker(indexed, user_item(user["id"], "notification"))

    run(scenario())
    account = world.account(user["id"])
    assert account is not None
    assert account["email"] == mail.lower()
    assert account["name"] == name
    assert world.auth0.get_user("auth0|lookalike")["name"] != name  # type: ignore[index]
    assert world.auth0.snapshot()["users"] == 2


def test_a_group_notification_converges_the_few_members_whose_roles_change_in_its_own_invocation(
    world: World, indexed: dict[str, Any]
) -> None:
    user, outsider = world.member_user(), world.member_user(skip=1)

    async def scenario() -> tuple[list[WorkItem], list[dict[str, Any]]]:
        async with services_for(world) as svc:
            await svc.state.put("delta", "groups", {"link": await svc.source.latest_delta_link("groups")})
            world.graph.add_member(world.group_ids[1], user["id"])
            world.graph.add_member(world.group_ids[3], outsider["id"])  # not in the mapping
            await run_worker(indexed, WorkItem("group", world.group_ids[1], "notification"))
            return await queued(svc), await svc.audit.for_identity(user["id"])

    items, rows = run(scenario())
    assert items == []  # no second hop through the queue
    assert sorted(world.auth0.user_role_names(f"auth0|{user['id']}")) == ["Employee", "Sales Reader", "Sales Writer"]
    assert world.account(outsider["id"]) is None
    assert rows
    assert {r["source"] for r in rows} == {"group"}


def test_a_group_outside_the_mapping_is_ignored_without_a_graph_call(world: World, indexed: dict[str, Any]) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            await svc.delta.watched_groups()  # worked out once (mapped groups and those nested in them)
            world.graph.log.clear()
            await run_worker(indexed, WorkItem("group", world.group_ids[3], "notification"))
            return await audit_rows(svc)

    rows = run(scenario())
    assert world.graph.log.total == 0
    assert [(r["action"], r["outcome"]) for r in rows] == [("group_change", "skipped")]


def test_leaving_scope_is_a_leaver_and_guests_outside_scope_get_nothing(
    azurite: Azurite, tmp_path: Path, indexed: dict[str, Any]
) -> None:
    world = World(azurite, tmp_path, scope="{user_types: [Member], groups: [GROUP0]}").start()
    try:
        direct = set(world.graph.snapshot(full=True)["dump"]["members"][world.group_ids[0]])
        nested = world.transitive_users(world.group_ids[0]) - direct
        user = next(
            u for u in (world.member_user(skip=n) for n in range(5)) if u["id"] in direct and u["id"] not in nested
        )
        guest = world.graph.create_user(
            displayName="Guest Person", mail="guest@partner.example", userType="Guest", accountEnabled=True,
            userPrincipalName="guest_partner.example#EXT#@sandbox.onmicrosoft.com",
        )  # fmt: skip
        world.graph.add_member(world.group_ids[0], guest["id"])

        async def scenario() -> Any:
            async with services_for(world) as svc:
                await run_worker(indexed, user_item(user["id"], "notification"))
                world.graph.remove_member(world.group_ids[0], user["id"])
                await run_worker(indexed, user_item(user["id"], "notification"))
                await run_worker(indexed, user_item(guest["id"], "notification"))
                return await svc.job().links.get(user["id"])

        link = run(scenario())
        account = world.account(user["id"])
        assert account is not None
        assert account["blocked"] is True  # out of scope: the deprovision policy applies
        assert link.deprovision is DeprovisionState.DONE
        assert world.account(guest["id"]) is None
    finally:
        world.stop()


def test_one_correlation_id_runs_from_the_work_item_to_the_logs_and_audit_rows(
    world: World, indexed: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    user = world.member_user()
    item = user_item(user["id"], "notification", correlation_id="cid-from-the-webhook-0001")

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world) as svc:
            caplog.clear()  # what start-up logged (the guard's limits) is not the work item's
            with caplog.at_level("INFO", logger="entra_sync"):
                await run_worker(indexed, item)
            return await audit_rows(svc)

    rows = run(scenario())
    assert {r["correlation_id"] for r in rows} == {"cid-from-the-webhook-0001"}
    lines = [r for r in caplog.records if r.name.startswith("entra_sync")]
    assert lines
    assert all(r.getMessage().startswith("cid=cid-from-the-webhook-0001 ") for r in lines)
    assert all(getattr(r, "correlation_id", None) == "cid-from-the-webhook-0001" for r in lines)


def test_a_create_that_loses_the_race_converges_the_winners_account(world: World, indexed: dict[str, Any]) -> None:
    """Without the lease (say it expired under a stalled worker), the deterministic user_id still
    makes the second create a 409, and the loser converges the winner's account instead."""
    from shared.targets.auth0.target import Auth0Target

    user = world.member_user()
    world.auth0.add_user({"user_id": user["id"], "email": user["mail"].lower(), "name": "Made by the other worker"})

    class StaleRead(Auth0Target):
        stale = True

        async def get(self, user_id: str) -> dict[str, Any] | None:
            if self.stale:  # the read happened before the other worker's create
                self.stale = False
                return None
            return await super().get(user_id)

        async def by_email(self, email: str) -> list[dict[str, Any]]:
            return []  # likewise before the create

    async def scenario() -> list[dict[str, Any]]:
        from shared.mapping.load import load_mapping
        from shared.targets.auth0.client import auth0_client

        assert world.settings.auth0 is not None
        section = load_mapping(world.settings.mapping_file).target("auth0")
        stale = StaleRead(section, auth0_client(world.settings.auth0))
        async with services_for(world, targets={"auth0": stale}) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))
            return await audit_rows(svc)

    rows = run(scenario())
    assert world.auth0.snapshot()["users"] == 1
    account = world.account(user["id"])
    assert account is not None
    assert account["name"] == user["displayName"]
    assert [r["action"] for r in rows] == ["link", "update", "assign_roles"]


def test_the_loser_of_a_create_race_reads_the_account_instead_of_trusting_the_winners_link(
    world: World, indexed: dict[str, Any]
) -> None:
    """The winner created the account and remembered it in its link; an administrator has edited the
    account since. The loser, whose reads came before the winner's create, meets a 409: it must read
    the account, not plan from the winner's memory (which says all is in sync)."""
    from shared.targets.auth0.target import Auth0Target

    user = world.member_user()
    uid = f"auth0|{user['id']}"

    class StaleRead(Auth0Target):
        loser = False  # the loser's reads come before the winner's create and link
        winners_link: Link | None = None
        links: Any = None

        async def get(self, user_id: str) -> dict[str, Any] | None:
            if self.winners_link is not None:
                await self.links.put(self.winners_link)  # the winner's link lands meanwhile
                self.winners_link = None
                return None
            return await super().get(user_id)

        async def find(self, matcher: str, key: str) -> list[Account]:
            return [] if self.loser else await super().find(matcher, key)

    async def scenario() -> list[dict[str, Any]]:
        from shared.mapping.load import load_mapping
        from shared.targets.auth0.client import auth0_client

        assert world.settings.auth0 is not None
        section = load_mapping(world.settings.mapping_file).target("auth0")
        target = StaleRead(section, auth0_client(world.settings.auth0))
        async with services_for(world, targets={"auth0": target}) as svc:
            await run_worker(indexed, user_item(user["id"], "notification"))  # the winner's work
            links = svc.job().links
            link = await links.get(user["id"])
            assert link is not None and link.applied is not None  # remembered: in sync
            await links.table.delete_entity(encode_key(link.target), encode_key(user["id"]))  # not yet there
            world.grant_role_by_hand(uid, "Billing Admin")  # unmanaged: stays as it is
            by_hand = {"Authorization": f"Bearer {world.auth0.static_token}"}
            httpx.patch(f"{world.auth0.base_url}/users/{uid}", headers=by_hand, json={"name": "Edited by hand"})
            target.links, target.winners_link, target.loser = links, link, True
            before = len(await audit_rows(svc))
            await run_worker(indexed, user_item(user["id"], "notification"))  # the loser
            return (await audit_rows(svc))[before:]

    rows = run(scenario())
    assert world.auth0.snapshot()["users"] == 1
    account = world.account(user["id"])
    assert account is not None and account["name"] == user["displayName"]  # read, and repaired
    assert [r["action"] for r in rows] == ["update"]
    assert sorted(world.auth0.user_role_names(uid)) == ["Billing Admin", "Employee"]
