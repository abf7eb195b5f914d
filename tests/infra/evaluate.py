"""Compute the values of Bicep expressions for given parameters, without a Bicep compiler.

Enough of the language for what the templates compute from their parameters: literals, string
interpolation, parameters (with their defaults), variables, lambdas, ``for`` arrays, the ternary,
comparisons, member access and the functions in :data:`FUNCTIONS`. What only Azure knows (a
resource's properties, another module's outputs when not given, ``tenant()``) is an :class:`Unknown`,
and anything computed from one is unknown too, so a check can see which values are decided by the
template alone. A construct outside that subset raises :class:`Unsupported` rather than guessing,
so a template that outgrows the evaluator fails its test loudly.

``guid()`` follows ARM's documented definition (an RFC 4122 version 5 UUID, SHA-1 under a fixed
namespace, of the arguments joined with '-'), so a value derived from it has the shape and spread
the deployed one has; the digits are trusted for that, not as what Azure computes byte for byte.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import tree_sitter

from tests.infra.bicep import BicepFile, properties, string_value

ARM_GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")


class Unsupported(Exception):
    """A construct the evaluator does not know: extend it, never guess."""


@dataclass(frozen=True)
class Unknown:
    """A value only the deployment knows (its source text, for messages)."""

    text: str


def arm_guid(*parts: str) -> str:
    return str(uuid.uuid5(ARM_GUID_NAMESPACE, "-".join(parts)))


def _union(*values: Any) -> Any:
    if all(isinstance(v, dict) for v in values):
        merged: dict[str, Any] = {}
        for value in values:
            merged.update(value)
        return merged
    if all(isinstance(v, list) for v in values):
        return list(dict.fromkeys(item for value in values for item in value))
    raise Unsupported("union() of mixed types")


def _to_object(items: list[Any], key: Callable[[Any], Any], value: Callable[[Any], Any] | None = None) -> Any:
    pairs = [(key(item), value(item) if value else item) for item in items]
    if any(isinstance(k, Unknown) for k, _ in pairs):
        return Unknown("toObject(...)")
    return dict(pairs)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "split": lambda text, sep: text.split(sep),
    "trim": lambda text: text.strip(),
    "empty": lambda value: len(value) == 0,
    "length": len,
    "join": lambda items, sep: sep.join(items),
    "replace": lambda text, old, new: text.replace(old, new),
    "toUpper": lambda text: text.upper(),
    "toLower": lambda text: text.lower(),
    "contains": lambda container, item: item in container,
    "map": lambda items, fn: [fn(item) for item in items],
    "filter": lambda items, fn: [item for item in items if fn(item)],
    "toObject": _to_object,
    "union": _union,
    "guid": arm_guid,
    "json": json.loads,
}
# Functions whose result only the deployment knows.
RUNTIME_FUNCTIONS = {"tenant", "subscription", "resourceGroup", "uniqueString", "loadJsonContent", "newGuid"}


class Evaluator:
    """Evaluate expressions of one file. ``given`` holds parameter values and stand-ins for
    symbols (a resource as a dict of what the check needs, a module as ``{'outputs': {...}}``);
    a parameter not given takes its default (Unknown without one: the deployment's input), and a
    resource or module not given is Unknown."""

    def __init__(self, file: BicepFile, given: Mapping[str, Any]):
        self.file = file
        self.given = dict(given)
        self.params = file.params()
        self.variables = file.variables()
        self.declared = self._declared_symbols()

    def _declared_symbols(self) -> set[str]:
        kinds = {"resource_declaration", "module_declaration"}
        return {self.file.text(n.named_children[0]) for n in self.file.root.named_children if n.type in kinds}

    def symbol(self, name: str) -> Any:
        if name in self.given:
            return self.given[name]
        if name in self.params:
            default = self.params[name]["default"]
            return Unknown(name) if default is None else self.eval(default)
        if name in self.variables:
            return self.eval(self.variables[name])
        if name in self.declared:
            return Unknown(name)
        raise Unsupported(f"{self.file.path.name}: unknown symbol {name}")

    def eval(self, node: tree_sitter.Node, local: Mapping[str, Any] | None = None) -> Any:
        local = local or {}
        kind = node.type
        text = self.file.text(node)
        if kind == "string":
            return self._string(node, local)
        if kind == "number":
            return int(text)
        if kind == "boolean":
            return text == "true"
        if kind == "null":
            return None
        if kind == "identifier":
            return local[text] if text in local else self.symbol(text)
        if kind == "parenthesized_expression":
            return self.eval(node.named_children[0], local)
        if kind == "array":
            return [self.eval(item, local) for item in node.named_children if item.type != "comment"]
        if kind == "object":
            return {key: self.eval(value, local) for key, value in properties(self.file, node).items()}
        if kind == "for_statement":
            return self._for(node, local)
        if kind == "member_expression":
            return self._member(node, local)
        if kind == "subscript_expression":
            base, index = (self.eval(child, local) for child in node.named_children)
            return Unknown(text) if isinstance(base, Unknown) or isinstance(index, Unknown) else base[index]
        if kind == "unary_expression":
            operator = node.children[0].type
            value = self.eval(node.named_children[0], local)
            if operator != "!":
                raise Unsupported(f"unary {operator}")
            return value if isinstance(value, Unknown) else not value
        if kind == "binary_expression":
            return self._binary(node, local)
        if kind == "ternary_expression":
            condition, when_true, when_false = node.named_children
            decided = self.eval(condition, local)
            if isinstance(decided, Unknown):
                return Unknown(text)
            return self.eval(when_true if decided else when_false, local)
        if kind == "call_expression":
            return self._call(node, local)
        raise Unsupported(f"{self.file.path.name}: {kind}: {text[:60]}")

    def _string(self, node: tree_sitter.Node, local: Mapping[str, Any]) -> Any:
        if "${" not in self.file.text(node):
            return string_value(self.file, node)
        parts: list[Any] = []
        for child in node.named_children:
            if child.type == "string_content":
                parts.append(self.file.text(child))
            elif child.type == "escape_sequence":
                parts.append({"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\$": "$"}[self.file.text(child)])
            elif child.type == "interpolation":
                parts.append(self.eval(child.named_children[0], local))
            else:
                raise Unsupported(f"string part {child.type}")
        if any(isinstance(part, Unknown) for part in parts):
            return Unknown(self.file.text(node))
        return "".join(str(part) for part in parts)

    def _for(self, node: tree_sitter.Node, local: Mapping[str, Any]) -> Any:
        head, items_node, body = node.named_children[0], node.named_children[1], node.named_children[-1]
        items = self.eval(items_node, local)
        if isinstance(items, Unknown):
            return Unknown(self.file.text(node))
        if head.type == "for_loop_parameters":
            item_name, index_name = (self.file.text(child) for child in head.named_children)
        else:
            item_name, index_name = self.file.text(head), None
        result = []
        for index, item in enumerate(items):
            scope = {**local, item_name: item, **({index_name: index} if index_name else {})}
            result.append(self.eval(body, scope))
        return result

    def _member(self, node: tree_sitter.Node, local: Mapping[str, Any]) -> Any:
        base = self.eval(node.named_children[0], local)
        name = self.file.text(node.named_children[1])
        if isinstance(base, Unknown):
            return Unknown(self.file.text(node))
        if not isinstance(base, dict) or name not in base:
            raise Unsupported(f"{self.file.path.name}: no {name!r} in {self.file.text(node.named_children[0])}")
        return base[name]

    def _binary(self, node: tree_sitter.Node, local: Mapping[str, Any]) -> Any:
        operator = next(child.type for child in node.children if not child.is_named)
        left, right = (self.eval(child, local) for child in node.named_children)
        if isinstance(left, Unknown) or isinstance(right, Unknown):
            return Unknown(self.file.text(node))
        operations: dict[str, Callable[[Any, Any], Any]] = {
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "&&": lambda a, b: a and b,
            "||": lambda a, b: a or b,
            "??": lambda a, b: b if a is None else a,
        }
        if operator not in operations:
            raise Unsupported(f"operator {operator}")
        return operations[operator](left, right)

    def _call(self, node: tree_sitter.Node, local: Mapping[str, Any]) -> Any:
        name = self.file.text(node.named_children[0])
        arguments = node.named_children[1].named_children
        if name in RUNTIME_FUNCTIONS:
            return Unknown(self.file.text(node))
        if name not in FUNCTIONS:
            raise Unsupported(f"{self.file.path.name}: function {name}()")
        values = [
            self._lambda(arg, local) if arg.type == "lambda_expression" else self.eval(arg, local) for arg in arguments
        ]
        if any(isinstance(value, Unknown) for value in values):
            return Unknown(self.file.text(node))
        return FUNCTIONS[name](*values)

    def _lambda(self, node: tree_sitter.Node, local: Mapping[str, Any]) -> Callable[..., Any]:
        *names, body = node.named_children
        if len(names) != 1 or names[0].type != "identifier":
            raise Unsupported(f"lambda {self.file.text(node)[:40]}")
        parameter = self.file.text(names[0])
        return lambda value: self.eval(body, {**local, parameter: value})


def module_params(file: BicepFile, symbol: str) -> dict[str, tree_sitter.Node]:
    """A module declaration's ``params``: name -> value node."""
    for node in file.root.named_children:
        if node.type == "module_declaration" and file.text(node.named_children[0]) == symbol:
            body = node.named_children[-1]
            while body.type != "object":  # `= if (...) {...}`
                body = body.named_children[-1]
            return properties(file, properties(file, body)["params"])
    raise AssertionError(f"no module {symbol} in {file.path.name}")


def module_condition(file: BicepFile, symbol: str) -> tree_sitter.Node | None:
    """The condition of ``module x '...' = if (condition) {...}``, or None when it has none."""
    for node in file.root.named_children:
        if node.type == "module_declaration" and file.text(node.named_children[0]) == symbol:
            conditional = [child for child in node.named_children if child.type == "if_statement"]
            return conditional[0].named_children[0] if conditional else None
    raise AssertionError(f"no module {symbol} in {file.path.name}")
