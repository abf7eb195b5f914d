"""Every Bicep file parses cleanly, and the checker itself finds broken Bicep."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.bicep import INFRA, bicep_files, syntax_errors

EXPECTED_FILES = {
    "main.bicep",
    "app/api.bicep",
    "app/identity.bicep",
    "app/keyvault.bicep",
    "app/monitoring.bicep",
    "app/rbac.bicep",
    "app/storage.bicep",
}


def test_the_infra_files_are_all_there() -> None:
    assert {str(p.relative_to(INFRA)) for p in bicep_files()} >= EXPECTED_FILES


@pytest.mark.parametrize("bicep", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_has_no_syntax_errors(bicep: Path) -> None:
    problems = syntax_errors(bicep.read_bytes(), str(bicep.relative_to(INFRA.parent)))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "snippet",
    [
        pytest.param("param name string\nresource r 'A/b@2024-01-01' = {\n  name: name\n", id="unclosed-object"),
        pytest.param("param name string\nvar x = [\n  'a'\n  'b'\n", id="unclosed-array"),
        pytest.param("param name string = \nparam other string\n", id="missing-value"),
        pytest.param("resource r 'A/b@2024-01-01' = {\n  name: 'n'\n  properties: { a: 1 ]\n}\n", id="bad-bracket"),
        pytest.param("output x string = concat('a', \n", id="unclosed-call"),
        pytest.param("var ok = 1\nvar broken = {\n  a: 'x\n}\n", id="unterminated-string"),
    ],
)
def test_checker_reports_broken_bicep_with_file_line_and_column(snippet: str) -> None:
    problems = syntax_errors(snippet.encode(), "broken.bicep")
    assert problems, f"the checker missed a syntax error in:\n{snippet}"
    line_count = snippet.count("\n") + 1
    for problem in problems:
        match = re.match(r"^broken\.bicep:(\d+):(\d+): \S", problem)
        assert match, problem
        assert 1 <= int(match.group(1)) <= line_count, problem


def test_checker_accepts_valid_bicep() -> None:
    valid = "@description('x')\nparam name string = 'a'\nvar list = [\n  name\n]\noutput n string = name\n"
    assert syntax_errors(valid.encode(), "ok.bicep") == []
