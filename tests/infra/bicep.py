"""A small reader for Bicep files built on tree-sitter-bicep.

There is no Bicep compiler offline, so the tests parse the files with the tree-sitter grammar and
read declarations (params, vars, resources, outputs) and literal values from the syntax tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter
import tree_sitter_bicep

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

_LANGUAGE = tree_sitter.Language(tree_sitter_bicep.language())


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse_source(source: bytes) -> tree_sitter.Tree:
    return tree_sitter.Parser(_LANGUAGE).parse(source)


def syntax_errors(source: bytes, name: str) -> list[str]:
    """Every ERROR or MISSING node as 'name:line:column: message' (1-based line and column)."""
    problems: list[str] = []

    def visit(node: tree_sitter.Node) -> None:
        if node.is_error or node.is_missing:
            line, column = node.start_point
            snippet = source[node.start_byte : node.end_byte].decode(errors="replace").splitlines()
            if node.is_missing:
                what = f"missing {node.type!r}"
            else:
                what = f"syntax error near {snippet[0][:40]!r}" if snippet else "syntax error"
            problems.append(f"{name}:{line + 1}:{column + 1}: {what}")
            if node.is_error:
                return  # one report per broken region
        for child in node.children:
            visit(child)

    visit(parse_source(source).root_node)
    return problems


@dataclass(frozen=True)
class Resource:
    symbol: str
    type: str  # full type without the API version, e.g. Microsoft.Storage/storageAccounts/queueServices/queues
    api_version: str
    body: tree_sitter.Node  # the resource's object
    file: Path
    existing: bool  # a reference to a resource declared elsewhere (`existing`)


class BicepFile:
    def __init__(self, path: Path):
        self.path = path
        self.source = path.read_bytes()
        self.root = parse_source(self.source).root_node

    def text(self, node: tree_sitter.Node) -> str:
        return self.source[node.start_byte : node.end_byte].decode()

    # -- declarations ------------------------------------------------------------------------------

    def params(self) -> dict[str, dict[str, Any]]:
        """name -> {'decorators': [names], 'default': node | None, 'type': str}."""
        result: dict[str, dict[str, Any]] = {}
        pending: list[str] = []
        for node in self.root.named_children:
            if node.type == "comment":
                continue
            if node.type == "decorators":
                pending = [self.text(d.named_children[0].named_children[0]) for d in node.named_children]
                continue
            if node.type == "parameter_declaration":
                name, _type, *rest = node.named_children
                result[self.text(name)] = {"decorators": pending, "default": rest[-1] if rest else None}
            pending = []
        return result

    def variables(self) -> dict[str, tree_sitter.Node]:
        return {
            self.text(n.named_children[0]): n.named_children[-1]
            for n in self.root.named_children
            if n.type == "variable_declaration"
        }

    def outputs(self) -> dict[str, tree_sitter.Node]:
        return {
            self.text(n.named_children[0]): n.named_children[-1]
            for n in self.root.named_children
            if n.type == "output_declaration"
        }

    def resources(self) -> list[Resource]:
        found: list[Resource] = []
        for node in self.root.named_children:
            if node.type == "resource_declaration":
                found.extend(self._resource(node, parent_type=None, parent_version=""))
        return found

    def _resource(self, node: tree_sitter.Node, parent_type: str | None, parent_version: str) -> Iterator[Resource]:
        symbol = self.text(node.named_children[0])
        type_and_version = string_value(self, node.named_children[1])
        type_, _, version = type_and_version.partition("@")
        if parent_type is not None and "/" not in type_:
            type_ = f"{parent_type}/{type_}"
            version = version or parent_version  # a nested child takes its parent's API version
        body = node.named_children[-1]
        # `= if (...) {...}` and `= [for ...: {...}]` wrap the object.
        while body.type != "object":
            body = body.named_children[-1]
        existing = any(child.type == "existing" for child in node.children)
        yield Resource(symbol, type_, version, body, self.path, existing)
        for prop in body.named_children:
            # The grammar wraps a nested resource declaration in an object_property.
            nested = prop.named_children[0] if prop.type == "object_property" and prop.named_children else prop
            if nested.type == "resource_declaration":
                yield from self._resource(nested, parent_type=type_, parent_version=version)


def string_value(file: BicepFile, node: tree_sitter.Node) -> str:
    """The value of a string literal without interpolation."""
    assert node.type == "string", f"{file.path.name}: expected a string, got {node.type}: {file.text(node)}"
    text = file.text(node)
    assert "${" not in text, f"{file.path.name}: expected a plain string, got {text}"
    if text.startswith("'''"):
        return text[3:-3]
    return text[1:-1].replace("\\'", "'").replace("\\\\", "\\")


def literal(file: BicepFile, node: tree_sitter.Node) -> Any:
    """A Python value for a literal (string, number, bool, null, array, object); else the source text."""
    kind = node.type
    if kind == "string" and "${" not in file.text(node):
        return string_value(file, node)
    if kind == "number":
        return int(file.text(node))
    if kind == "boolean":
        return file.text(node) == "true"
    if kind == "null":
        return None
    if kind == "array":
        return [literal(file, item) for item in node.named_children if item.type != "comment"]
    if kind == "object":
        return {key: literal(file, value) for key, value in properties(file, node).items()}
    return file.text(node)


def properties(file: BicepFile, obj: tree_sitter.Node) -> dict[str, tree_sitter.Node]:
    """The properties of an object node: key -> value node (nested resources are left out)."""
    result: dict[str, tree_sitter.Node] = {}
    for prop in obj.named_children:
        if prop.type != "object_property" or prop.named_children[0].type == "resource_declaration":
            continue
        key_node, value = prop.named_children[0], prop.named_children[-1]
        plain = key_node.type == "string" and "${" not in file.text(key_node)
        key = string_value(file, key_node) if plain else file.text(key_node)
        result[key] = value
    return result


def path(file: BicepFile, obj: tree_sitter.Node, *keys: str) -> tree_sitter.Node:
    """Follow object keys from obj, failing with a readable message when one is absent."""
    node = obj
    for key in keys:
        props = properties(file, node)
        assert key in props, f"{file.path.name}: no {key!r} in {'.'.join(keys)}"
        node = props[key]
    return node


@cache
def load(relative: str) -> BicepFile:
    return BicepFile(INFRA / relative)


def all_resources() -> list[Resource]:
    """Every resource the templates deploy (references to `existing` resources left out)."""
    return [r for p in bicep_files() for r in load(str(p.relative_to(INFRA))).resources() if not r.existing]


def resource(type_: str) -> tuple[BicepFile, Resource]:
    matches = [r for r in all_resources() if r.type == type_]
    assert len(matches) == 1, f"expected one {type_} resource, found {len(matches)}"
    found = matches[0]
    return load(str(found.file.relative_to(INFRA))), found


def app_settings() -> tuple[BicepFile, dict[str, tree_sitter.Node]]:
    """The Function App's fixed app settings (the sites/config 'appsettings' resource): name -> value
    node, with the Auth0 ones (set only for a mapping with an Auth0 target). The settings named after
    the mapping's other targets and inbound SCIM sources are joined to them with ``union()``;
    :mod:`tests.infra.evaluate` computes those for given targets and sources."""
    file, config = resource("Microsoft.Web/sites/config")
    assert literal(file, path(file, config.body, "name")) == "appsettings"
    settings = path(file, config.body, "properties")
    if settings.type == "call_expression" and file.text(settings.named_children[0]) == "union":
        arguments = settings.named_children[1].named_children
        fixed = [arg for arg in arguments if arg.type == "object"]
        assert len(fixed) == 1, f"{file.path.name}: expected one object literal of fixed settings in union()"
        found = properties(file, fixed[0])
        # A variable joined to them that is an object literal, or a ternary choosing one (the Auth0
        # settings, only for a mapping with an Auth0 target): its names are settings too.
        variables = file.variables()
        for arg in arguments:
            if arg.type == "identifier" and file.text(arg) in variables:
                for branch in _object_branches(variables[file.text(arg)]):
                    found |= properties(file, branch)
        return file, found
    return file, properties(file, settings)


def _object_branches(node: tree_sitter.Node) -> list[tree_sitter.Node]:
    if node.type == "object":
        return [node]
    if node.type == "ternary_expression":
        return [found for branch in node.named_children[1:] for found in _object_branches(branch)]
    return []
