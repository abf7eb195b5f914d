"""SOQL text with values that stay data.

Every value a query carries passes through :func:`quote`: inside a single-quoted SOQL string a
backslash and a quote are escaped (as are the control characters SOQL gives escapes for), so a
hostile value such as ``x' OR Name != '`` is compared as that text and never read as SOQL. Field and
object names come from this package's own constants, never from input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from shared.errors import NotFound

RECORD_ID: Final = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")

_ESCAPES: Final = {
    "\\": "\\\\",
    "'": "\\'",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    '"': '\\"',
}


def quote(value: str) -> str:
    """A SOQL string literal holding ``value`` exactly."""
    return "'" + "".join(_ESCAPES.get(c, c) for c in str(value)) + "'"


def values(items: Iterable[str]) -> str:
    """``('a', 'b')`` for an ``IN``; at least one value is needed (the caller checks)."""
    return "(" + ", ".join(quote(i) for i in items) + ")"


def record_id(value: str) -> str:
    """A Salesforce record id (15 or 18 letters and digits) to put in a URL path; anything else is
    no record of this org."""
    if not RECORD_ID.fullmatch(value):
        raise NotFound(f"{value!r} is not a Salesforce record id")
    return value


def eq(field: str, value: str) -> str:
    """``field = 'value'``: the value quoted, the field one of this package's constants."""
    return f"{field} = {quote(value)}"


def within(field: str, items: Iterable[str]) -> str:
    """``field IN ('a', 'b')``."""
    return f"{field} IN {values(items)}"


def select(fields: Iterable[str], sobject: str, where: str = "", limit: int | None = None) -> str:
    """A SELECT. ``fields`` and ``sobject`` are this package's constants; every value in ``where``
    came through :func:`quote` (by :func:`eq` and :func:`within`)."""
    text = f"SELECT {', '.join(fields)} FROM {sobject}"  # noqa: S608 (see above)
    if where:
        text += f" WHERE {where}"
    return text + (f" LIMIT {int(limit)}" if limit else "")
