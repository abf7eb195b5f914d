"""Every validation pattern matches the whole value: ``re.match`` with ``$`` accepts a trailing
newline (``$`` matches before it), which would carry a configured or pushed value past the check."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from shared.mapping.load import parse_mapping
from shared.mapping.model import MappingError
from shared.services.reconcile import RunNotFound, check_run_id
from shared.settings import _Reader

GUID = "3f2a9c4e-1b7d-4c2a-9e8f-0a1b2c3d4e5f"
MINIMAL = "version: 1\nattributes:\n  - {source: mail, target: email}\n"


def settings_guid(value: str) -> None:
    reader = _Reader({})
    reader.guid("AZURE_TENANT_ID", value)
    if reader.problems:
        raise ValueError(reader.problems[0])


def mapping_source(value: str) -> None:
    parse_mapping(f"version: 1\nattributes:\n  - {{source: {json.dumps(value)}, target: email}}\n")


def mapping_metadata_key(value: str) -> None:
    parse_mapping(MINIMAL + f"matching: {{app_metadata_key: {json.dumps(value)}}}\n")


def mapping_mfa_flag(value: str) -> None:
    parse_mapping(MINIMAL + f"risk: {{mfa_flag: {json.dumps(value)}}}\n")


# check, a valid value, the value with a newline where ``$`` would let it through, the error
CHECKS: dict[str, tuple[Callable[[str], object], str, str, type[Exception]]] = {
    "settings GUID": (settings_guid, GUID, GUID + "\n", ValueError),
    # the mapping strips a path, so the newline ends one of its dotted parts
    "mapping source path": (mapping_source, "manager.id", "manager\n.id", MappingError),
    "mapping app_metadata_key": (mapping_metadata_key, "entra_id", "entra_id\n", MappingError),
    "mapping risk.mfa_flag": (mapping_mfa_flag, "require_mfa", "require_mfa\n", MappingError),
    "reconciliation run id": (check_run_id, "20261122T020000Z-1a2b3c", "20261122T020000Z-1a2b3c\n", RunNotFound),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_a_trailing_newline_never_passes_a_validation_pattern(name: str) -> None:
    check, valid, with_newline, error = CHECKS[name]
    check(valid)
    with pytest.raises(error):
        check(with_newline)
