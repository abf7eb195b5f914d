"""The checker a mapping file is read with: it collects every problem of a file at once.

The loader checks the file's shared parts with it, and each source and target kind checks its own
keys with the same primitives, so a kind depends on this module, never on the loader. A problem is
``<entry>: <message>``, the entry named as a user would find it (``targets.auth0.connection``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from shared.mapping.model import Condition

SIMPLE_KEY: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}")


def nearest(name: str, known: Sequence[str]) -> str | None:
    """The closest known name, for a "did you mean" hint: a match that differs only in case first
    (paths are read exactly), else the nearest by spelling, else None."""
    for candidate in known:
        if candidate.casefold() == name.casefold():
            return candidate
    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None


class Checker:
    """Collects every problem of a file; source and target kinds use it to check their own keys."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # -- primitives ------------------------------------------------------------------------------------

    def keys(self, where: str, data: Any, allowed: set[str] | frozenset[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail(where, f"must be a mapping, got {type(data).__name__}")
            return {}
        for key in data:
            if key not in allowed:
                self.fail(f"{where}.{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return data

    def text(self, where: str, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"must be a non-empty string, got {value!r}")
            return None
        return value.strip()

    def flag(self, where: str, value: Any, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(where, f"must be true or false, got {value!r}")
            return default
        return value

    def choice(self, where: str, value: Any, options: Sequence[str], default: str) -> str:
        if value is None:
            return default
        if value not in options:
            self.fail(where, f"must be one of {', '.join(options)}, got {value!r}")
            return default
        return str(value)

    def string_list(self, where: str, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(where, f"must be a list, got {type(value).__name__}")
            return ()
        out = []
        for i, item in enumerate(value):
            text = self.text(f"{where}[{i}]", item)
            if text is not None:
                out.append(text)
        return tuple(out)

    def narrowing(self, entry: str, values: Mapping[str, Any], names: Mapping[str, str]) -> tuple[Condition, ...]:
        """The conditions a table entry adds to its group (``department: [Sales, Field Sales]``, one
        text or a list): each key of ``names`` given, as an ``in`` test of its source path."""
        conditions = []
        for name, path in names.items():
            if name in values:
                raw = values[name]
                allowed = self.string_list(f"{entry}.{name}", raw if isinstance(raw, list) else [raw])
                if allowed:
                    conditions.append(Condition(path, "in", allowed))
        return tuple(conditions)

    def simple_key(self, where: str, value: Any, default: str, what: str) -> str:
        if not isinstance(value, str) or not SIMPLE_KEY.fullmatch(value):
            self.fail(where, f"must be a simple {what}, got {value!r}")
            return default
        return value

    def number(self, where: str, value: Any, default: float, low: float, high: float) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.fail(where, f"must be a number from {low:g} to {high:g}, got {value!r}")
            return default
        return float(value)
