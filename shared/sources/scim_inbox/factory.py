"""The one seam between the inbound endpoint and the composition root (until the source registry
builds inbound sources itself): which inbound sources this app serves, their tokens, and their
endpoints and sources built over the app's storage, queue and audit.

Settings (each read once, failing closed like every other setting):

- ``SCIM_INBOX_SOURCES``: the inbound sources' names, comma-separated (``hr-push``); interim, until
  the mapping's ``sources:`` names them;
- ``SCIM_INBOX_<NAME>_TOKEN`` (the name upper-cased, ``-`` as ``_``): that source's bearer token,
  the Secret Token set in Entra; a Key Vault reference in Azure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError

from shared.clock import SYSTEM, Clock
from shared.core.ports import AuditStore, WorkQueue
from shared.core.work import SOURCE_NAME
from shared.mapping.model import Scope
from shared.settings import Secret, SettingsError, _Reader
from shared.sources.scim_inbox.endpoint import InboxEndpoint, InboxEndpoints
from shared.sources.scim_inbox.rows import TABLE, Rows, TableRows
from shared.sources.scim_inbox.schema import provider
from shared.sources.scim_inbox.source import InboxSource
from shared.sources.scim_inbox.storage import InboxStorage

SOURCES_SETTING = "SCIM_INBOX_SOURCES"


def token_setting(source: str) -> str:
    """The setting holding an inbound source's bearer token."""
    return f"SCIM_INBOX_{source.upper().replace('-', '_')}_TOKEN"


def read_tokens(env: Mapping[str, str], sources: list[str] | None = None) -> dict[str, Secret]:
    """Source name -> its token, for the sources named (``SCIM_INBOX_SOURCES`` when None);
    :class:`SettingsError` naming every problem at once."""
    reader = _Reader(env)
    names = (
        sources
        if sources is not None
        else [n.strip() for n in (reader.raw(SOURCES_SETTING) or "").split(",") if n.strip()]
    )
    tokens: dict[str, Secret] = {}
    for name in names:
        if not SOURCE_NAME.fullmatch(name):
            reader.problems.append(f"{SOURCES_SETTING}: {name!r} is not a source name (a-z, 0-9, '-')")
            continue
        value = reader.required(token_setting(name), f"the bearer token of the inbound SCIM source {name}")
        if value is not None and (len(value) < 32 or not value.isascii() or not value.isprintable() or " " in value):
            reader.problems.append(
                f"{token_setting(name)} must be at least 32 printable ASCII characters without spaces"
            )
        elif value is not None:
            tokens[name] = Secret(value)
    if reader.problems:
        raise SettingsError(reader.problems)
    return tokens


@dataclass
class Inbox:
    """What the HTTP function and the worker need of the inbound sources."""

    endpoints: InboxEndpoints
    sources: dict[str, InboxSource]
    tables: Any = None
    _table_ready: bool = False

    async def ensure_table(self) -> None:
        if self._table_ready or self.tables is None:
            return
        with contextlib.suppress(ResourceExistsError):
            await self.tables.create_table(TABLE)
        self._table_ready = True


def build_inbox(
    tokens: Mapping[str, Secret],
    queue: WorkQueue,
    audit: AuditStore | None,
    *,
    tables: Any = None,
    rows: Mapping[str, Rows] | None = None,
    scope: Scope | None = None,
    relevant_groups: frozenset[str] | None = None,
    clock: Clock = SYSTEM,
) -> Inbox:
    """The endpoints and sources of every inbound source in ``tokens``, their rows in the
    ``scimInbox`` table of ``tables`` (a TableServiceClient), or in ``rows`` (by source name)."""
    endpoints: dict[str, InboxEndpoint] = {}
    sources: dict[str, InboxSource] = {}
    for name, token in tokens.items():
        source_rows = (rows or {}).get(name) or TableRows(tables.get_table_client(TABLE), name)
        storage = InboxStorage(source_rows, provider(), clock=clock)
        endpoints[name] = InboxEndpoint(name, token, storage, queue, audit)
        sources[name] = InboxSource(name, storage, scope, relevant_groups)
    return Inbox(InboxEndpoints(endpoints), sources, tables)


_inbox: Inbox | None = None


def inbox() -> Inbox:
    """The process's inbound sources, over the composition root's storage, queue and audit (built
    on first use). The lead's wiring replaces this with the source registry's kinds."""
    global _inbox
    if _inbox is None:
        from shared import bootstrap

        app = bootstrap.app()
        _inbox = build_inbox(
            read_tokens(app.settings.env), app.queue, app.audit, tables=app.tables,
            scope=app.mapping.scope, relevant_groups=app.mapping.relevant_groups, clock=app.clock,
        )  # fmt: skip
    return _inbox


def install(built: Inbox | None) -> None:
    """Make ``built`` the process's inbound sources (a test's, over its own rows), or forget them
    (None: the next use builds them from the app again)."""
    global _inbox
    _inbox = built
