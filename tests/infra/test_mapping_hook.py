"""The azd hook that stops ``azd up`` before Azure is touched when the mapping file is missing.

The app refuses to start without the file ``SYNC_MAPPING_FILE`` names (default ``mapping.yaml``),
which a clean clone does not have. Each hook runs in a copy of the repository's layout, with and
without the file: the POSIX one under ``sh``, its PowerShell twin under ``pwsh`` where installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.bicep import INFRA, REPO

SCRIPT = INFRA / "scripts" / "check-mapping.sh"
TWIN = INFRA / "scripts" / "check-mapping.ps1"
SHELLS = {"sh": (SCRIPT, []), "pwsh": (TWIN, ["-NoProfile", "-NonInteractive", "-File"])}


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest) -> str:
    if shutil.which(request.param) is None:
        pytest.skip(f"{request.param} is not installed")
    return str(request.param)


def run_hook(root: Path, shell: str = "sh", **env: str) -> subprocess.CompletedProcess[str]:
    """The hook as azd runs it, from its place in a repository laid out at ``root``."""
    source, flags = SHELLS[shell]
    script = root / "infra" / "scripts" / source.name
    if not script.exists():
        script.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, script)
        shutil.copy2(REPO / ".funcignore", root / ".funcignore")
    return subprocess.run(
        [shutil.which(shell) or shell, *flags, str(script)],
        cwd=root / "infra",  # azd may run a hook from the script's folder: the hook must not rely on it
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
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
    (tmp_path / "mapping.yaml").write_text("version: 1\n")
    result = run_hook(tmp_path, shell)
    assert result.returncode == 0, result.stderr
    assert "mapping file 'mapping.yaml' found" in result.stdout


def test_the_hook_looks_for_the_file_sync_mapping_file_names(tmp_path: Path, shell: str) -> None:
    assert run_hook(tmp_path, shell, SYNC_MAPPING_FILE="config/prod.yaml").returncode == 1
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "prod.yaml").write_text("version: 1\n")
    assert run_hook(tmp_path, shell, SYNC_MAPPING_FILE="config/prod.yaml").returncode == 0
    (tmp_path / "mapping.yaml").write_text("version: 1\n")
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


def test_azure_yaml_runs_the_hook_before_provisioning_and_deploying_on_every_platform() -> None:
    hooks = yaml.safe_load((REPO / "azure.yaml").read_text())["hooks"]
    for event in ("preprovision", "predeploy"):
        assert hooks[event]["posix"] == {"shell": "sh", "run": "infra/scripts/check-mapping.sh", "interactive": True}
        assert hooks[event]["windows"] == {
            "shell": "pwsh",
            "run": "infra/scripts/check-mapping.ps1",
            "interactive": True,
        }
    assert TWIN.is_file()
    assert SCRIPT.stat().st_mode & 0o111, "the POSIX hook should be executable"
