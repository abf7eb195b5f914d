"""The Function App indexes the way the Functions host indexes it, and its functions run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import azure.functions as func

from sandbox.azurite import Azurite
from shared import bootstrap
from shared.settings import Settings
from tests.support import sandbox_env

REPO = Path(__file__).resolve().parent.parent
CLOSED_PORT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
    "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
)


def call_http(function: Any, method: str = "GET", body: bytes = b"", params: dict[str, str] | None = None) -> Any:
    """Call an HTTP function in a fresh event loop, then close the clients it opened in that loop."""
    request = func.HttpRequest(method=method, url="/api/x", body=body, params=params or {})

    async def run() -> Any:
        try:
            return await function.get_user_function()(request)
        finally:
            await bootstrap.app().aclose()

    return asyncio.run(run())


def test_the_app_indexes_every_function_under_its_contract_name(indexed: dict[str, Any]) -> None:
    assert {"health", "graph_webhook", "graph_lifecycle", "sync_worker", "subscriptions_renew"} <= set(indexed)
    assert {"delta_sync", "reconcile"} <= set(indexed)
    assert {"risk_monitor", "risk_alert"} <= set(indexed)
    triggers = {name: f.get_bindings()[0].type for name, f in indexed.items()}
    assert {
        "health": "httpTrigger",
        "graph_webhook": "httpTrigger",
        "graph_lifecycle": "httpTrigger",
        "sync_worker": "queueTrigger",
        "sync_lane": "queueTrigger",
        "subscriptions_renew": "timerTrigger",
        "delta_sync": "timerTrigger",
        "reconcile": "timerTrigger",
        "risk_monitor": "timerTrigger",
        "risk_alert": "httpTrigger",
    }.items() <= triggers.items()
    assert indexed["risk_monitor"].get_bindings()[0].schedule == "%RISK_SCHEDULE%"
    assert indexed["sync_worker"].get_bindings()[0].queue_name == "sync-work"
    assert indexed["sync_lane"].get_bindings()[0].queue_name == "sync-lane"
    assert indexed["subscriptions_renew"].get_bindings()[0].schedule == "%SUBSCRIPTIONS_SCHEDULE%"


def test_the_worker_gives_up_when_the_host_does() -> None:
    from functions.sync_worker import MAX_DEQUEUE_COUNT

    host = json.loads((REPO / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == MAX_DEQUEUE_COUNT


def test_the_app_indexes_the_health_function(indexed: dict[str, Any]) -> None:
    health = indexed["health"]
    trigger = health.get_bindings()[0]
    assert trigger.type == "httpTrigger"
    assert [getattr(m, "value", m) for m in trigger.methods] == ["GET"]
    assert trigger.route == "health"


def test_health_is_ok_when_storage_answers(indexed: dict[str, Any], azurite: Azurite) -> None:
    bootstrap.init(Settings.from_env(sandbox_env(storage=azurite.connection_string)))
    response = call_http(indexed["health"])
    body = json.loads(response.get_body())
    assert response.status_code == 200
    assert body == {
        "status": "ok",
        "checks": [{"check": "table_storage", "status": "ok"}, {"check": "queue_storage", "status": "ok"}],
    }


def test_health_reports_unreachable_storage_without_leaking_settings(indexed: dict[str, Any]) -> None:
    bootstrap.init(Settings.from_env(sandbox_env(storage=CLOSED_PORT_STORAGE)))
    response = call_http(indexed["health"])
    text = response.get_body().decode()
    body = json.loads(text)
    assert response.status_code == 503
    assert body["status"] == "degraded"
    assert {c["check"]: c["status"] for c in body["checks"]} == {"table_storage": "fail", "queue_storage": "fail"}
    assert "127.0.0.1:9" not in text
    assert "a2V5" not in text


def test_start_up_fails_naming_each_missing_setting() -> None:
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "SYSTEMROOT"}}
    proc = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "entra-sync cannot start" in proc.stderr
    # The GRAPH_* settings are the entra source's: named once a mapping file says it reads Entra ID
    # (tests/integration/test_sources.py), which a missing SYNC_MAPPING_FILE cannot.
    for name in ("AzureWebJobsStorage", "SYNC_MAPPING_FILE", "DELTA_SCHEDULE"):
        assert f"{name} is required" in proc.stderr


def test_start_up_fails_naming_the_settings_a_mapped_target_needs() -> None:
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    env.update(sandbox_env(storage="UseDevelopmentStorage=true"))
    for name in ("AUTH0_BASE_URL", "AUTH0_TOKEN"):
        del env[name]  # the shipped example maps an Auth0 target
    proc = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "AUTH0_DOMAIN is required (or AUTH0_BASE_URL for the sandbox): the mapping names the target auth0" in (
        proc.stderr
    )


def test_start_up_fails_naming_the_mapping_file_entry(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.yaml"
    bad.write_text("version: 1\nattributes:\n  - {source: mail, target: password}\n")
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    env.update(sandbox_env(storage="UseDevelopmentStorage=true", SYNC_MAPPING_FILE=str(bad)))
    proc = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert f"mapping file {bad} is invalid" in proc.stderr
    assert "attributes[0].target: 'password' is not a writable Auth0 attribute" in proc.stderr


def test_start_up_is_frozen_out_of_the_collectors_full_passes() -> None:
    """What importing the app built (SDK classes, schemas, the composition root) is never walked by
    a full collection again; what comes later is still collected (BENCHMARKS.md section 8: the
    full passes were what made the endpoint's slowest answers)."""
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    env.update(sandbox_env(storage="UseDevelopmentStorage=true"))
    probe = (
        "import gc, json, function_app\n"
        "frozen = gc.get_freeze_count()\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.peer, b.peer = b, a; del a, b\n"
        "print(json.dumps({'frozen': frozen, 'enabled': gc.isenabled(), 'collected': gc.collect(),"
        " 'tracked': len(gc.get_objects())}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["enabled"]
    assert seen["collected"] >= 2  # the cycle made after start-up
    assert seen["frozen"] > 20 * seen["tracked"], seen  # a full pass walks a small fraction of the heap
