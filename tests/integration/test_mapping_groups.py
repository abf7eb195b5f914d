"""The groups a mapping names, checked against the tenant through GraphSource and the Graph emulator:
a group that does not exist is reported naming the mapping entry, never met as a bare 404."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.azurite import Azurite
from sandbox.host import FunctionsHost
from sandbox.mapping import sandbox_mapping, three_role_grants
from shared import bootstrap
from shared.errors import PermanentError
from shared.sources.graph.groups import mapping_group_problems
from shared.sources.graph.source import GroupNotFound
from tests.integration.world import World, open_services
from tests.support import sandbox_env

MISSING = "7e57a11d-0000-4000-8000-00000000dead"  # a well-formed object id no tenant group has


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path) -> Iterator[World]:
    w = World(azurite, tmp_path, users=20, groups=4).start()
    try:
        yield w
    finally:
        w.stop()


def use_mapping(world: World, grants: list[tuple[str, list[str]]], scope: str = "{user_types: [Member]}") -> Path:
    path = world.tmp_path / f"mapping-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(sandbox_mapping(grants, scope=scope))
    world.configure("http://127.0.0.1:9/api", path)
    return path


def with_source(world: World, work: Any) -> Any:
    """Run ``work(source)`` against the world's Graph with freshly built services (no storage)."""

    async def scenario() -> Any:
        svc = bootstrap.init(world.settings)
        try:
            return await work(svc.source)
        finally:
            await svc.aclose()

    return asyncio.run(scenario())


def test_every_mapped_group_of_the_tenant_is_found_reading_each_group_once(world: World) -> None:
    staff = world.group_ids[0]
    use_mapping(world, three_role_grants(world.group_ids), scope=f"{{user_types: [Member], groups: [{staff}]}}")
    world.graph.log.clear()

    problems = with_source(world, lambda source: mapping_group_problems(source, source.mapping))

    assert problems == []
    reads = [e for e in world.graph.log.entries() if e.route == "groups.get"]
    assert sorted(e.path.rsplit("/", 1)[-1] for e in reads) == sorted(world.group_ids[:3])  # staff once, not twice


def test_a_group_the_tenant_does_not_have_is_reported_for_each_entry_that_names_it(world: World) -> None:
    deleted = world.group_ids[1]
    world.graph.delete_group(deleted)
    use_mapping(
        world,
        [(world.group_ids[0], ["Employee"]), (MISSING, ["Sales Reader"]), (deleted, ["Sales Writer"])],
        scope=f"{{user_types: [Member], groups: [{MISSING}]}}",
    )

    problems = with_source(world, lambda source: mapping_group_problems(source, source.mapping))

    gone = "does not exist in Entra ID (404); use the object id of an existing group"
    assert problems == [
        f"scope.groups[0]: group {MISSING} {gone}",
        f"roles[1].group: group {MISSING} {gone}",
        f"roles[2].group: group {deleted} {gone}",
    ]


def test_a_membership_read_of_a_missing_group_is_a_permanent_error_naming_the_group_and_the_entry(
    world: World,
) -> None:
    path = use_mapping(world, [(world.group_ids[0], ["Employee"]), (MISSING, ["Sales Reader"])])

    async def read(source: Any) -> None:
        await source.relevant_memberships()

    with pytest.raises(GroupNotFound) as info:
        with_source(world, read)

    error = info.value
    assert isinstance(error, PermanentError)
    assert error.group_id == MISSING
    assert error.entries == ["roles[1].group"]
    assert str(error).startswith(
        f"group {MISSING}, named by roles[1].group in {path}, does not exist in Entra ID "
        "(Graph groups.transitiveMembers: 404)"
    )


def test_subscriptions_renew_logs_and_audits_each_missing_group_and_still_renews(
    world: World, indexed: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    host = FunctionsHost.from_functions(
        [indexed["graph_webhook"], indexed["graph_lifecycle"], indexed["subscriptions_renew"]],
        storage_connection=world.azurite.connection_string,
        app_settings=sandbox_env(storage=world.azurite.connection_string),
        on_stop=lambda: bootstrap.app().aclose(),
    ).start()
    try:
        path = world.tmp_path / "mapping-missing.yaml"
        path.write_text(sandbox_mapping([(world.group_ids[0], ["Employee"]), (MISSING, ["Sales Reader"])]))
        world.configure(host.base_url, path)
        host.run_coroutine(open_services(world))
        with caplog.at_level(logging.ERROR, logger="entra_sync.mapping"):
            host.run_timer("subscriptions_renew")
        rows = host.run_coroutine(bootstrap.app().audit.for_identity("mapping"))
    finally:
        host.stop()

    assert sorted(s["resource"] for s in world.graph.snapshot(full=True)["dump"]["subscriptions"]) == [
        "groups",
        "users",
    ]
    problem = (
        f"roles[1].group: group {MISSING} does not exist in Entra ID (404); use the object id of an existing group"
    )
    assert [r.getMessage() for r in caplog.records if r.name == "entra_sync.mapping"] == [
        f"mapping file {path}: {problem}"
    ]
    assert [(r["action"], r["outcome"], r["source_ref"], r["detail"]) for r in rows] == [
        ("check_mapping_groups", "failed", str(path), problem)
    ]
