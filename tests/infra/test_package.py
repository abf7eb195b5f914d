"""``pip install .`` gives a CLI that can import: the package declares the runtime requirements.

The metadata is built here with the repository's own build backend (setuptools, installed by
requirements-dev.txt, no build isolation, so nothing is downloaded) in a copy of the files the
build reads, so the work tree gets no build output.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

from tests.infra.bicep import REPO

BUILD_INPUTS = ("pyproject.toml", "requirements.txt", "README.md", "shared")
METADATA_HOOK = (
    "import sys, setuptools.build_meta as backend; print(backend.prepare_metadata_for_build_wheel(sys.argv[1]))"
)


def runtime_requirements() -> set[str]:
    """requirements.txt as normalised requirement strings (comments and blank lines left out)."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines())
    return {str(Requirement(line)) for line in lines if line}


def built_metadata(tmp_path: Path) -> dict[str, list[str]]:
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    out = tmp_path / "metadata"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", METADATA_HOOK, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    dist_info = result.stdout.strip().splitlines()[-1]
    message = Parser().parsestr((out / dist_info / "METADATA").read_text())
    return {key: message.get_all(key) or [] for key in ("Name", "Requires-Dist", "Requires-Python")}


def test_the_built_package_requires_every_runtime_requirement_and_nothing_else(tmp_path: Path) -> None:
    metadata = built_metadata(tmp_path)
    assert metadata["Name"] == ["entra-sync"]
    assert {str(Requirement(r)) for r in metadata["Requires-Dist"]} == runtime_requirements()
    assert metadata["Requires-Python"] == ["<3.12,>=3.11"]
