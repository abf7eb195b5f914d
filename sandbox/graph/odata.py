"""The slice of OData the Graph emulator understands: ``$filter`` comparisons joined by ``and``,
``$select`` lists and DateTimeOffset values.

Filters are tokenized and parsed, never evaluated as code. Anything outside the grammar below is
refused with ``Request_UnsupportedQuery``, as Graph refuses what an endpoint does not support::

    filter     := comparison ("and" comparison)*
    comparison := property op literal
    op         := eq | ne | ge | gt | le | lt
    literal    := 'string with '' for a quote' | true | false | null | number | DateTimeOffset | GUID
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.server import HttpError

UNSUPPORTED = "Request_UnsupportedQuery"

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
      | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<word>[A-Za-z_][A-Za-z0-9_/]*)
      | (?P<other>\S)
    )""",
    re.VERBOSE,
)
_OPERATORS = {"eq", "ne", "ge", "gt", "le", "lt"}


@dataclass(frozen=True)
class Comparison:
    prop: str
    op: str
    value: Any  # str, bool, None, float, datetime


def unsupported(message: str) -> HttpError:
    return HttpError(400, UNSUPPORTED, message)


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 DateTimeOffset (``Z`` or an offset; up to 7 fractional digits) as aware UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    match = re.fullmatch(r"(.*T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?([+-]\d{2}:\d{2})?", value)
    if not match:
        raise ValueError(f"not a DateTimeOffset: {text!r}")
    base, fraction, offset = match.groups()
    if fraction:
        base += "." + fraction[:6].ljust(6, "0")
    parsed = datetime.fromisoformat(base + (offset or "+00:00"))
    return parsed.astimezone(UTC)


def parse_filter(text: str) -> list[Comparison]:
    """Parse ``text`` into comparisons that must all hold."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip():
                raise unsupported(f"Invalid filter clause: unexpected text at position {pos}.")
            break
        kind = match.lastgroup or "other"
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    if not tokens:
        raise unsupported("Invalid filter clause: the filter is empty.")

    comparisons: list[Comparison] = []
    i = 0
    while True:
        if i + 2 >= len(tokens):
            raise unsupported(f"Invalid filter clause: incomplete comparison in {text!r}.")
        (k1, prop), (k2, op), (k3, raw) = tokens[i : i + 3]
        if k1 != "word" or k2 != "word" or op.lower() not in _OPERATORS:
            raise unsupported(f"Unsupported filter clause near {prop!r} {op!r}: only 'property op value' is supported.")
        comparisons.append(Comparison(prop, op.lower(), _literal(k3, raw)))
        i += 3
        if i == len(tokens):
            return comparisons
        kind, word = tokens[i]
        if kind != "word" or word.lower() != "and":
            raise unsupported(f"Unsupported filter operator {word!r}: only 'and' joins comparisons here.")
        i += 1


def _literal(kind: str, raw: str) -> Any:
    if kind == "string":
        return raw[1:-1].replace("''", "'")
    if kind == "datetime":
        return parse_datetime(raw)
    if kind == "guid":
        return raw.lower()
    if kind == "number":
        return float(raw)
    if kind == "word" and raw in {"true", "false"}:
        return raw == "true"
    if kind == "word" and raw == "null":
        return None
    raise unsupported(f"Unsupported literal {raw!r} in filter.")


Predicate = Callable[[dict[str, Any]], bool]


def compile_filter(
    comparisons: Iterable[Comparison],
    allowed: dict[str, set[str]],
    *,
    case_insensitive: frozenset[str] = frozenset(),
    datetimes: frozenset[str] = frozenset(),
) -> Predicate:
    """A predicate over objects. ``allowed`` maps property -> operators the endpoint supports."""
    checks: list[Predicate] = []
    for comp in comparisons:
        ops = allowed.get(comp.prop)
        if ops is None or comp.op not in ops:
            raise unsupported(f"Unsupported or invalid query filter clause specified for property '{comp.prop}'.")
        checks.append(_check(comp, comp.prop in case_insensitive, comp.prop in datetimes))

    def predicate(obj: dict[str, Any]) -> bool:
        return all(check(obj) for check in checks)

    return predicate


def _check(comp: Comparison, fold: bool, is_datetime: bool) -> Predicate:
    want = comp.value
    if is_datetime and not isinstance(want, datetime):
        raise unsupported(f"'{comp.prop}' must be compared with a DateTimeOffset value.")
    if not is_datetime and isinstance(want, datetime):
        raise unsupported(f"'{comp.prop}' cannot be compared with a DateTimeOffset value.")
    if fold and isinstance(want, str):
        want = want.casefold()
    prop, op = comp.prop, comp.op

    def value_of(obj: dict[str, Any]) -> Any:
        have = obj.get(prop)
        if have is None:
            return None
        if is_datetime:
            return parse_datetime(have)
        if fold and isinstance(have, str):
            return have.casefold()
        return have

    def check(obj: dict[str, Any]) -> bool:
        have = value_of(obj)
        if op == "eq":
            return bool(have == want)
        if op == "ne":
            return bool(have != want)
        if have is None or want is None:
            return False
        if op == "ge":
            return bool(have >= want)
        if op == "gt":
            return bool(have > want)
        if op == "le":
            return bool(have <= want)
        return bool(have < want)

    return check


def parse_select(text: str | None) -> list[str] | None:
    """``$select=a,b`` -> ``["a", "b"]``; ``None`` when absent."""
    if text is None:
        return None
    props = [p.strip() for p in text.split(",") if p.strip()]
    for prop in props:
        if not re.fullmatch(r"[A-Za-z_@][A-Za-z0-9_.@]*", prop):
            raise HttpError(400, "BadRequest", f"Parsing OData Select and Expand failed: invalid property {prop!r}.")
    return props


def project(obj: dict[str, Any], select: list[str] | None, default: Iterable[str]) -> dict[str, Any]:
    """The properties Graph returns: the selected ones plus ``id``, or the endpoint's default set."""
    keys = default if select is None else ["id", *select]
    out: dict[str, Any] = {}
    for key in keys:
        if key in out:
            continue
        out[key] = obj.get(key)
    return out
