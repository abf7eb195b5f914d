"""The README's "A day with the sandbox", command by command, as an operator runs it: the sandbox
served as a process (``python -m sandbox serve``), each ``entra-sync`` line run in a process of
its own with the settings file serve wrote, each expected to exit 0 without a traceback."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
READY_S = 240.0  # serve: Azurite, the emulators, the host and the subscriptions (slow under load)
COMMAND_S = 120.0


def walkthrough() -> list[str]:
    """The ``entra-sync`` lines of the README's walk, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### A day with the sandbox", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("entra-sync ")]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """``serve`` running in ``tmp_path`` (its files in sandbox-run/, as the README's paths say),
    the person it printed, and all it printed."""
    log = (tmp_path / "serve.log").open("w+", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1,localhost,::1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--users", "40", "--groups", "6", "--dir", "sandbox-run"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_S
        out = ""
        while "Ctrl-C stops the sandbox." not in out:
            assert process.poll() is None, f"serve ended early:\n{out}"
            assert time.monotonic() < deadline, f"serve was not ready in {READY_S:.0f} s:\n{out}"
            time.sleep(0.5)
            log.seek(0)
            out = log.read()
        person = re.search(r"PERSON=(\S+)", out)
        assert person is not None, out
        yield tmp_path, person.group(1), out
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


def test_the_readme_walkthrough_runs_command_by_command_against_serve(served: tuple[Path, str, str]) -> None:
    folder, person, printed = served
    named = r"^(Slack / Teams|ServiceNow|Jira|Event feed|Email) +.*\(read: (\S+)\)$"
    receivers = dict(re.findall(named, printed, re.M))
    assert set(receivers) == {"Slack / Teams", "ServiceNow", "Jira", "Event feed", "Email"}, printed
    commands = walkthrough()
    assert len(commands) >= 10 and any("sync-one" in c for c in commands)
    assert (folder / "sandbox-run" / "mapping.yaml").exists()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1,localhost,::1"}
    shell = {"$ES_SETTINGS": "sandbox-run/local.settings.json", "$PERSON": person}  # the README's export line
    paused = False
    for line in commands:
        argv = [shell.get(word, word) for word in shlex.split(line)[1:]]
        paused = (paused or argv[2] == "pause") and argv[2] != "resume"
        done = subprocess.run(
            [sys.executable, "-m", "shared.cli", *argv],
            cwd=folder, env=env, capture_output=True, text=True, timeout=COMMAND_S,
        )  # fmt: skip
        said = f"{line}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        assert done.returncode == 0, said
        assert "Traceback" not in done.stderr, said
        if "sync-one" in line and "--dry-run" not in line:
            assert re.search(r"^  auth0 +(applied|noop)$", done.stdout, re.M), said
        if argv[2] == "status" and paused:  # every instance sees the pause: this process too
            assert re.search(r"^  scim:crm +paused by \S+ at ", done.stdout, re.M), said
    # The replay reached the event endpoint serve started, signed (it refuses anything else).
    with httpx.Client(trust_env=False, timeout=30) as http:
        events = http.get(receivers["Event feed"]).json()["events"]
    assert events and all(e["specversion"] == "1.0" and e["type"].startswith("com.entra-sync.") for e in events)
    assert "com.entra-sync.account.created" in {e["type"] for e in events}  # sync-one's and the backfill's
