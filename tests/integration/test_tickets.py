"""Reconciliation findings that policy does not repair, as tickets in the sandbox's ServiceNow
(one per finding class) and Jira (one per identity), across three real reconciliation runs of
the app built from a mapping file with an ``alerts:`` section: opened, updated, closed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.azurite import Azurite
from sandbox.mirror import mirror
from sandbox.tickets import JiraEmulator, ServiceNowEmulator
from shared.errors import PermanentError
from shared.mapping.load import load_mapping
from tests.integration.world import World, services_for

ALERTS = """alerts:
  channels:
    itsm: {kind: servicenow, url_setting: ALERTS_SNOW_URL, user_setting: ALERTS_SNOW_USER,
           password_setting: ALERTS_SNOW_PASSWORD}
    jira: {kind: jira, url_setting: ALERTS_JIRA_URL, email_setting: ALERTS_JIRA_EMAIL,
           token_setting: ALERTS_JIRA_TOKEN, project: IAM}
  routes:
    - {kinds: [findings], channels: [itsm]}
    - {kinds: [findings], channels: [jira], tickets: identity}
"""


@pytest.fixture
def trackers() -> Iterator[tuple[ServiceNowEmulator, JiraEmulator]]:
    snow, jira = ServiceNowEmulator().start(), JiraEmulator().start()
    try:
        yield snow, jira  # type: ignore[misc]
    finally:
        snow.stop()
        jira.stop()


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, trackers: tuple[ServiceNowEmulator, JiraEmulator]) -> Iterator[World]:
    snow, jira = trackers
    env = {
        "ALERTS_SNOW_URL": snow.origin, "ALERTS_SNOW_USER": snow.user, "ALERTS_SNOW_PASSWORD": snow.password,
        "ALERTS_JIRA_URL": jira.origin, "ALERTS_JIRA_EMAIL": jira.email, "ALERTS_JIRA_TOKEN": jira.token,
    }  # fmt: skip
    w = World(azurite, tmp_path, users=24, groups=4, other_targets="", mapping_extra=ALERTS, extra_env=env).start()
    try:
        yield w
    finally:
        w.stop()


def delete(world: World, user_id: str) -> None:
    answer = httpx.delete(
        f"{world.auth0.base_url}/users/{user_id}", headers={"Authorization": f"Bearer {world.auth0.static_token}"}
    )
    answer.raise_for_status()


def stale(world: World, user_id: str) -> None:
    """The user's account has not signed in since 2020."""
    roles = world.auth0.user_role_names(f"auth0|{user_id}")
    delete(world, f"auth0|{user_id}")
    world.auth0.add_user({"user_id": user_id, "email": f"{user_id}@old.example", "last_login": "2020-01-01T00:00:00Z",
                          "app_metadata": {"entra_object_id": user_id}, "roles": roles})  # fmt: skip


def members_of(world: World) -> list[str]:
    dump = world.graph.snapshot(full=True)["dump"]
    return [u["id"] for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"]


def test_findings_open_update_and_close_tickets_across_three_runs(
    world: World, trackers: tuple[ServiceNowEmulator, JiraEmulator]
) -> None:
    snow, jira = trackers
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    first_stale, twin, second_stale = members_of(world)[:3]
    stale(world, first_stale)
    delete(world, f"auth0|{twin}")
    for n in (1, 2):
        world.auth0.add_user(
            {"user_id": f"twin-{n}", "email": f"twin{n}@x.example", "app_metadata": {"entra_object_id": twin}}
        )

    def open_snow() -> dict[str, dict[str, Any]]:
        return {t["correlation_id"]: t for t in snow.tickets() if t["active"] == "true"}

    def jira_by_status() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for issue in jira.tickets():
            out.setdefault(issue["status"], []).append(issue["summary"])
        return out

    async def reconcile() -> dict[str, int]:
        async with services_for(world, keep_storage=True, reports=False) as svc:
            summary, _ = await svc.reconcilers["auth0"].run("dry-run")
            return summary.counts

    async def first_run() -> dict[str, int]:
        async with services_for(world, reports=False) as svc:  # empty storage, then the first run
            summary, _ = await svc.reconcilers["auth0"].run("dry-run")
            return summary.counts

    counts = asyncio.run(first_run())
    assert counts["stale"] == 1 and counts["ambiguous"] == 1
    run1 = open_snow()
    assert set(run1) == {"auth0:stale", "auth0:ambiguous"}
    assert run1["auth0:stale"]["short_description"] == "entra-sync: 1 stale finding(s) in auth0"
    assert first_stale in run1["auth0:stale"]["description"]
    assert len(jira.tickets()) == 2 and jira_by_status().keys() == {"To Do"}

    stale(world, second_stale)
    asyncio.run(reconcile())
    run2 = open_snow()
    assert len(snow.tickets()) == 2  # updated, not duplicated
    assert run2["auth0:stale"]["sys_id"] == run1["auth0:stale"]["sys_id"]
    assert run2["auth0:stale"]["short_description"] == "entra-sync: 2 stale finding(s) in auth0"
    assert second_stale in run2["auth0:stale"]["description"]
    assert run2["auth0:stale"]["work_notes_log"] == ["entra-sync: still found"]
    assert len(jira.tickets()) == 3  # one more identity, one more issue; the two others updated

    for n in (1, 2):  # the ambiguity is resolved by hand: the twins are gone
        delete(world, f"auth0|twin-{n}")
    asyncio.run(reconcile())
    run3 = open_snow()
    assert set(run3) == {"auth0:stale"}
    closed = next(t for t in snow.tickets() if t["correlation_id"] == "auth0:ambiguous")
    assert (closed["state"], closed["active"]) == ("6", "false")
    assert "no longer finds this" in closed["close_notes"]
    done = jira_by_status()
    assert len(done["Done"]) == 1 and "ambiguous" in done["Done"][0]
    assert len(done["To Do"]) == 2


def test_a_mapping_group_that_is_gone_opens_a_ticket_and_its_return_closes_it(
    world: World, trackers: tuple[ServiceNowEmulator, JiraEmulator]
) -> None:
    snow, _ = trackers
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    stale(world, members_of(world)[0])
    gone = world.group_ids[2]
    name = next(g["displayName"] for g in world.graph.snapshot(full=True)["dump"]["groups"] if g["id"] == gone)
    world.graph.delete_group(gone)

    async def reconcile(fresh: bool) -> str:
        async with services_for(world, keep_storage=not fresh, reports=False) as svc:
            try:
                summary, _ = await svc.reconcilers["auth0"].run("dry-run")
            except PermanentError as exc:
                return str(exc)
            return summary.status

    assert "names groups Entra ID cannot give" in asyncio.run(reconcile(fresh=True))
    (ticket,) = snow.tickets()  # only what the failed run can speak for: no stale ticket from it
    assert ticket["correlation_id"] == "auth0:unknown_group" and gone in ticket["description"]
    assert "roles[2].group" in ticket["description"]

    world.graph.create_group(id=gone, displayName=name)
    assert asyncio.run(reconcile(fresh=False)) == "completed"
    tickets = {t["correlation_id"]: t for t in snow.tickets()}
    assert tickets["auth0:unknown_group"]["active"] == "false"  # resolved: the group is back
    assert tickets["auth0:stale"]["active"] == "true"
