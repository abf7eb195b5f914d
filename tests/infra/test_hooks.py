"""The azd hooks around provisioning and deploying, run under ``sh`` with stand-in ``azd``, ``az`` and
``curl`` executables on PATH that record their calls (no network, no tenant).

pwsh cannot be installed on the machine these tests were written on, so the PowerShell twins are
checked textually against the POSIX scripts: the same commands, endpoints and messages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.bicep import INFRA
from tests.infra.test_grant_script import FAKE_AZ, GRAPH_SP, NEEDED, PRINCIPAL, ROLES
from tests.infra.test_mapping_hook import INVALID, VALID, repository

RECORDER = """#!/bin/sh
# Stand-in for {name}: records its arguments, one call per line, and answers from FAKE_{upper}_OUT.
printf '%s\\n' "$*" >>"$CALLS/{name}"
{extra}
printf '%s' "${{FAKE_{upper}_OUT:-}}"
exit "${{FAKE_{upper}_EXIT:-0}}"
"""
STATUS = {"subscriptions": [{"resource": "users", "id": "s-1", "expires": "2026-12-30T00:00:00Z", "action": "created"}]}


def tools(tmp_path: Path, **extra: str) -> tuple[Path, Path]:
    """A bin directory with recording stand-ins for azd, az and curl, and the folder of their calls."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    calls.mkdir(exist_ok=True)
    for name in ("azd", "az", "curl"):
        tool = bin_dir / name
        tool.write_text(RECORDER.format(name=name, upper=name.upper(), extra=extra.get(name, "")))
        tool.chmod(0o755)
    return bin_dir, calls


def run(script: str, root: Path, bin_dir: Path, calls: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("sh") or "/bin/sh", str(repository(root) / script)],
        cwd=root,
        env={
            "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "CALLS": str(calls),
            "ENTRA_SYNC_PYTHON": sys.executable,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def recorded(calls: Path, name: str) -> list[str]:
    log = calls / name
    return log.read_text().splitlines() if log.exists() else []


def test_preprovision_checks_the_mapping_then_writes_its_targets_into_the_azd_environment(tmp_path: Path) -> None:
    bin_dir, calls = tools(tmp_path)
    (tmp_path / "mapping.yaml").write_text(VALID)
    result = run("preprovision.sh", tmp_path, bin_dir, calls, SCIM_HR_TOKEN="hr-token-1")
    assert result.returncode == 0, result.stderr
    sets = {line.split(" ")[2]: line.split(" ", 3)[3] for line in recorded(calls, "azd")}
    assert all(line.startswith("env set ") for line in recorded(calls, "azd"))
    assert json.loads(sets["ENTRA_SYNC_TARGETS"])["secrets"] == [
        {"setting": "SCIM_HR_TOKEN", "vaultName": "scim-hr-token"}
    ]
    assert json.loads(sets["ENTRA_SYNC_TARGET_SECRETS"]) == {"SCIM_HR_TOKEN": "hr-token-1"}
    assert "hr-token-1" not in result.stdout + result.stderr


def test_preprovision_stops_before_azd_is_touched_when_a_value_or_the_mapping_is_wrong(tmp_path: Path) -> None:
    bin_dir, calls = tools(tmp_path)
    (tmp_path / "mapping.yaml").write_text(VALID)
    missing = run("preprovision.sh", tmp_path, bin_dir, calls)
    assert missing.returncode == 2
    assert (
        "SCIM_HR_TOKEN is not set (the mapping's target scim:hr): azd env set SCIM_HR_TOKEN <value>" in missing.stderr
    )
    (tmp_path / "mapping.yaml").write_text(INVALID)
    broken = run("preprovision.sh", tmp_path, bin_dir, calls, SCIM_HR_TOKEN="t")
    assert broken.returncode == 2 and "userPrincipalNmae" in broken.stderr
    assert recorded(calls, "azd") == []


def _grant_env(tmp_path: Path, bin_dir: Path, assigned: list[str]) -> dict[str, str]:
    (bin_dir / "az").write_text(FAKE_AZ)
    posts = tmp_path / "posts.log"
    return {
        "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
        "AZURE_TENANT_ID": "72f988bf-0000-4000-8000-000000000000",
        "FAKE_GRAPH_SP": GRAPH_SP,
        "FAKE_ROLES": "".join(f"{role_id}\t{name}\n" for name, role_id in ROLES.items()),
        "FAKE_ASSIGNED": "".join(f"{ROLES[name]}\n" for name in assigned),
        "FAKE_POSTS": str(posts),
    }


def test_postprovision_grants_the_graph_permissions(tmp_path: Path) -> None:
    bin_dir, calls = tools(tmp_path)
    env = _grant_env(tmp_path, bin_dir, [])
    result = run("postprovision.sh", tmp_path, bin_dir, calls, **env)
    assert result.returncode == 0, result.stderr
    posted = Path(env["FAKE_POSTS"]).read_text()
    assert {name for name in NEEDED if ROLES[name] in posted} == set(NEEDED)
    assert f"the managed identity {PRINCIPAL} holds the Microsoft Graph permissions" in result.stdout
    assert ROLES["Mail.Send"] not in posted  # the mapping sends no mail


def test_postprovision_grants_mail_send_where_the_mapping_sends_mail(tmp_path: Path) -> None:
    bin_dir, calls = tools(tmp_path)
    env = _grant_env(tmp_path, bin_dir, [])
    result = run("postprovision.sh", tmp_path, bin_dir, calls, **env, ENTRA_SYNC_MAIL_SEND="true")
    assert result.returncode == 0, result.stderr
    assert ROLES["Mail.Send"] in Path(env["FAKE_POSTS"]).read_text()


def test_postprovision_without_the_right_to_grant_prints_what_an_admin_must_run(tmp_path: Path) -> None:
    bin_dir, calls = tools(tmp_path)
    env = _grant_env(tmp_path, bin_dir, [])
    env["FAKE_POSTS"] = "/nonexistent/dir/posts.log"  # the stand-in's POST fails, as a 403 would
    result = run("postprovision.sh", tmp_path, bin_dir, calls, **env)
    assert result.returncode == 0  # the app is deployed; azd goes on
    message = " ".join(line.removeprefix("entra-sync: ") for line in result.stderr.splitlines())
    assert "needs Privileged Role Administrator or Global Administrator" in message
    assert f"bash infra/scripts/grant-graph-permissions.sh --principal-id {PRINCIPAL}" in message
    assert f"./infra/scripts/grant-graph-permissions.ps1 -PrincipalId {PRINCIPAL}" in message
    assert "az login --tenant 72f988bf-0000-4000-8000-000000000000" in message


def _fake_python(tmp_path: Path, status: str) -> Path:
    """The real interpreter, except that `-m shared.cli status --json` answers ``status``."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        f"if [ \"$*\" = \"-m shared.cli status --json\" ]; then printf '%s' '{status}'; exit 1; fi\n"
        f'exec "{sys.executable}" "$@"\n'
    )
    fake.chmod(0o755)
    return fake


DEPLOYED = {
    "AZURE_RESOURCE_GROUP": "rg-prod",
    "AZURE_FUNCTION_NAME": "func-api-abc",
    "SERVICE_API_URI": "https://func-api-abc.azurewebsites.net",
}


def test_postdeploy_runs_subscriptions_renew_with_the_master_key_and_reports_the_subscriptions(tmp_path: Path) -> None:
    # curl's stand-in keeps the header file it is given (the hook deletes it afterwards).
    bin_dir, calls = tools(tmp_path, curl='for a in "$@"; do case $a in @*) cp "${a#@}" "$CALLS/headers";; esac; done')
    python = _fake_python(tmp_path, json.dumps(STATUS))
    result = run("postdeploy.sh", tmp_path, bin_dir, calls, **DEPLOYED, ENTRA_SYNC_PYTHON=str(python),
                 FAKE_AZ_OUT="master-key-123", FAKE_CURL_OUT="202")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert recorded(calls, "az") == [
        "functionapp keys list --resource-group rg-prod --name func-api-abc --query masterKey --output tsv"
    ]
    (curl,) = recorded(calls, "curl")
    assert "--request POST" in curl
    assert curl.endswith("https://func-api-abc.azurewebsites.net/admin/functions/subscriptions_renew")
    assert "master-key-123" not in curl  # never on a command line
    assert "x-functions-key: master-key-123" in (calls / "headers").read_text()
    assert "subscriptions_renew started" in result.stdout
    assert "subscription on users expires 2026-12-30T00:00:00Z (created)" in result.stdout


def test_postdeploy_says_so_when_the_admin_api_refuses_and_when_the_subscriptions_cannot_be_read(
    tmp_path: Path,
) -> None:
    bin_dir, calls = tools(tmp_path)
    refused = run("postdeploy.sh", tmp_path, bin_dir, calls, **DEPLOYED, FAKE_AZ_OUT="k", FAKE_CURL_OUT="401")
    assert refused.returncode == 1 and "answered HTTP 401" in refused.stderr
    python = _fake_python(tmp_path, "not json: no data role")
    unread = run("postdeploy.sh", tmp_path, bin_dir, calls, **DEPLOYED, ENTRA_SYNC_PYTHON=str(python),
                 FAKE_AZ_OUT="k", FAKE_CURL_OUT="202", ENTRA_SYNC_WAIT_ATTEMPTS="2", ENTRA_SYNC_WAIT_S="0")  # fmt: skip
    assert unread.returncode == 0
    assert "not readable from here yet" in unread.stdout


# -- the PowerShell twins, textually ------------------------------------------------------------

TWINS = {
    "check-mapping": ["shared.mapping.deploy", "--check-only", "--mapping", "pip install -r requirements.txt",
                      "which .funcignore keeps out", "nothing was provisioned or deployed"],
    "preprovision": ["check-mapping"],
    "postprovision": ["grant-graph-permissions", "--principal-id $principal", "-PrincipalId $principal",
                      "Privileged Role Administrator or Global Administrator", "az login --tenant $tenant",
                      "azd hooks run postdeploy"],
    "postdeploy": ["az functionapp keys list --resource-group", "--query masterKey --output tsv",
                   "/admin/functions/subscriptions_renew", "x-functions-key", '{"input": ""}',
                   "shared.cli status --json", "shared.cli.subscriptions_report", "answered HTTP",
                   "not readable from here yet", "ENTRA_SYNC_WAIT_ATTEMPTS"],
    "grant-graph-permissions": ["00000003-0000-0000-c000-000000000000", "appRoleAssignments", "already granted: ",
                                "would grant: ", "granted: ", "which entra-sync does not need",
                                "az ad sp show --id", "allowedMemberTypes, 'Application'"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TWINS))
def test_each_powershell_twin_takes_the_same_steps_as_its_posix_script(name: str) -> None:
    posix = (INFRA / "scripts" / f"{name}.sh").read_text()
    twin = (INFRA / "scripts" / f"{name}.ps1").read_text()
    for step in TWINS[name]:
        assert step in posix, f"{name}.sh: {step}"
        assert step in twin, f"{name}.ps1: {step}"


def test_both_grant_scripts_grant_the_same_permissions() -> None:
    def permissions(text: str) -> list[str]:
        return re.findall(r"^\s+['\"]([A-Za-z]+\.Read\.All)['\"]\s*$", text, re.MULTILINE)

    posix = permissions((INFRA / "scripts" / "grant-graph-permissions.sh").read_text())
    assert posix == NEEDED
    assert permissions((INFRA / "scripts" / "grant-graph-permissions.ps1").read_text()) == posix
