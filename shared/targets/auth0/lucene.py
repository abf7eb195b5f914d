"""Auth0 user search (Lucene, search_engine v3): values escaped before they reach a query."""

from __future__ import annotations

LUCENE_RESERVED = frozenset('+-&|!(){}[]^"~*?:\\/ ')


def lucene_phrase(value: str) -> str:
    """A quoted Lucene phrase for Auth0 search: quotes and backslashes escaped, nothing else can
    break out of the phrase."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lucene_term(value: str) -> str:
    """A bare Lucene term with every reserved character escaped."""
    return "".join("\\" + ch if ch in LUCENE_RESERVED else ch for ch in value)
