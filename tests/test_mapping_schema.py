"""The mapping's JSON Schema (mapping.schema.json) says what the loader says: the committed copy is
the one the registered kinds and the loader's key sets make, every file the project ships or builds
passes both, and a key the loader refuses anywhere in a file the schema refuses too."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sandbox.demo import sandbox_day_mapping
from shared.mapping.load import parse_mapping
from shared.mapping.model import MappingError
from shared.mapping.schema import mapping_schema
from shared.targets.registry import KINDS

ROOT = Path(__file__).resolve().parents[1]
GROUPS = [{"id": f"{n}1111111-2222-4333-8444-555555555555", "displayName": f"G{n}"} for n in "abc"]


def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(mapping_schema())


def shipped() -> dict[str, Any]:
    """The example file, and the one the demo and ``serve`` run (every section the sandbox has)."""
    return {
        "mapping.example.yaml": yaml.safe_load((ROOT / "mapping.example.yaml").read_text()),
        "sandbox": yaml.safe_load(sandbox_day_mapping(GROUPS, "http://127.0.0.1:1/scim/v2")),
    }


def test_the_committed_schema_is_the_one_the_kinds_and_the_loader_make() -> None:
    committed = json.loads((ROOT / "mapping.schema.json").read_text())
    assert committed == mapping_schema(), "regenerate it: python -m shared.mapping.schema > mapping.schema.json"
    jsonschema.Draft202012Validator.check_schema(committed)
    assert (
        (ROOT / "mapping.example.yaml")
        .read_text()
        .startswith("# yaml-language-server: $schema=./mapping.schema.json\n")
    )


@pytest.mark.parametrize("name", ["mapping.example.yaml", "sandbox"])
def test_every_file_the_project_ships_passes_the_schema_and_the_loader(name: str) -> None:
    data = shipped()[name]
    assert [e.message for e in validator().iter_errors(data)] == []
    parse_mapping(json.dumps(data), json_only=True)  # raises with the loader's messages if not


def _at(path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Where in the sandbox's file an unknown key goes."""

    def into(data: dict[str, Any]) -> dict[str, Any]:
        node: Any = data
        for part in path.split("/") if path else []:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node["surprise"] = 1
        return data

    return into


PLACES = [
    "", "sources/entra", "scope", "scope/conditions/0", "targets/auth0", "targets/auth0/attributes/0",
    "targets/auth0/roles/0", "targets/auth0/matching", "targets/auth0/deprovision", "targets/auth0/guard",
    "targets/auth0/reconcile", "targets/scim:crm", "targets/scim:crm/groups/0", "risk",
]  # fmt: skip


@pytest.mark.parametrize("place", PLACES)
def test_a_key_the_loader_refuses_the_schema_refuses(place: str) -> None:
    data = shipped()["sandbox"]
    data.setdefault("scope", {}).setdefault("conditions", [{"attribute": "department", "operator": "is_present"}])
    data.setdefault("risk", {})
    assert [e.message for e in validator().iter_errors(data)] == []
    changed = _at(place)(copy.deepcopy(data))
    assert list(validator().iter_errors(changed)), f"the schema took an unknown key at {place or 'the top'}"
    with pytest.raises(MappingError, match="unknown"):
        parse_mapping(json.dumps(changed), json_only=True)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_s_own_keys_are_offered_in_its_sections(kind: str) -> None:
    section = mapping_schema()["properties"]["targets"]["patternProperties"][f"^{kind}(:.*)?$"]
    keys = set(section["properties"])
    k = KINDS[kind]
    assert k.option_keys <= keys and k.grants_key in keys and "attributes" in keys
    assert set(section["properties"]["matching"]["properties"]) >= k.matching_keys
