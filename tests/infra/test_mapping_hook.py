"""The azd hook that stops ``azd up`` before Azure is touched when the mapping file is missing or
invalid.

The app refuses to start without a valid file ``SYNC_MAPPING_FILE`` names (default
``mapping.yaml``), which a clean clone does not have. Each hook runs in a copy of the repository's
layout (its scripts, and the app's code the file is checked with), with and without the file: the
POSIX one under ``sh``, its PowerShell twin under ``pwsh`` where installed (pwsh cannot be installed
on the machine these tests were written on, so only ``sh`` ran there).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.infra.bicep import INFRA, REPO

SCRIPT = INFRA / "scripts" / "check-mapping.sh"
TWIN = INFRA / "scripts" / "check-mapping.ps1"
SHELLS = {"sh": (SCRIPT, []), "pwsh": (TWIN, ["-NoProfile", "-NonInteractive", "-File"])}
# A mapping the app loads (one SCIM target), and one it refuses.
VALID = (
    "version: 2\nscope: {}\ntargets:\n  scim:hr:\n    base_url: https://hr.example.com/scim/v2\n"
    "    token_setting: SCIM_HR_TOKEN\n    attributes:\n      - {source: userPrincipalName, target: userName}\n"
)
INVALID = VALID.replace("userPrincipalName", "userPrincipalNmae")


def repository(root: Path) -> Path:
    """A repository layout at ``root``: the hook scripts, .funcignore and the app's code."""
    scripts = root / "infra" / "scripts"
    if not scripts.exists():
        shutil.copytree(INFRA / "scripts", scripts)
        shutil.copy2(REPO / ".funcignore", root / ".funcignore")
        (root / "shared").symlink_to(REPO / "shared")
    return scripts


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest) -> str:
    if shutil.which(request.param) is None:
        pytest.skip(f"{request.param} is not installed")
    return str(request.param)


def run_hook(root: Path, shell: str = "sh", **env: str) -> subprocess.CompletedProcess[str]:
    """The hook as azd runs it, from its place in a repository laid out at ``root``."""
    source, flags = SHELLS[shell]
    script = repository(root) / source.name
    return subprocess.run(
        [shutil.which(shell) or shell, *flags, str(script)],
        cwd=root / "infra",  # azd may run a hook from the script's folder: the hook must not rely on it
        env={"PATH": "/usr/bin:/bin", "ENTRA_SYNC_PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_the_mapping_file_the_hook_stops_and_says_what_to_do(tmp_path: Path, shell: str) -> None:
    result = run_hook(tmp_path, shell)
    assert result.returncode == 1
    assert "the mapping file 'mapping.yaml' (SYNC_MAPPING_FILE) is not in" in result.stderr
    assert "refuses to start without it" in result.stderr
    assert "mapping.example.yaml mapping.yaml" in result.stderr  # the copy command
    assert "azd env set SYNC_MAPPING_FILE" in result.stderr


def test_with_the_mapping_file_the_hook_lets_azd_go_on(tmp_path: Path, shell: str) -> None:
    (tmp_path / "mapping.yaml").write_text(VALID)
    result = run_hook(tmp_path, shell)
    assert result.returncode == 0, result.stderr
    assert "mapping file 'mapping.yaml' found" in result.stdout
    assert "mapping file 'mapping.yaml' is valid (targets: scim:hr" in result.stdout


def test_an_invalid_mapping_stops_the_hook_with_the_checker_s_words(tmp_path: Path, shell: str) -> None:
    (tmp_path / "mapping.yaml").write_text(INVALID)
    result = run_hook(tmp_path, shell)
    assert result.returncode == 2
    assert "userPrincipalNmae" in result.stderr and "did you mean 'userPrincipalName'" in result.stderr
    assert "nothing was provisioned or deployed" in result.stderr


def test_without_the_app_s_packages_the_hook_says_how_to_install_them(tmp_path: Path) -> None:
    (tmp_path / "mapping.yaml").write_text(VALID)
    result = run_hook(tmp_path, "sh", ENTRA_SYNC_PYTHON="/usr/bin/false")
    assert result.returncode == 1
    assert "pip install -r requirements.txt" in result.stderr


def test_the_hook_looks_for_the_file_sync_mapping_file_names(tmp_path: Path, shell: str) -> None:
    assert run_hook(tmp_path, shell, SYNC_MAPPING_FILE="config/prod.yaml").returncode == 1
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "prod.yaml").write_text(VALID)
    assert run_hook(tmp_path, shell, SYNC_MAPPING_FILE="config/prod.yaml").returncode == 0
    (tmp_path / "mapping.yaml").write_text(VALID)
    missing = run_hook(tmp_path, shell, SYNC_MAPPING_FILE="config/other.yaml")
    assert missing.returncode == 1  # the default file being there does not help
    assert "'config/other.yaml' (SYNC_MAPPING_FILE) is not in" in missing.stderr


@pytest.mark.parametrize("name", ["tests/mapping.yaml", "./infra/mapping.yaml"])
def test_a_mapping_file_left_out_of_the_package_by_funcignore_stops_the_hook(
    tmp_path: Path, shell: str, name: str
) -> None:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("version: 1\n")
    result = run_hook(tmp_path, shell, SYNC_MAPPING_FILE=name)
    assert result.returncode == 1
    assert "which .funcignore keeps out of the deployment package" in " ".join(
        line.removeprefix("entra-sync: ") for line in result.stderr.splitlines()
    )


def test_a_mapping_path_on_this_machine_stops_the_hook(tmp_path: Path, shell: str) -> None:
    (tmp_path / "mapping.yaml").write_text("version: 1\n")
    result = run_hook(tmp_path, shell, SYNC_MAPPING_FILE=str(tmp_path / "mapping.yaml"))
    assert result.returncode == 1
    assert "must be relative to the app root" in result.stderr


def test_azure_yaml_runs_the_hooks_before_and_after_provisioning_and_deploying_on_every_platform() -> None:
    hooks = yaml.safe_load((REPO / "azure.yaml").read_text())["hooks"]
    scripts = {"preprovision": "preprovision", "postprovision": "postprovision", "predeploy": "check-mapping",
               "postdeploy": "postdeploy"}  # fmt: skip
    assert set(hooks) == set(scripts)
    for event, name in scripts.items():
        assert hooks[event]["posix"] == {"shell": "sh", "run": f"infra/scripts/{name}.sh", "interactive": True}
        assert hooks[event]["windows"] == {"shell": "pwsh", "run": f"infra/scripts/{name}.ps1", "interactive": True}
        assert (INFRA / "scripts" / f"{name}.ps1").is_file()
        assert (INFRA / "scripts" / f"{name}.sh").stat().st_mode & 0o111, f"{name}.sh should be executable"
