"""Every file that azure.yaml, the Bicep templates and the README name is in the repository.

A dangling name is a step that cannot be followed: azure.yaml once sent people to a
``docs/deploy.md`` that did not exist. Names are read from the text (inline code, code blocks,
comments, Bicep strings) where they look like a file: a known extension, a trailing ``/`` for a
folder, or a leading ``.``. One with a folder in it must exist at that path (from the repository
root, or from the Bicep file that names it); a bare file name must exist somewhere in the tree.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.infra.bicep import INFRA, REPO, bicep_files

EXTENSIONS = (".py", ".md", ".json", ".yaml", ".yml", ".bicep", ".sh", ".ps1", ".txt", ".toml", ".cfg")
# Named in the documents, deliberately not in the repository.
NOT_IN_THE_REPOSITORY = {
    "mapping.yaml": "the operator's own mapping, made from mapping.example.yaml; azd's hook stops without it",
    "local.settings.json": "made from local.settings.example.json for a local run",
    "report.json": "a report blob each reconciliation run writes",
    "report.csv": "a report blob each reconciliation run writes",
    "report.html": "a report blob each reconciliation run writes",
    "new.yaml": "the operator's proposed mapping that entra-sync preview tries",
    "sandbox-run/": "where python -m sandbox serve writes its mapping and settings",
    "sandbox-run/local.settings.json": "written by python -m sandbox serve",
    "sandbox-run/mapping.yaml": "written by python -m sandbox serve",
}
MADE_BY_MAKE_INSTALL = (".venv/", "node_modules/")
NOT_WALKED = {".git", ".venv", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache", "__pycache__"}

_URL = re.compile(r"\w+://\S+")
# A run of path characters not glued to a placeholder (``runs/<run_id>/report.json``) or an index.
_TOKEN = re.compile(r"(?<![\w./<{}()\]\[$-])(\.?[\w-]+(?:\.[\w-]+)*(?:/[\w.-]+)*/?)(?![\w<{*])")


def names_in(text: str) -> set[str]:
    found: set[str] = set()
    for match in _TOKEN.finditer(_URL.sub(" ", text)):
        name = match.group(1).rstrip(".")  # the full stop of a sentence
        if name.endswith(EXTENSIONS) or (name.endswith("/") and len(name) > 1) or re.match(r"\.\w", name):
            found.add(name)
    return found


@cache
def all_file_names() -> frozenset[str]:
    names: set[str] = set()
    for path in REPO.rglob("*"):
        if not NOT_WALKED.intersection(path.relative_to(REPO).parts):
            names.add(path.name)
    return frozenset(names)


def missing(names: set[str], *bases: Path) -> list[str]:
    """The names that are not in the repository (nor known to be made elsewhere)."""
    gone = []
    for name in sorted(names):
        if name in NOT_IN_THE_REPOSITORY or f"{name.rstrip('/')}/".startswith(MADE_BY_MAKE_INSTALL):
            continue
        if "/" in name.rstrip("/"):
            if not any((base / name).exists() for base in bases):
                gone.append(name)
        elif name.rstrip("/") not in all_file_names():
            gone.append(name)
    return gone


def test_names_are_found_where_the_documents_use_them() -> None:
    text = (
        "see docs/deploy.md. Run `infra/scripts/check-mapping.sh`; the `.funcignore`; `shared/`;"
        " `runs/<run_id>/report.json`; `attributes[3].transforms[1]`; 16/s; /api/health; https://a.example/x.md;"
        " subscription().tenantId"
    )
    assert names_in(text) == {"docs/deploy.md", "infra/scripts/check-mapping.sh", ".funcignore", "shared/"}


def test_every_file_the_readme_names_exists() -> None:
    assert missing(names_in((REPO / "README.md").read_text()), REPO) == []


def test_every_file_azure_yaml_names_exists() -> None:
    text = (REPO / "azure.yaml").read_text()
    project = yaml.safe_load(text)
    infra = project["infra"]
    named = names_in(text) | {f"{infra['path']}/{infra['module']}.bicep"}
    for hook in project.get("hooks", {}).values():
        named |= {platform["run"] for platform in hook.values()}
    assert missing(named, REPO) == []
    assert all((REPO / service["project"]).is_dir() for service in project["services"].values())


@pytest.mark.parametrize("bicep", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_file_a_bicep_template_names_exists(bicep: Path) -> None:
    assert missing(names_in(bicep.read_text()), bicep.parent, REPO) == []


def test_every_file_the_azd_parameters_name_exists() -> None:
    parameters = INFRA / "main.parameters.json"
    assert missing(names_in(parameters.read_text()), INFRA, REPO) == []
