"""Where the inbound sources meet the composition root: the kind (:mod:`.kind`) builds each source
the mapping names (``sources: {hr-push: {kind: scim_inbox}}``) through :func:`inbound_source`, over
the app's storage, queue and audit; the HTTP function reaches their endpoints through :func:`inbox`.

Settings (each read once, failing closed like every other setting): ``SCIM_INBOX_<NAME>_TOKEN``
(the name upper-cased, ``-`` as ``_``, or the source's ``token_setting``): that source's bearer
token, the Secret Token set in Entra; a Key Vault reference in Azure.
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


def token_setting(source: str) -> str:
    """The setting holding an inbound source's bearer token."""
    return f"SCIM_INBOX_{source.upper().replace('-', '_')}_TOKEN"


def read_tokens(env: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, Secret]:
    """Source name -> its token, read from the setting ``settings`` names for it;
    :class:`SettingsError` naming every problem at once."""
    reader = _Reader(env)
    tokens: dict[str, Secret] = {}
    for name, setting in settings.items():
        if not SOURCE_NAME.fullmatch(name):
            reader.problems.append(f"{name!r} is not a source name (a-z, 0-9, '-')")
            continue
        value = reader.required(setting, f"the bearer token of the inbound SCIM source {name}")
        if value is not None and (len(value) < 32 or not value.isascii() or not value.isprintable() or " " in value):
            reader.problems.append(f"{setting} must be at least 32 printable ASCII characters without spaces")
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

    @classmethod
    def of(cls, sources: Mapping[str, InboxSource], tables: Any = None) -> Inbox:
        """The inbound sources' endpoints, by name, from the sources themselves."""
        endpoints = {name: s.endpoint for name, s in sources.items() if s.endpoint is not None}
        return cls(InboxEndpoints(endpoints), dict(sources), tables)

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
    sources = {
        name: assemble(
            name, token, (rows or {}).get(name) or TableRows(tables.get_table_client(TABLE), name),
            queue, audit, scope, relevant_groups, clock,
        )
        for name, token in tokens.items()
    }  # fmt: skip
    return Inbox.of(sources, tables)


def inbound_source(name: str, token: Secret, context: Any) -> InboxSource:
    """One inbound source, as the composition root builds it (``context`` is its BuildContext):
    its store in the app's ``scimInbox`` table, its endpoint handing what changed to the app's queue
    and audit, and the source over the store, scoped as the mapping's targets it feeds read it."""
    mapping = context.mapping.for_source(name)
    rows = TableRows(context.tables.get_table_client(TABLE), name)
    return assemble(
        name, token, rows, context.queue, context.audit, mapping.scope, mapping.relevant_groups, context.clock
    )


def assemble(
    name: str,
    token: Secret,
    rows: Rows,
    queue: WorkQueue,
    audit: AuditStore | None,
    scope: Scope | None,
    relevant_groups: frozenset[str] | None,
    clock: Clock,
) -> InboxSource:
    """One inbound source over its ``rows``: the store, the source the worker reads, and the
    endpoint (``source.endpoint``) that hands what changed to ``queue`` and ``audit``."""
    storage = InboxStorage(rows, provider(), clock=clock)
    source = InboxSource(name, storage, scope, relevant_groups)
    source.endpoint = InboxEndpoint(name, token, storage, queue, audit)
    return source


_installed: Inbox | None = None  # a test's, in place of the app's
_built: tuple[object, Inbox] | None = None  # the app's, with the app it was built from


def inbox() -> Inbox:
    """The process's inbound sources: every source of the composition root that is one (built on
    first use after the app, and again for a new app), or the ones a test installed."""
    global _built
    if _installed is not None:
        return _installed
    from shared import bootstrap

    app = bootstrap.app()
    if _built is None or _built[0] is not app:
        built = {name: s for name, s in app.sources.items() if isinstance(s, InboxSource)}
        _built = (app, Inbox.of(built, app.tables))
    return _built[1]


def install(built: Inbox | None) -> None:
    """Make ``built`` the process's inbound sources (a test's, over its own rows), or forget them
    (None: the app's are used again)."""
    global _installed
    _installed = built
