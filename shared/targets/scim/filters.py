"""SCIM filter expressions (RFC 7644 section 3.4.2.2) with every value escaped.

A comparison value is a JSON value: scim2-models' ``ScimFilter.quote`` renders a string with its
quotes, backslashes and control characters escaped, so ``x" or userName pr or "`` is one string
that can only match itself, never a second clause. Each expression is parsed back by scim2-models
before it is sent: one that is not a single comparison is a bug here, not a request.
"""

from __future__ import annotations

import re
from typing import Final

from scim2_models import ScimFilter
from scim2_models.path.filter import Comparison  # type: ignore[attr-defined]

_ATTRIBUTE: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)?")


def quote(value: str) -> str:
    """A string as a SCIM filter's comparison value."""
    return ScimFilter.quote(str(value))


def eq(attribute: str, value: str) -> str:
    """``attribute eq "value"``; the attribute is ours (never from input) and checked all the same."""
    if not _ATTRIBUTE.fullmatch(attribute):
        raise ValueError(f"not a filterable attribute name: {attribute!r}")
    expression = f"{attribute} eq {quote(value)}"
    if not isinstance(ScimFilter(expression).ast, Comparison):  # pragma: no cover - quote() guarantees it
        raise ValueError(f"not one comparison: {expression!r}")
    return expression
