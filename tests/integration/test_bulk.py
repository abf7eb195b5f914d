"""The import-job backfill: ``entra-sync backfill --import-jobs`` against the emulators and Azurite."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.auth0 import Auth0Emulator
from sandbox.azurite import Azurite
from sandbox.mirror import mirror
from shared import bootstrap
from shared.cli import main
from shared.mapping.load import load_mapping
from shared.targets.auth0.bulk import ImportBackfill, pack_files
from tests.integration.world import World, open_services, queued, run_worker
from tests.support import sandbox_env


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(azurite, tmp_path, users=40, groups=6).start()
    env = sandbox_env(
        storage=azurite.connection_string,
        graph_base_url=w.graph.base_url,
        auth0_base_url=w.auth0.base_url,
        SYNC_MAPPING_FILE=str(tmp_path / "mapping.yaml"),
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    async def empty() -> None:  # what earlier tests left on the shared Azurite is not this test's
        svc = await open_services(w)
        await svc.aclose()

    asyncio.run(empty())
    try:
        yield w
    finally:
        w.stop()


def expected_accounts(world: World) -> dict[str, dict[str, Any]]:
    """What a finished sync leaves in Auth0 for this tenant: sandbox.mirror run on a spare emulator."""
    with Auth0Emulator() as spare:
        mirror(world.graph, spare, load_mapping(world.settings.mapping_file))
        users = spare.snapshot(dump=True)["dump"]["users"]
        return {u["user_id"]: {**u, "roles": sorted(spare.user_role_names(u["user_id"]))} for u in users}


def test_import_jobs_create_every_in_scope_joiner_as_the_worker_would(
    world: World, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    expected = expected_accounts(world)
    legacy = world.member_user()  # already has an Auth0 account under its email: must be linked, not duplicated
    world.auth0.add_user({"user_id": "legacy-1", "email": legacy["mail"].lower(), "name": "Legacy"})
    caplog.set_level(logging.DEBUG)

    assert main(["backfill", "--import-jobs"]) == 0
    out = capsys.readouterr().out
    assert f"inserted {len(expected) - 1}, existing 1" in out
    assert "failed 0" in out
    assert "handed to the worker 1" in out

    for user_id, want in expected.items():
        if user_id == f"auth0|{legacy['id']}":
            assert world.auth0.get_user(user_id) is None
            continue
        got = world.auth0.get_user(user_id)
        assert got is not None, user_id
        for key in ("email", "name", "given_name", "family_name", "app_metadata", "user_metadata", "blocked"):
            assert got.get(key) == want.get(key), (user_id, key)
        assert sorted(world.auth0.user_role_names(user_id)) == want["roles"]
    counts = world.auth0.log.counts()
    assert counts["mgmt.jobs.users_imports"] == 1
    assert "mgmt.users.write.create" not in counts  # nothing created one by one
    assert counts["mgmt.roles.users.assign"] == len({r for w in expected.values() for r in w["roles"]})
    logged = caplog.text.lower()
    assert '"password"' not in logged
    assert "'password'" not in logged

    async def state() -> tuple[int, list[str]]:
        svc = bootstrap.init(world.settings)
        try:
            links = [link async for link in svc.job().links.all()]
            items = await queued(svc)
            return len(links), [i.id for i in items]
        finally:
            await svc.aclose()

    links, handed = asyncio.run(state())
    assert links == len(expected) - 1
    assert handed == [legacy["id"]]


def test_files_stay_under_the_limit_and_hold_no_password() -> None:
    records = [
        {"user_id": f"{n:08d}-0000-0000-0000-000000000000", "email": f"user{n}@example.com", "name": "x" * 300}
        for n in range(50)
    ]
    files = pack_files(records, max_bytes=2_000)
    assert len(files) > 2
    assert [i for _, ids in files for i in ids] == [r["user_id"] for r in records]
    for data, ids in files:
        assert len(data) <= 2_000
        rows = json.loads(data)
        assert [r["user_id"] for r in rows] == ids
        assert all("password" not in r for r in rows)
    with pytest.raises(ValueError, match="larger than"):
        pack_files([{"user_id": "a", "name": "x" * 5_000}], max_bytes=2_000)


def test_many_small_files_run_two_jobs_at_a_time_and_the_worker_finds_nothing_to_do(
    world: World, indexed: dict[str, Any]
) -> None:
    expected = expected_accounts(world)

    async def scenario() -> tuple[Any, dict[str, int]]:
        svc = await open_services(world)
        try:
            bulk = ImportBackfill(
                source=svc.source, job=svc.job(), state=svc.state, leases=svc.leases, queue=svc.queue,
                audit=svc.audit, max_file_bytes=3_000, poll_s=0.02,
            )  # fmt: skip
            result = await bulk.run()
            world.auth0.log.clear()
            some = sorted(expected)[0].removeprefix("auth0|")
            from shared.core.work import user_item

            await run_worker(indexed, user_item(some, "manual"))
            return result, world.auth0_writes()
        finally:
            await svc.aclose()

    result, writes = asyncio.run(scenario())
    assert result.files > 2
    assert result.inserted == len(expected)
    assert result.failed == 0
    assert world.auth0.log.counts().get("mgmt.jobs.users_imports", 0) == 0  # cleared before the replay
    assert writes == {}  # the worker's replay of an imported user writes nothing: same account, same roles
    assert world.graph.snapshot()["users"] >= len(expected)
