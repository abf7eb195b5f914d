"""The inbound store as the :class:`~shared.core.ports.Source` the worker reads: what Entra pushed,
re-read now (level-triggered, like a read of Graph).

An identity's ``attributes`` hold the values at :data:`.schema.PATHS` (``userName``, ``name.givenName``,
``emails.work``, ``department``, ``manager``, ...) as a mapping reads them
(:func:`shared.mapping.model.read_path`: one key per dotted step, so ``name.givenName`` is
``attributes["name"]["givenName"]``); its ``groups`` are the ids of the groups it is a
direct member of as this store knows them, and their displayNames (a mapping cannot know the ids
this store issues ahead of time, so it names an inbound group by its displayName), narrowed to the
ones the mapping names when it is given them.

Classification: ``active=false`` is disabled (a leaver); a DELETE, or an id never stored, is hard
deleted; a user the scope leaves out (``userType``, groups, conditions on these paths) is out of
scope. There is no soft delete: Entra sends ``active=false`` first where the tenant soft-deletes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from shared.core.classify import classify
from shared.core.model import Identity, SourceState
from shared.errors import DeltaExpired
from shared.mapping.model import Scope
from shared.sources.scim_inbox.schema import ENTERPRISE, PATHS
from shared.sources.scim_inbox.storage import InboxStorage, Stored

if TYPE_CHECKING:
    from shared.sources.scim_inbox.endpoint import InboxEndpoint

CURSOR_PREFIX: Final = "scim-inbox:"
IDENTITY_BATCH: Final = 32  # users of a stored page read at once when paging identities


class InboxSource:
    """One inbound source's identities (the port's ``read``, ``identities``, ``changed``)."""

    def __init__(
        self,
        name: str,
        storage: InboxStorage,
        scope: Scope | None = None,
        relevant_groups: frozenset[str] | None = None,
    ):
        self._name = name
        self.storage = storage
        self.scope = scope if scope is not None else Scope()
        self.relevant_groups = relevant_groups
        self.endpoint: InboxEndpoint | None = None  # where it is pushed to (the composition root sets it)

    @property
    def name(self) -> str:
        return self._name

    async def read(self, source_id: str) -> Identity:
        stored = await self.storage.user(source_id)
        if stored is None or stored.resource is None:
            return Identity(source_id, SourceState.HARD_DELETED, source=self._name)
        return await self._identity(stored)

    async def find_ids(self, key: str) -> list[str]:
        """The pushed users ``key`` names: an id of this store, a userName, or the externalId Entra
        sent (the user's object id in Entra)."""
        return await self.storage.find_user_ids(key)

    async def identities(self, page_size: int = 999) -> AsyncIterator[list[Identity]]:
        page: list[Identity] = []
        async for stored_page in self.storage.users():
            # The mapped groups are resolved once a stored page, then each user costs its membership rows.
            named = await self.storage.wanted_groups(self.relevant_groups)
            for at in range(0, len(stored_page), IDENTITY_BATCH):
                batch = stored_page[at : at + IDENTITY_BATCH]
                for identity in await asyncio.gather(*(self._identity(s, named) for s in batch)):
                    page.append(identity)
                    if len(page) >= page_size:
                        yield page
                        page = []
        if page:
            yield page

    async def changed(self, cursor: str | None) -> tuple[set[str], str]:
        """Users written or whose memberships changed since ``cursor`` (every user ever stored,
        deleted ones too, for None). A write in the same millisecond as the cursor's scan may be
        missed here; it is never missed by the worker, which every accepted change is enqueued to."""
        after: int | None = None
        if cursor is not None:
            if not cursor.startswith(CURSOR_PREFIX) or not cursor[len(CURSOR_PREFIX) :].isdigit():
                raise DeltaExpired(f"not a cursor of the inbound source {self._name}")
            after = int(cursor[len(CURSOR_PREFIX) :])
        now = self.storage.now_ms()
        return await self.storage.changed_since(after), f"{CURSOR_PREFIX}{now}"

    async def _identity(self, stored: Stored, named: Mapping[str, str] | None = None) -> Identity:
        """``stored`` as an identity; ``named``: the storage's ``wanted_groups`` for this source's
        relevant groups, when the caller has it (its membership rows are then all that is read)."""
        resource = {**(stored.resource or {}), "id": stored.id}  # the store keeps the id beside the resource
        attributes = attributes_of(resource)
        groups: frozenset[str] = frozenset()
        if stored.resource is not None and named is not None and self.relevant_groups is not None:
            groups = await self.storage.groups_among(stored.id, named, self.relevant_groups)
        elif stored.resource is not None:
            groups = await self.storage.groups_named(stored.id, self.relevant_groups)
        enabled = attributes.get("active") is not False
        state = classify(enabled, attributes, groups, self.scope)
        return Identity(stored.id, state, attributes, groups, source=self._name)


def attributes_of(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A stored user's values at :data:`.schema.PATHS` (nested, see :func:`nest`): the work (or primary,
    or first) email and address, the enterprise extension's values at their own names."""
    by_fold = {k.casefold(): v for k, v in resource.items()}
    out: dict[str, Any] = {}
    for path in PATHS:
        if "." not in path and path.casefold() in by_fold and not isinstance(by_fold[path.casefold()], (dict, list)):
            out[path] = by_fold[path.casefold()]
    for sub, value in (by_fold.get("name") or {}).items():
        out[f"name.{sub}"] = value
    emails = by_fold.get("emails") or []
    if work := _pick(emails, "work"):
        out["emails.work"] = work.get("value")
    if primary := _pick(emails, None):
        out["emails.primary"] = primary.get("value")
    for kind in ("work", "mobile"):
        if phone := _pick(by_fold.get("phonenumbers") or [], kind, fallback=False):
            out[f"phoneNumbers.{kind}"] = phone.get("value")
    if address := _pick(by_fold.get("addresses") or [], "work"):
        for sub, value in address.items():
            if f"addresses.work.{sub}" in PATHS:
                out[f"addresses.work.{sub}"] = value
    enterprise = next((v for k, v in resource.items() if k.casefold() == ENTERPRISE.casefold()), None) or {}
    for key, value in enterprise.items():
        if key == "manager" and isinstance(value, dict):
            out["manager"] = value.get("value")
        elif key in PATHS:
            out[key] = value
    return nest({k: v for k, v in out.items() if k in PATHS})


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys as nested mappings (``{"name.givenName": v}`` -> ``{"name": {"givenName": v}}``):
    the shape :func:`shared.mapping.model.read_path` walks. No path of :data:`.schema.PATHS` is a
    prefix of another one that has a value of its own, so no value is lost."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _pick(values: list[Any], kind: str | None, *, fallback: bool = True) -> dict[str, Any] | None:
    """The entry of ``kind`` (the primary one among them first), or the primary one for None;
    else the first entry, unless ``fallback`` is off."""
    entries = [v for v in values if isinstance(v, dict)]
    typed = [v for v in entries if kind is None or v.get("type") == kind]
    ranked = (
        sorted(typed, key=lambda v: not v.get("primary"))
        if kind is not None
        else [v for v in entries if v.get("primary")]
    )
    if ranked:
        return ranked[0]
    return entries[0] if entries and fallback else None
