"""Many sources: each target is fed by exactly one source, and a work item reaches only the targets
its identity's source feeds.

Through the real composition root and the indexed Functions: one version 2 file with two sources,
``entra`` (Graph on the emulator) feeding Auth0, and ``hr`` (an in-memory source registered through
a test registry of source kinds, as tests add the in-memory target) feeding the in-memory target
``memory:crm``. Storage is Azurite.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from sandbox.azurite import Azurite
from sandbox.memory import MemoryKind, MemorySourceKind, kinds_with_memory, source_kinds_with_memory
from shared import bootstrap
from shared.core.work import WorkItem, user_item
from shared.mapping.load import load_mapping, parse_mapping
from shared.mapping.model import MappingError
from shared.settings import Settings, SettingsError
from shared.sources.scim_inbox import factory
from tests.integration.world import World, audit_rows, empty_storage, queued, run_worker, services_for

HR = "hr"
CRM = """\
  memory:crm:
    source: hr
    attributes:
      - {source: mail, target: email, transforms: [trim, lower]}
      - {source: displayName, target: name}
      - {source: department, target: department}
    deprovision: {action: disable}
"""
SOURCES = "sources:\n  entra: {}\n  hr: {kind: memory}\n"
PERSON = "e1111111-2222-4333-8444-555555555555"


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, other_targets=CRM, mapping_extra=SOURCES).start()
    try:
        yield w
    finally:
        w.stop()


def options() -> tuple[MemoryKind, MemorySourceKind, dict[str, Any]]:
    targets, sources = MemoryKind(), MemorySourceKind()
    return targets, sources, {"kinds": kinds_with_memory(targets), "source_kinds": source_kinds_with_memory(sources)}


def hr_item(person: str, **extra: Any) -> WorkItem:
    """What an inbound source enqueues: a push of one of its identities, naming the source."""
    return dataclasses.replace(user_item(person, "push"), identity_source=HR, **extra)


def test_a_work_item_of_the_second_source_reaches_only_the_target_it_feeds_and_is_audited_as_its(
    world: World, indexed: dict[str, Any]
) -> None:
    targets, sources, overrides = options()

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world, **overrides) as svc:
            assert {name: job.section.source for name, job in svc.jobs.items()} == {"auth0": "entra", "memory:crm": HR}
            assert sorted(svc.sources) == ["entra", HR] and svc.source is svc.sources["entra"]
            sources.built[HR].add(PERSON, mail=" Ada@HR.example ", displayName="Ada", department="People")
            await run_worker(indexed, hr_item(PERSON))
            assert svc.source is not None and svc.source.calls == {}  # Entra is not read for an hr identity
            link = await svc.jobs["memory:crm"].links.get(PERSON)
            assert link is not None and link.source == HR and link.target_id == f"mem|{PERSON}"
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    crm = targets.built["memory:crm"]
    assert crm.data[f"mem|{PERSON}"]["email"] == "ada@hr.example"
    assert crm.data[f"mem|{PERSON}"]["department"] == "People"
    assert world.auth0_writes() == {}  # Auth0 is fed by entra: the hr identity never reaches it
    mine = [r for r in rows if r["identity"] == PERSON]
    assert {r["target"] for r in mine} == {"memory:crm"}
    assert [r["action"] for r in mine if r["outcome"] == "ok"][:1] == ["create"]
    assert {r["identity_source"] for r in mine} == {HR}


def test_an_entra_item_reaches_only_the_targets_entra_feeds_with_its_legacy_form(
    world: World, indexed: dict[str, Any]
) -> None:
    targets, _, overrides = options()
    user = world.member_user()

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world, **overrides) as svc:
            item = user_item(user["id"], "notification")
            assert '"identity_source"' not in item.to_json()  # an Entra item reads as it always did
            await run_worker(indexed, item)
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    account = world.account(user["id"])
    assert account is not None and account["email"] == user["mail"].strip().lower()
    assert targets.built["memory:crm"].data == {}  # fed by hr: an Entra user never reaches it
    mine = [r for r in rows if r["identity"] == user["id"]]
    assert {r["target"] for r in mine} == {"auth0"}
    assert {r["identity_source"] for r in mine} == {"entra"}


def test_an_item_of_a_source_the_mapping_does_not_name_is_refused_and_audited(
    world: World, indexed: dict[str, Any]
) -> None:
    targets, _, overrides = options()

    async def scenario() -> list[dict[str, Any]]:
        async with services_for(world, **overrides) as svc:
            stray = dataclasses.replace(user_item(PERSON, "push"), identity_source="payroll")
            await run_worker(indexed, stray)  # completes: nothing to retry
            wrong = hr_item(PERSON, target="auth0")  # a target another source feeds
            await run_worker(indexed, wrong)
            return await audit_rows(svc)

    rows = asyncio.run(scenario())
    assert world.auth0_writes() == {} and targets.built["memory:crm"].data == {}
    refused = [r for r in rows if r["identity"] == PERSON]
    assert [(r["identity_source"], r["outcome"]) for r in refused] == [("payroll", "refused"), (HR, "skipped")]
    assert "names no source 'payroll'" in refused[0]["detail"]
    assert "no target 'auth0' fed by the source 'hr'" in refused[1]["detail"]


def test_a_mapping_without_sources_loads_as_the_one_entra_source() -> None:
    legacy = load_mapping(Path(__file__).parents[2] / "mapping.example.yaml")
    assert list(legacy.sources) == ["entra"] and legacy.sources["entra"].kind == "entra"
    assert {s.source for s in legacy.targets.values()} == {"entra"}


def check(text: str) -> list[str]:
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, kinds=kinds_with_memory(), source_kinds=source_kinds_with_memory())
    return caught.value.problems


def two_sources(attribute: str, source: str = "hr") -> str:
    return (
        f"version: 2\n{SOURCES}targets:\n  memory:crm:\n    source: {source}\n    attributes:\n"
        f"      - {{source: {attribute}, target: title}}\n"
    )


def test_an_attribute_path_the_targets_source_does_not_have_is_a_check_error_with_the_hint() -> None:
    assert check(two_sources("mial")) == [
        "targets.memory:crm.attributes[0].source: memory source: 'mial' is not a field of a memory source; "
        "did you mean 'mail'?"
    ]
    # jobTitle is a Graph user property: fine for a target entra feeds, not for one hr feeds.
    assert parse_mapping(
        two_sources("jobTitle", "entra"), kinds=kinds_with_memory(), source_kinds=source_kinds_with_memory()
    ).targets
    assert check(two_sources("jobTitle"))[0].startswith("targets.memory:crm.attributes[0].source: memory source:")


def test_an_unknown_source_name_is_refused_at_the_mapping_check() -> None:
    assert check(two_sources("mail", "payroll")) == [
        "targets.memory:crm.source: 'payroll' is not a source the file names under sources (it names: entra, hr)"
    ]


def test_reconciliation_and_backfill_of_a_target_read_the_source_that_feeds_it(
    world: World, indexed: dict[str, Any]
) -> None:
    targets, sources, overrides = options()
    synced, missing, other = (f"{n}2222222-2222-4333-8444-555555555555" for n in "abc")

    async def scenario() -> tuple[Any, list[WorkItem], Any]:
        async with services_for(world, **overrides) as svc:
            hr = sources.built[HR]
            hr.add(synced, mail="sy@hr.example", displayName="Sy", department="People")
            await run_worker(indexed, hr_item(synced))
            hr.add(missing, mail="mi@hr.example", displayName="Mi", department="People")
            run, _ = await svc.reconcilers["memory:crm"].run("apply")
            items = await queued(svc)
            hr.add(other, mail="ot@hr.example", displayName="Ot", department="People")
            done = await svc.backfill("memory:crm").run()
            return run, items, done

    run, items, done = asyncio.run(scenario())
    assert run.counts.get("missing") == 1 and run.enqueued == 1  # the hr identity not synced yet, and only it
    assert [(i.id, i.identity_source) for i in items] == [(missing, HR)]  # handed back to its own source
    crm = targets.built["memory:crm"]
    assert f"mem|{other}" in crm.data and done.identities == 3  # the backfill read hr's three identities
    assert world.auth0_writes() == {}


def test_the_entra_kind_is_the_tenants_one_source_named_entra() -> None:
    text = "version: 2\nsources:\n  corp: {kind: entra}\ntargets:\n  memory:crm:\n    source: corp\n"
    text += "    attributes:\n      - {source: mail, target: email}\n"
    assert check(text) == ["sources.corp: the Entra ID source is the tenant's own: name it entra"]


INBOUND_ONLY = """\
version: 2
scope: {}
sources:
  hr-push: {kind: scim_inbox}
targets:
  auth0:
    source: hr-push
    connection: Username-Password-Authentication
    attributes:
      - {source: emails.work, target: email, transforms: [trim, lower]}
      - {source: displayName, target: name}
    deprovision: {action: block, hard_delete: delete}
"""
GRAPH_ONLY_SETTINGS = ("GRAPH_CLIENT_STATE", "GRAPH_NOTIFICATION_URL", "GRAPH_LIFECYCLE_URL")


def test_a_tenant_that_grants_no_graph_permission_runs_on_an_inbound_source_alone(
    world: World, tmp_path: Path, indexed: dict[str, Any]
) -> None:
    """No GRAPH_* setting, no Entra source: the app starts, nothing of Entra's is built, and Graph's
    webhook refuses what it is sent; a mapping that does read Entra ID names the settings it lacks."""
    path = tmp_path / "inbound.yaml"
    path.write_text(INBOUND_ONLY)
    env = world.environment(SYNC_MAPPING_FILE=str(path), SCIM_INBOX_HR_PUSH_TOKEN="t" * 40)
    for name in GRAPH_ONLY_SETTINGS:
        env.pop(name, None)

    async def scenario() -> tuple[Any, int]:
        svc = bootstrap.init(Settings.from_env(env))
        await empty_storage(svc)
        try:
            hook = await indexed["graph_webhook"].get_user_function()(
                func.HttpRequest("POST", "http://localhost/api/graph_webhook", body=b'{"value": []}', headers={})
            )
            return svc, hook.status_code
        finally:
            await svc.aclose()

    svc, status = asyncio.run(scenario())
    assert sorted(svc.sources) == ["hr-push"] and svc.source is None and svc.subscriptions is None
    assert status == 404
    _, _, kinds = options()
    with pytest.raises(SettingsError) as refused:  # the world's file reads Entra ID
        bootstrap.init(Settings.from_env({k: v for k, v in world.env.items() if k != "GRAPH_CLIENT_STATE"}), **kinds)
    assert "GRAPH_CLIENT_STATE is required" in str(refused.value)


def test_the_endpoint_serves_the_current_apps_inbound_sources_after_a_new_start(world: World, tmp_path: Path) -> None:
    """The HTTP function's inbound sources are the composition root's: built again for a new app
    (a restart with another mapping or token), never a stale first one."""
    path = tmp_path / "inbound.yaml"
    path.write_text(INBOUND_ONLY)
    env = world.environment(SYNC_MAPPING_FILE=str(path), SCIM_INBOX_HR_PUSH_TOKEN="t" * 40)
    seen = []
    for _ in range(2):
        svc = bootstrap.init(Settings.from_env(env))
        box = factory.inbox()
        assert box.sources["hr-push"] is svc.sources["hr-push"]
        assert box.endpoints.endpoints["hr-push"] is svc.sources["hr-push"].endpoint
        seen.append(box)
    assert seen[0] is not seen[1]
