"""Table Storage keys and values: encoded before they reach the service.

Keys are encoded before they reach the service: Table Storage forbids ``/ \\ # ?`` and control
characters in PartitionKey and RowKey (the SDK does not check; the service answers a bare 400 and
Azurite sometimes a 500), so any Entra id, UPN or email becomes a valid key, reversibly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from shared import names

_FORBIDDEN: Final = (
    frozenset("/\\#?%") | frozenset(chr(c) for c in range(0x20)) | frozenset(chr(c) for c in range(0x7F, 0xA0))
)


MAX_TEXT: Final = 30_000  # a string property holds 64 KiB of UTF-16; keep well inside it


BATCH_LIMIT: Final = 100  # operations in one table transaction (Azurite crashes past it)


async def replace_if_unchanged(table: TableClient, entity: Mapping[str, Any], etag: str | None) -> str | None:
    """Replace a row only if it is still the version ``etag`` names (optimistic concurrency): the
    new etag, or None when someone changed or deleted it first."""
    try:
        meta = await table.update_entity(
            entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
        )
    except (ResourceModifiedError, ResourceNotFoundError):
        return None
    return str(meta["etag"])


def encode_key(value: str) -> str:
    """Make ``value`` a valid PartitionKey/RowKey: forbidden characters (and ``%``) become ``%XX``."""
    if not value:
        raise ValueError("a table key cannot be empty")
    out = "".join(f"%{ord(ch):02X}" if ch in _FORBIDDEN else ch for ch in value)
    if len(out.encode("utf-16-le")) > 2048:  # the service's 1 KiB limit is in UTF-16 characters
        raise ValueError("a table key is limited to 1 KiB")
    return out


def decode_key(key: str) -> str:
    out, i = [], 0
    while i < len(key):
        if key[i] == "%":
            out.append(chr(int(key[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(key[i])
            i += 1
    return "".join(out)


def odata_string(value: str) -> str:
    """An OData string literal for a table filter: quotes doubled, whole value quoted."""
    return "'" + value.replace("'", "''") + "'"


def utc_text(when: datetime) -> str:
    """``when`` as the ISO 8601 text rows keep their times in (UTC, milliseconds, ``Z``), so that
    text comparisons of times (since, until, a cut-off) order them as time does."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> str:
    return utc_text(datetime.now(UTC))


async def ensure_tables(service: TableServiceClient, tables: tuple[str, ...] = names.TABLES) -> None:
    for table in tables:
        with contextlib.suppress(ResourceExistsError):
            await service.create_table(table)
