"""azure-functions-doctor finds no failure in the app, and host.json suits Flex Consumption."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from sandbox.host import parse_timespan
from tests.infra.bicep import REPO

# What ships to Azure (see .funcignore): the doctor looks at this, not at .venv or node_modules.
APP_PARTS = [
    "function_app.py",
    "functions",
    "shared",
    "host.json",
    "requirements.txt",
    ".funcignore",
    "azure.yaml",
    "infra",
]


def _doctor(app: Path) -> dict:  # type: ignore[type-arg]
    exe = Path(sys.executable).with_name("azure-functions-doctor")
    output = app / "doctor.json"
    subprocess.run(
        [
            str(exe),
            "doctor",
            "--path",
            str(app),
            "--format",
            "json",
            "--output",
            str(output),
            "--hosting-plan",
            "flex-consumption",
            "--target-python",
            "3.11",
        ],
        check=False,
        capture_output=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(app)},
    )
    return json.loads(output.read_text())


def test_azure_functions_doctor_reports_no_failure(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    for part in APP_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, app / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, app / part)
    report = _doctor(app)
    items = [item for group in report["results"] for item in group["items"]]
    assert len(items) > 20, "the doctor ran too few checks"
    failures = [f"{i['rule_id']}: {i.get('value')}" for i in items if i["status"] == "fail"]
    assert not failures, "\n".join(failures)
    passed = {i["rule_id"] for i in items if i["status"] == "pass"}
    assert {
        "check_blueprint_registration",
        "check_extension_bundle_v4",
        "check_flex_deprecated_settings",
        "check_funcignore",
        "check_host_json_version",
        "check_requirements_txt",
    } <= passed


def test_host_json_fits_flex_consumption_and_rate_limited_targets() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    hours, minutes, seconds = (int(x) for x in host["functionTimeout"].split(":"))
    assert hours * 3600 + minutes * 60 + seconds > 0  # Flex: default 30 min, no upper bound; keep one anyway
    queues = host["extensions"]["queues"]
    # At most batchSize + newBatchThreshold messages run at once per queue function and instance:
    # twelve items (README, "Performance tuning"): more only meets Auth0's tenant-wide limit sooner.
    assert queues["batchSize"] + queues["newBatchThreshold"] <= 12
    assert queues["maxDequeueCount"] == 5
    assert re.fullmatch(r"\d\d:\d\d:\d\d", queues["visibilityTimeout"])
    assert host["extensions"]["http"]["routePrefix"] == "api"


def test_an_idle_lane_is_polled_often_enough_for_its_latency_goal() -> None:
    # A leaver on an idle, always-ready lane instance waits at most maxPollingInterval before it
    # is picked up; with about half a second of work that must stay well inside the 2 s goal.
    queues = json.loads((REPO / "host.json").read_text())["extensions"]["queues"]
    assert parse_timespan(queues["maxPollingInterval"]) <= 0.5
    assert parse_timespan(queues["visibilityTimeout"]) >= 10  # a retry lands in a fresh rate-limit window


def test_sampling_never_drops_a_work_item_s_lines() -> None:
    # The cid= lines are traces: sampled, a work item's trail in Application Insights could miss some.
    sampling = json.loads((REPO / "host.json").read_text())["logging"]["applicationInsights"]["samplingSettings"]
    assert {"Request", "Exception", "Trace"} <= set(sampling["excludedTypes"].split(";"))
