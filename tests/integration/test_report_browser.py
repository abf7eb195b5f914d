"""Reports an auditor accepts, through the path production uses: real reconciliation runs (the CLI,
the nightly timer) against the emulators and Azurite, their stored reports read back, and the HTML
page opened in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven over the DevTools
protocol on loopback), where it must render without a console error and show the counts the JSON
holds.

Where Chromium is missing the browser test skips, except under ``CI=true``, where it fails: CI
installs Chromium (``.ci/run``), so a skip there would hide a report nobody looked at.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from azure.functions.timer import TimerRequest

from sandbox.azurite import Azurite
from sandbox.mirror import mirror
from shared import __version__
from shared.cli import main
from shared.core.drift import DriftRecord, Provenance, RunSummary
from shared.mapping.load import load_mapping
from shared.services.reconcile import RUN_KIND
from shared.services.report import public_url, render_html
from tests.integration.world import World, for_the_cli, services_for

CHROMIUM: Final = os.environ.get("ENTRA_SYNC_CHROMIUM", "/usr/bin/chromium")
# As the machine notes say: no sandbox (CI runs as root), no GPU, and nothing Chromium would fetch
# on its own (the network is closed: those connections fail, many at a time).
CHROMIUM_FLAGS: Final = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
)  # fmt: skip
BROWSER_WAIT_S: Final = 60.0  # for Chromium to start and for each answer: generous, for a loaded machine
TENANT: Final = "7c1a2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.fixture
def world(azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    extra = "reconcile: {remediate: [missing, orphaned], max_deprovisions: 5}"
    w = World(azurite, tmp_path, users=30, groups=6, mapping_extra=extra, extra_env={"AZURE_TENANT_ID": TENANT})
    with for_the_cli(w, monkeypatch):
        yield w


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def reconcile(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[str, str]:
    """A dry run through the CLI: its run id and what it printed."""
    out = cli(capsys, "reconcile", "--dry-run", *options)
    found = re.search(r"run (\S+) of auth0 \(dry-run\): completed", out)
    assert found, out
    return found.group(1), out


def report(capsys: pytest.CaptureFixture[str], run_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(cli(capsys, "report", run_id, "--format", "json"))
    return doc


def members(world: World) -> list[dict[str, Any]]:
    dump = world.graph.snapshot(full=True)["dump"]
    return [u for u in dump["users"] if u["accountEnabled"] and u["userType"] == "Member"]


# ------------------------------------------------------------------------------------------------
# What the reports say
# ------------------------------------------------------------------------------------------------


def test_a_cli_run_reports_its_provenance_sign_in_names_and_the_group_behind_each_role(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    person = world.member_user()  # in group 0 only: Employee
    world.graph.add_member(world.group_ids[1], person["id"])  # group 1 grants Sales Reader and Sales Writer

    run_id, _ = reconcile(capsys, "--by", "ann.auditor")
    doc = report(capsys, run_id)
    assert doc["schema_version"] == 2
    assert doc["summary"]["provenance"] == {
        "source": "entra",
        "source_kind": "entra",
        "tenant_id": TENANT,
        "target_kind": "auth0",
        "target_where": {"base_url": public_url(world.auth0.base_url)},
        "app_version": __version__,
        "mapping_sha256": hashlib.sha256(world.settings.mapping_file.read_bytes()).hexdigest(),
        "trigger": "cli",
        "operator": "ann.auditor",
    }
    (roles,) = doc["records"]
    assert roles["drift"] == "role_mismatch"
    assert roles["entra_id"] == person["id"]
    assert roles["sign_in"] == person["userPrincipalName"]
    assert sorted(roles["details"]["add"]) == ["Sales Reader", "Sales Writer"]
    assert roles["details"]["granted_by"] == {
        "Sales Reader": [world.group_ids[1]],
        "Sales Writer": [world.group_ids[1]],
    }
    assert roles["new"] is None  # the target's first run: nothing to compare with
    assert doc["summary"]["previous_run"] == ""

    (row,) = csv.DictReader(io.StringIO(cli(capsys, "report", run_id, "--format", "csv").lstrip("\ufeff")))
    assert row["sign_in"] == person["userPrincipalName"]
    assert set(row["granted_by"].split("; ")) == {
        f"Sales Reader: {world.group_ids[1]}",
        f"Sales Writer: {world.group_ids[1]}",
    }
    assert (row["run_id"], row["target"], row["tenant_id"], row["trigger"], row["operator"]) == (
        run_id,
        "auth0",
        TENANT,
        "cli",
        "ann.auditor",
    )

    page = cli(capsys, "report", run_id, "--format", "html")
    assert f'Reconciliation run <code>{run_id}</code> of <span class="target">Auth0</span>' in page
    assert '<div data-provenance="operator"><dt>Operator</dt><dd>ann.auditor</dd></div>' in page
    assert f"<dd>{TENANT}</dd>" in page


def test_the_second_run_marks_what_is_new_since_the_first(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    first, second = members(world)[:2]
    world.graph.update_user(first["id"], displayName="Renamed Before")
    run_1, _ = reconcile(capsys)
    world.graph.update_user(second["id"], displayName="Renamed Since")
    run_2, out = reconcile(capsys)

    assert f"new since run {run_1}: 1 drift records" in out
    doc = report(capsys, run_2)
    assert (doc["summary"]["previous_run"], doc["summary"]["new_records"]) == (run_1, 1)
    new = {r["entra_id"]: r["new"] for r in doc["records"]}
    assert new == {first["id"]: False, second["id"]: True}
    page = cli(capsys, "report", run_2, "--format", "html")
    assert page.count('<span class="badge new"') == 1


def test_runs_stored_before_provenance_still_load_and_are_compared_with(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    someone = members(world)[0]
    world.graph.update_user(someone["id"], displayName="Renamed Long Ago")
    old_id, _ = reconcile(capsys)
    asyncio.run(_store_as_version_1(world, old_id))  # what the previous version left in storage

    listed = json.loads(cli(capsys, "runs", "--json"))
    (old,) = [r for r in listed if r["run_id"] == old_id]
    assert old["provenance"]["operator"] == ""  # loaded, with nothing made up
    assert report(capsys, old_id)["schema_version"] == 1
    summary, records = asyncio.run(_load_run(world, old_id))  # as approve reads it back to store again
    assert summary.provenance == Provenance()
    assert [(r.entra_id, r.sign_in, r.new) for r in records] == [(someone["id"], "", None)]
    assert '<div data-provenance="operator"><dt>Operator</dt><dd><span class="nil">(not recorded)</span>' in (
        render_html(summary, records).decode()
    )

    new_id, _ = reconcile(capsys, "--by", "ann.auditor")
    doc = report(capsys, new_id)
    assert doc["summary"]["previous_run"] == old_id
    assert [(r["entra_id"], r["new"]) for r in doc["records"]] == [(someone["id"], False)]


async def _load_run(world: World, run_id: str) -> tuple[RunSummary, list[DriftRecord]]:
    async with services_for(world, keep_storage=True) as svc:
        assert svc.reports is not None
        return await svc.reports.load_run(run_id)


async def _store_as_version_1(world: World, run_id: str) -> None:
    """Rewrite a run's stored summary and report.json as version 1 wrote them: no provenance, no
    comparison, records without a sign-in name or a "new" marker, schema version 1."""
    dropped_summary = ("provenance", "previous_run", "new_records")
    async with services_for(world, keep_storage=True) as svc:
        stored = await svc.state.get(RUN_KIND, run_id)
        assert stored is not None
        await svc.state.put(RUN_KIND, run_id, {k: v for k, v in stored.items() if k not in dropped_summary})
        assert svc.reports is not None
        doc = json.loads(await svc.reports.load(run_id, "json"))
        summary = {k: v for k, v in doc["summary"].items() if k not in dropped_summary}
        records = [{k: v for k, v in r.items() if k not in {"sign_in", "new"}} for r in doc["records"]]
        lines = ",\n  ".join(json.dumps(r, sort_keys=True) for r in records)
        body = (
            f'{{"schema_version": 1,\n "summary": {json.dumps(summary, sort_keys=True)},\n'
            f' "record_count": {len(records)},\n "records": [\n  {lines}\n ]}}\n'
        )
        await svc.reports.container.upload_blob(f"runs/{run_id}/report.json", body.encode(), overwrite=True)


def test_the_nightly_timer_reports_timer_as_trigger_and_operator(
    world: World, indexed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    async def nightly() -> None:
        async with services_for(world):  # empty tables and queues: the file's tests share one Azurite
            await indexed["reconcile"].get_user_function()(TimerRequest(past_due=False))

    asyncio.run(nightly())
    (run,) = json.loads(cli(capsys, "runs", "--json"))
    assert run["mode"] == "apply"
    provenance = run["provenance"]
    assert (provenance["trigger"], provenance["operator"], provenance["tenant_id"]) == ("timer", "timer", TENANT)
    assert provenance["mapping_sha256"] == hashlib.sha256(world.settings.mapping_file.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# The page in a real browser
# ------------------------------------------------------------------------------------------------


def chromium() -> str:
    """Chromium's path; a skip where it is missing, a failure where CI should have installed it."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    why = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: under CI=true the browser test must run, not skip")
    pytest.skip(why)


def test_a_missing_chromium_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI=true the browser test must run"):
        chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium at"):
        chromium()


class DevTools:
    """One page of a headless Chromium, over the DevTools protocol's WebSocket. Events that arrive
    while waiting for an answer are kept in ``events``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.sent = 0
        self.events: list[dict[str, Any]] = []

    async def _next(self) -> dict[str, Any]:
        message: dict[str, Any] = await asyncio.wait_for(self.ws.receive_json(), BROWSER_WAIT_S)
        return message

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.sent += 1
        ident = self.sent
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await self._next()
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def until(self, event: str) -> dict[str, Any]:
        """The first ``event`` (already seen, or the next to come)."""
        for seen in self.events:
            if seen.get("method") == event:
                return seen
        while True:
            message = await self._next()
            self.events.append(message)
            if message.get("method") == event:
                return message

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"the page could not evaluate {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors (a refused resource, a CSP
        violation) the page caused."""
        out: list[str] = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
                out.append(f"console: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                out.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(f"log: {params['entry'].get('text')}")
        return out


@contextlib.asynccontextmanager
async def headless_page(profile: Path) -> AsyncIterator[DevTools]:
    """Chromium started for this test (its own empty profile, a loopback DevTools port it picks),
    one blank page attached, and Chromium stopped afterwards."""
    proc = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = await _devtools_port(proc, profile / "DevToolsActivePort")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BROWSER_WAIT_S)) as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                pages = [t for t in await answer.json() if t.get("type") == "page"]
            assert pages, "Chromium opened no page"
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=BROWSER_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=BROWSER_WAIT_S)


async def _devtools_port(proc: subprocess.Popen[bytes], active: Path) -> int:
    """The port Chromium writes to ``DevToolsActivePort`` once it listens (bounded wait; an early
    exit is reported with its code)."""
    deadline = time.monotonic() + BROWSER_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"Chromium exited with {proc.returncode} before it listened")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(active.read_text().splitlines()[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"Chromium did not listen within {BROWSER_WAIT_S:.0f} s")


# What the page shows, read the way a person reads it: the visible text of the counts table and
# of the provenance block, and the rows marked new.
READ_PAGE: Final = """(() => {
  const number = (cell) => Number(cell.innerText.replace(/,/g, ""));
  const counts = {};
  for (const row of document.querySelectorAll("#counts tr[data-drift]")) {
    counts[row.dataset.drift] = number(row.cells[1]);
  }
  const total = document.querySelector('#counts tr[data-total="records"]').cells;
  const provenance = {};
  for (const item of document.querySelectorAll("#provenance [data-provenance]")) {
    provenance[item.dataset.provenance] = item.querySelector("dd").innerText;
  }
  return {
    title: document.title,
    heading: document.querySelector("h1").innerText,
    target: document.querySelector("section.target").dataset.target,
    counts,
    total: number(total[1]),
    newTotal: number(total[total.length - 1]),
    inSync: number(document.querySelector('#counts tr[data-total="in_sync"]').cells[1]),
    newBadges: document.querySelectorAll(".badge.new").length,
    provenance,
    height: document.body.scrollHeight,
  };
})()"""


def test_the_html_report_of_a_real_run_renders_in_chromium_with_the_counts_of_the_json(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    browser = chromium()
    mirror(world.graph, world.auth0, load_mapping(world.settings.mapping_file))
    people = members(world)
    world.graph.update_user(people[0]["id"], displayName="Renamed <b>Before</b>")
    run_1, _ = reconcile(capsys, "--by", "ann.auditor")
    role_person = world.member_user()
    world.graph.add_member(world.group_ids[1], role_person["id"])
    leaver = next(p for p in people[1:] if p["id"] != role_person["id"])
    world.graph.update_user(leaver["id"], accountEnabled=False)
    run_2, _ = reconcile(capsys, "--by", "ann.auditor")

    doc = report(capsys, run_2)
    summary = doc["summary"]
    assert {"attribute_mismatch", "role_mismatch", "orphaned"} <= set(summary["counts"])
    page_file = tmp_path / "out" / "report.html"
    cli(capsys, "report", run_2, "--format", "html", "--output", str(page_file))

    async def look() -> tuple[dict[str, Any], list[str], bytes]:
        async with headless_page(tmp_path / "chromium-profile") as page:
            await page.call("Runtime.enable")
            await page.call("Log.enable")
            await page.call("Page.enable")
            await page.call("Page.navigate", url=page_file.resolve().as_uri())
            await page.until("Page.loadEventFired")
            shown = await page.evaluate(READ_PAGE)
            shot = await page.call("Page.captureScreenshot", format="png")
            return shown, page.errors(), base64.b64decode(shot["data"])

    started = time.perf_counter()
    shown, errors, png = asyncio.run(look())
    print(f"browser check of {page_file.name} with {browser}: {time.perf_counter() - started:.2f} s")

    assert errors == []
    assert png.startswith(b"\x89PNG") and shown["height"] > 600  # it rendered, and is not an empty page
    assert run_2 in shown["title"]
    assert "Auth0" in shown["heading"] and shown["target"] == "auth0"
    assert {d: n for d, n in shown["counts"].items() if n} == summary["counts"]
    assert shown["total"] == doc["record_count"] == len(doc["records"])
    assert shown["inSync"] == summary["in_sync"]
    assert shown["newTotal"] == summary["new_records"] == sum(1 for r in doc["records"] if r["new"])
    assert shown["newBadges"] == summary["new_records"]
    assert summary["previous_run"] == run_1
    provenance = summary["provenance"]
    assert shown["provenance"]["operator"] == provenance["operator"] == "ann.auditor"
    assert shown["provenance"]["trigger"] == "cli"
    assert shown["provenance"]["tenant"] == provenance["tenant_id"] == TENANT
    assert shown["provenance"]["mapping"] == provenance["mapping_sha256"]
    assert shown["provenance"]["version"] == __version__
    assert shown["provenance"]["where"] == f"base_url={provenance['target_where']['base_url']}"
