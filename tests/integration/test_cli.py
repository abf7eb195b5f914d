"""The operator CLI against the sandbox: reconcile, runs, report, approve, backfill, audit."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest
from azure.storage.queue import TextBase64EncodePolicy

from sandbox.azurite import DEV_ACCOUNT, DEV_KEY, Azurite
from sandbox.mirror import mirror
from sandbox.server import FaultRule
from shared.cli import main
from shared.core.work import WorkItem, user_item
from shared.mapping.load import load_mapping
from tests.integration.world import World, audit_rows, for_the_cli, queued, run_worker, services_for
from tests.support import sandbox_env


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    extra = "reconcile: {remediate: [missing, orphaned], max_deprovisions: 2}"
    with for_the_cli(World(azurite, tmp_path, users=30, groups=6, mapping_extra=extra), monkeypatch) as w:
        yield w


def test_a_dry_run_then_its_report_in_every_format(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    someone = next(
        u for u in world.graph.snapshot(full=True)["dump"]["users"] if u["accountEnabled"] and u["userType"] == "Member"
    )
    world.graph.update_user(someone["id"], displayName="Renamed <b>In</b> Entra")

    assert main(["reconcile", "--dry-run"]) == 0
    out = capsys.readouterr().out
    run_id = re.search(r"run (\S+) of auth0 \(dry-run\): completed", out).group(1)  # type: ignore[union-attr]
    assert "attribute_mismatch   1" in out

    assert main(["runs"]) == 0
    assert run_id in capsys.readouterr().out

    assert main(["report", run_id, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["counts"] == {"attribute_mismatch": 1}
    assert report["records"][0]["entra_id"] == someone["id"]

    assert main(["report", run_id, "--format", "csv"]) == 0
    assert "Renamed <b>In</b> Entra" in capsys.readouterr().out

    html = tmp_path / "reports" / "nightly" / "report.html"  # folders that are not there yet
    assert main(["report", run_id, "--format", "html", "--output", str(html)]) == 0
    page = html.read_text()
    assert "Renamed &lt;b&gt;In&lt;/b&gt; Entra" in page
    assert "<b>In</b>" not in page


def test_a_held_run_exits_3_and_approve_releases_it(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    members = [
        u for u in world.graph.snapshot(full=True)["dump"]["users"] if u["accountEnabled"] and u["userType"] == "Member"
    ]
    for user in members[:4]:
        world.graph.update_user(user["id"], accountEnabled=False)

    assert main(["reconcile", "--apply"]) == 3
    out = capsys.readouterr().out
    run_id = re.search(r"run (\S+) of auth0 \(apply\): held", out).group(1)  # type: ignore[union-attr]
    assert "CIRCUIT BREAKER: 4 accounts would be blocked or deleted; the limit is 2" in out
    assert f"entra-sync approve {run_id}" in out
    # status says what is held and how to release it, and exits 3 (held) like the run did
    assert main(["status"]) == 3
    assert f"run {run_id} of auth0: 4 deprovisions held" in capsys.readouterr().out

    assert main(["approve", run_id, "--by", "test-operator"]) == 0
    assert "approved by test-operator: 4 held deprovisions queued" in capsys.readouterr().out
    assert main(["report", run_id, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["approved_by"] == "test-operator"
    assert main(["approve", run_id]) == 1  # already approved
    assert "not held" in capsys.readouterr().err

    assert main(["audit", "--identity", "reconcile"]) == 0
    assert "approved by test-operator" in capsys.readouterr().out


def test_bad_input_gets_a_clear_error(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["report", "../../etc/passwd"]) == 1
    assert "is not a reconciliation run id" in capsys.readouterr().err
    monkeypatch.delenv("GRAPH_CLIENT_STATE")
    assert main(["runs"]) == 2
    assert "GRAPH_CLIENT_STATE is required" in capsys.readouterr().err


def test_backfill_queues_every_user_once(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backfill"]) == 0
    assert f"backfill: {world.graph.snapshot()['users']} users queued" in capsys.readouterr().out


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """What the CLI printed on stderr, checked to be one line and no traceback."""
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_audit_times_compare_as_times_whatever_their_offset(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile", "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["audit", "--identity", "reconcile"]) == 0
    # The newest reconcile row is this run's (earlier tests' rows may share the Azurite session).
    at = max((line.split()[0] for line in capsys.readouterr().out.splitlines()), key=datetime.fromisoformat)
    written = datetime.fromisoformat(at)
    # Half an hour before, written at +01:00, reads as a later string; half an hour after at -05:00, an earlier one.
    since = (written - timedelta(minutes=30)).astimezone(timezone(timedelta(hours=1))).isoformat()
    until = (written + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert since > at > until

    assert main(["audit", "--identity", "reconcile", "--since", since, "--until", until]) == 0
    assert at in capsys.readouterr().out
    later = (written + timedelta(minutes=1)).isoformat()
    assert main(["audit", "--identity", "reconcile", "--since", later]) == 0
    assert capsys.readouterr().out == "no audit rows match\n"


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_audit_refuses_a_time_that_is_not_iso_8601(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", option, "yesterday"]) == 2
    err = one_line_error(capsys)
    assert f"argument {option}: 'yesterday' is not an ISO 8601 time" in err


@pytest.mark.parametrize("limit", ["0", "-1", "ten"])
def test_runs_and_audit_want_a_limit_of_at_least_one(limit: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("runs", "audit"):
        assert main([command, "--limit", limit]) == 2
        err = one_line_error(capsys)
        assert f"entra-sync {command}: argument --limit:" in err
        assert ("must be 1 or more" if limit != "ten" else "'ten' is not a whole number") in err


def test_runs_limit_shows_the_latest_runs(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        assert main(["reconcile", "--dry-run"]) == 0
    runs = re.findall(r"run (\S+) of auth0 \(dry-run\)", capsys.readouterr().out)
    assert main(["runs", "--limit", "1"]) == 0
    assert capsys.readouterr().out.split()[0] == runs[-1]


def test_a_failed_run_is_listed_as_failed_with_its_reason_never_as_in_sync(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.graph.faults.configure([FaultRule("users.list", kind="error", status=403)])  # consent was withdrawn
    assert main(["reconcile", "--dry-run"]) == 1
    *_progress, error = capsys.readouterr().err.splitlines()  # progress lines, then the error
    assert error.startswith("error: ") and "403" in error
    world.graph.faults.configure([])
    assert main(["reconcile", "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["runs", "--limit", "2"]) == 0  # the latest two (Azurite is shared by the file's tests)
    failed, completed = capsys.readouterr().out.splitlines()
    assert " failed " in failed and "failed: " in failed and "403" in failed and "in sync" not in failed
    assert " completed " in completed
    assert main(["runs", "--json", "--limit", "2"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["target"], r["mode"], r["status"]) for r in runs] == [
        ("auth0", "dry-run", "failed"), ("auth0", "dry-run", "completed"),
    ]  # fmt: skip
    assert "403" in runs[0]["error"] and runs[1]["entra_users"] == 30


def test_version_and_help_answer_without_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert re.fullmatch(r"entra-sync \d+\.\d+\.\d+\n", capsys.readouterr().out)
    assert main(["--help"]) == 0
    assert "status" in capsys.readouterr().out


def test_a_settings_file_that_is_not_there_is_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "local.settings.json"
    assert main(["--settings", str(missing), "runs"]) == 2
    assert f"--settings {missing}: no such file" in one_line_error(capsys)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["--settings", str(broken), "runs"]) == 2
    assert f"--settings {broken}: not a JSON file" in one_line_error(capsys)


def test_unreachable_storage_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = f"http://127.0.0.1:9/{DEV_ACCOUNT}"
    storage = (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint={closed};QueueEndpoint={closed};TableEndpoint={closed};"
    )
    for name, value in sandbox_env(storage=storage).items():
        monkeypatch.setenv(name, value)
    assert main(["runs"]) == 2
    err = one_line_error(capsys)
    assert f"cannot reach Azure Storage (AzureWebJobsStorage) at {closed}" in err
    assert DEV_KEY not in err


def test_status_shows_the_queues_the_timers_and_each_target_and_a_pause_stops_every_instance(
    world: World, indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_emptied(world))
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  sync-work +0  -$", out, re.M) and re.search(r"^  auth0 +ok$", out, re.M), out
    assert "none has run yet" in out

    assert main(["backfill"]) == 0  # every user on the work queue
    assert "30 users queued" in capsys.readouterr().out
    asyncio.run(_timer(world, indexed, "delta_sync"))
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    work = next(q for q in status["queues"] if q["name"] == "sync-work")
    assert work["depth"] >= 30 and work["oldest_s"] is not None and work["oldest_s"] >= 0
    assert status["timers"]["delta_sync"]["outcome"] == "ok"
    assert status["timers"]["delta_sync"]["detail"].startswith("queued ")
    assert [(t["name"], t["state"]) for t in status["targets"]] == [("auth0", "ok")]

    assert main(["pause", "--target", "auth0", "--by", "alice"]) == 0
    assert "paused by alice" in capsys.readouterr().out
    assert main(["status"]) == 0  # a pause is a choice, not a finding
    assert re.search(r"^  auth0 +paused by alice at \S+; resume: entra-sync resume --target auth0$",
                     capsys.readouterr().out, re.M)  # fmt: skip

    async def one_item_on(instance: str) -> WorkItem:
        """Another instance (fresh services, nothing cached) runs the first queued user."""
        async with services_for(world, keep_storage=True) as svc:
            item = (await queued(svc, take=False))[0]
            world.auth0.log.clear()
            await run_worker(indexed, item)
            return item

    item = asyncio.run(one_item_on("worker-1"))
    assert world.auth0_calls() == {}  # paused: nothing called, the share waits on the queue
    assert main(["resume", "--by", "alice"]) == 0  # every target
    assert "resumed by alice" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["targets"][0]["state"] == "ok"
    asyncio.run(_run(world, indexed, item))
    assert world.auth0_calls().get("mgmt.users.write.create") == 1

    assert main(["audit", "--identity", item.id]) == 0
    assert "is paused by an operator" in capsys.readouterr().out
    switched = asyncio.run(_operator_rows(world))
    assert [(r["action"], r["source_ref"], r["target"]) for r in switched] == [
        ("pause", "alice", "auth0"), ("resume", "alice", "auth0"),
    ]  # fmt: skip


def test_status_exits_1_for_poisoned_work_or_a_failed_timer_run(
    world: World, indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_emptied(world))
    world.graph.faults.configure([FaultRule("users.delta", kind="error", status=403)])
    with pytest.raises(Exception, match="403"):
        asyncio.run(_timer(world, indexed, "delta_sync"))
    assert main(["status"]) == 1
    assert re.search(r"^  delta_sync +failed .*403", capsys.readouterr().out, re.M)
    world.graph.faults.configure([])
    asyncio.run(_timer(world, indexed, "delta_sync"))
    assert main(["status"]) == 0
    capsys.readouterr()

    async def poison_one() -> None:
        async with services_for(world, keep_storage=True) as svc:
            await svc.queue.poison(WorkItem("user", "00000000-0000-4000-8000-000000000001", "notification"))

    asyncio.run(poison_one())
    assert main(["status", "--json"]) == 1
    queues = {q["name"]: q["depth"] for q in json.loads(capsys.readouterr().out)["queues"]}
    assert queues["sync-lane-poison"] + queues["sync-work-poison"] == 1


def member_with_mail(world: World) -> dict[str, Any]:
    return next(
        u for u in world.graph.snapshot(full=True)["dump"]["users"]
        if u["accountEnabled"] and u["userType"] == "Member" and u.get("mail")
    )  # fmt: skip


async def _emptied(world: World) -> None:
    async with services_for(world):
        pass  # empty tables and queues: the file's tests share one Azurite


async def _timer(world: World, indexed: dict[str, Any], name: str) -> None:
    """A timer function, run as the host runs it (on services of this event loop)."""
    async with services_for(world, keep_storage=True):
        await indexed[name].get_user_function()(TimerRequest(past_due=False))


async def _run(world: World, indexed: dict[str, Any], item: WorkItem) -> None:
    async with services_for(world, keep_storage=True):
        world.auth0.log.clear()
        await run_worker(indexed, item)


async def _operator_rows(world: World) -> list[dict[str, Any]]:
    async with services_for(world, keep_storage=True) as svc:
        return [r for r in await audit_rows(svc) if r.get("source") == "operator"]


def test_poison_list_show_replay_and_drop_what_the_worker_gave_up_on(
    world: World, indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_emptied(world))
    user = next(
        u for u in world.graph.snapshot(full=True)["dump"]["users"] if u["accountEnabled"] and u["userType"] == "Member"
    )
    world.auth0.faults.configure([FaultRule("mgmt.users.by_email", kind="error", status=503)])
    last_try = dataclasses.replace(user_item(user["id"], "notification"), target="auth0", attempt=4)

    async def give_up_and_add_junk() -> None:
        async with services_for(world, keep_storage=True) as svc:
            await run_worker(indexed, last_try)  # its fifth failure: the worker poisons the share
            junk = svc.queues.get_queue_client("sync-work-poison", message_encode_policy=TextBase64EncodePolicy())
            await junk.send_message("not a work item")  # what a broken sender could leave there

    asyncio.run(give_up_and_add_junk())
    world.auth0.faults.configure([])
    assert main(["poison", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    given_up = next(p for p in listed if p["item"] is not None)
    junk = next(p for p in listed if p["item"] is None)
    assert len(listed) == 2 and junk["raw"] == "not a work item"
    assert given_up["item"]["id"] == user["id"] and given_up["item"]["target"] == "auth0"

    assert main(["poison", "show", given_up["id"]]) == 0
    shown = capsys.readouterr().out
    assert user["id"] in shown and "poisoned" in shown  # its audit trail says the worker gave up

    assert main(["poison", "replay", given_up["id"], junk["id"], "--by", "bob"]) == 1  # junk cannot be replayed
    out = capsys.readouterr().out
    assert f"replayed {given_up['id']}" in out and f"not replayed: {junk['id']}" in out
    asyncio.run(_drain_one(world, indexed))
    assert world.auth0_calls().get("mgmt.users.write.create") == 1  # the replayed share converged

    assert main(["poison", "drop", "--all", "--by", "bob"]) == 0
    assert "1 dropped by bob" in capsys.readouterr().out
    assert main(["poison", "list"]) == 0
    assert "the poison queues are empty" in capsys.readouterr().out
    rows = asyncio.run(_operator_rows(world))
    assert [(r["action"], r["source_ref"], r["identity"]) for r in rows] == [
        ("poison_replay", "bob", user["id"]), ("poison_drop", "bob", "operator"),
    ]  # fmt: skip


async def _drain_one(world: World, indexed: dict[str, Any]) -> None:
    async with services_for(world, keep_storage=True) as svc:
        items = await queued(svc)
        assert [(i.id, i.target, i.attempt) for i in items] == [(items[0].id, "auth0", 0)]
        world.auth0.log.clear()
        await run_worker(indexed, items[0])


def test_audit_finds_a_person_by_upn_or_email_filters_newest_first_and_exports(
    world: World, indexed: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    asyncio.run(_emptied(world))
    user = member_with_mail(world)

    async def joiner_then_mover() -> None:
        async with services_for(world, keep_storage=True):
            await run_worker(indexed, user_item(user["id"], "notification"))  # created
            world.graph.update_user(user["id"], displayName="Moved Along")
            await run_worker(indexed, user_item(user["id"], "notification"))  # updated

    asyncio.run(joiner_then_mover())
    assert main(["audit", "--identity", user["userPrincipalName"].upper()]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[1:4] == [user["id"], "auth0", "notification"] and " update " in lines[0]
    assert lines[1].startswith("    diff ") and "Moved Along" in lines[1]  # the newest first, with its diff
    assert any(" create " in line for line in lines[2:])
    assert main(["audit", "--identity", user["mail"], "--action", "update", "--json"]) == 0
    [update] = json.loads(capsys.readouterr().out)
    assert (update["identity"], update["target"], update["outcome"]) == (user["id"], "auth0", "ok")
    assert main(["audit", "--target", "auth0", "--outcome", "ok", "--correlation-id", update["correlation_id"]]) == 0
    assert [line.split()[4] for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")] == ["update"]

    export = tmp_path / "exports" / "audit.csv"
    assert main(["audit", "--identity", user["id"], "--format", "csv", "--output", str(export)]) == 0
    rows = list(csv.DictReader(export.open(encoding="utf-8")))
    assert f"wrote {len(rows)} rows to {export}" in capsys.readouterr().out
    assert rows[0]["action"] == "update" and {r["identity"] for r in rows} == {user["id"]}

    assert main(["audit", "--identity", "nobody@contoso.example"]) == 2
    assert "no one in the sources (entra) has that sign-in name or email" in one_line_error(capsys)


def test_sync_one_shows_the_scope_the_match_and_the_plan_field_by_field_then_applies_it(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_emptied(world))
    user = member_with_mail(world)
    world.auth0.log.clear()
    assert main(["sync-one", user["userPrincipalName"], "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{user['userPrincipalName']} is {user['id']} in entra: active; groups: ")
    assert "auth0: active, no account" in out and "  create  (joiner)" in out
    assert f'email: "{user["mail"].lower()}"' in out  # the fields it would send
    assert world.auth0_writes() == {}  # a dry run writes nothing

    assert main(["sync-one", user["mail"], "--by", "carol"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^result\n  auth0 +applied$", out, re.M), out
    assert re.search(r"^  \S+  auth0 +create +ok", out, re.M)
    assert world.auth0_writes().get("mgmt.users.write.create") == 1

    world.graph.update_user(user["id"], displayName="Someone Else Now")
    assert main(["sync-one", user["id"], "--dry-run", "--json"]) == 0
    [auth0] = json.loads(capsys.readouterr().out)["plan"]["targets"]
    assert auth0["matched_by"] == "link" and auth0["account"].startswith("auth0|")
    [update] = [s for s in auth0["steps"] if s["action"] == "update"]
    assert update["changes"]["name"][1] == "Someone Else Now" and update["values"] is None

    assert main(["sync-one", "nobody@contoso.example"]) == 2
    assert "nobody@contoso.example: no one in entra has that id, sign-in name or email" in one_line_error(capsys)
    assert main(["sync-one", user["id"], "--target", "scim:nope"]) == 2
    assert "--target scim:nope: no target fed by entra has that name (auth0)" in one_line_error(capsys)


def test_preview_shows_what_a_new_mapping_would_create_change_and_deprovision_by_name_and_writes_nothing(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    asyncio.run(_emptied(world))
    current = load_mapping(world.settings.mapping_file)
    mirror(world.graph, world.auth0, current)  # every in-scope user has an account, in step
    users = [u for u in world.graph.snapshot(full=True)["dump"]["users"] if u["accountEnabled"]]
    members = [u for u in users if u["userType"] == "Member"]
    kept_group = world.group_ids[0]
    text = Path(world.settings.mapping_file).read_text()
    new = tmp_path / "proposed" / "mapping.yaml"
    new.parent.mkdir()
    new.write_text(
        text.replace("scope: {user_types: [Member]}", f"scope: {{user_types: [Member], groups: [{kept_group}]}}")
        .replace("{source: jobTitle, target: user_metadata.job_title}",
                 "{source: officeLocation, target: user_metadata.job_title}")
    )  # fmt: skip
    world.auth0.log.clear()
    code = main(["preview", "--mapping", str(new), "--json"])
    preview = json.loads(capsys.readouterr().out)
    [auth0] = preview["targets"]
    assert auth0["target"] == "auth0" and auth0["identities"] == len(world.graph.snapshot(full=True)["dump"]["users"])
    assert auth0["created"] == 0 and auth0["deprovisioned"] == auth0["managed"] - auth0["in_scope"] > 0
    assert {d["identity"] for d in auth0["deprovisions"]} <= {u["id"] for u in members}
    assert all(d["action"] == "block" and d["name"] for d in auth0["deprovisions"])
    assert auth0["fields"].get("user_metadata.job_title", 0) > 0  # office location where the job title was
    assert code == (3 if auth0["breaker"] or auth0["guard"] else 0)
    assert auth0["breaker"] == f"{auth0['deprovisioned']} accounts would be blocked or deleted; the limit is 2"
    assert world.auth0_writes() == {}  # nothing written
    assert Path(world.settings.mapping_file).read_text() == text  # the deployed mapping is left alone

    assert main(["preview", "--mapping", str(new), "--names", "1"]) == 3
    out = capsys.readouterr().out
    assert len(re.findall(r"^  auth0: would block ", out, re.M)) == 1
    assert f"would create 0, change {auth0['changed']}, deprovision {auth0['deprovisioned']}" in out
    assert "more deprovisions not listed" in out and "circuit breaker: would hold a reconcile --apply" in out

    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("target: name", "target: nmae"))
    assert main(["preview", "--mapping", str(broken)]) == 2  # the checker's own messages, one problem a line
    err = capsys.readouterr().err
    assert err.startswith(f"error: mapping file {broken} is invalid") and "'nmae' is not a writable" in err
