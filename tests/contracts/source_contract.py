"""The Source contract: what the worker, reconciliation, backfill and delta rely on from where
identities come from. One identity read and classified (active, disabled, out of scope, soft- or
hard-deleted) with its properties and the mapping's relevant groups; every identity a page at a
time; the ids changed since a cursor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from sandbox.memory import kinds_with_memory
from shared.core.model import Identity, SourceState
from shared.core.ports import FindsIdentities, Source
from shared.mapping.load import parse_mapping
from shared.mapping.model import SyncMapping, read_path
from shared.sources.graph.source import DeltaExpired
from tests.contracts.backends import Opener, run

STAFF, SALES, OTHER = (f"{n}1111111-2222-4333-8444-555555555555" for n in "abc")  # OTHER is in no mapping entry

MAPPING = f"""\
version: 2
scope: {{user_types: [Member]}}
targets:
  memory:crm:
    attributes:
      - {{source: mail, target: email}}
      - {{source: displayName, target: name}}
      - {{source: department, target: department}}
    groups:
      - {{group: {STAFF}, groups: [staff]}}
      - {{group: {SALES}, groups: [sales]}}
"""


@dataclass
class Tenant:
    """A source over a tenant, and how that tenant is changed. The contract speaks Graph's property
    names (``mail``, ``accountEnabled``, ``userType``); a source that names them otherwise says how
    (``name``). A source without soft deletion or with cursors that never expire gives None there,
    and the checks of those are skipped for it."""

    source: Source
    pages: Callable[[int], AsyncIterator[list[Identity]]]  # every identity, at most n a page
    add: Callable[..., Awaitable[str]]  # Graph properties -> the new user's id
    update: Callable[..., Awaitable[None]]  # (id, **changes)
    join: Callable[[str, str], Awaitable[None]]  # (user id, group id)
    soft_delete: Callable[[str], Awaitable[None]] | None
    hard_delete: Callable[[str], Awaitable[None]]
    expire_cursors: Callable[[], Awaitable[None]] | None
    name: Callable[[str], str] = field(default=lambda graph_name: graph_name)


def value(t: Tenant, identity: Identity, graph_name: str) -> Any:
    """A property of an identity as a mapping entry reads it (:func:`read_path`, dotted paths are
    nested), by the contract's Graph name in the source's own words."""
    return read_path(identity.attributes, t.name(graph_name))


def now(change: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """A tenant change that is made at once (an emulator's or a dict's) as the contract awaits it."""

    async def made(*args: Any, **kwargs: Any) -> Any:
        return change(*args, **kwargs)

    return made


def mapping() -> SyncMapping:
    return parse_mapping(MAPPING, kinds=kinds_with_memory())


def person(name: str, **extra: Any) -> dict[str, Any]:
    mail = f"{name.lower()}@contoso.example"
    return {"displayName": name, "mail": mail, "userPrincipalName": mail, "department": "Sales", **extra}


async def every(pages: AsyncIterator[list[Identity]]) -> list[list[Identity]]:
    return [page async for page in pages]


class SourceContract:
    """What the worker, reconciliation, backfill and delta rely on from every Source.

    A subclass gives the source it checks as the ``tenant`` fixture: an opener of the source over an
    empty tenant (the groups STAFF, SALES and OTHER exist, no user does) read with ``mapping()``,
    and the hooks that change the tenant the way that source's tenant is changed.
    """

    @pytest.fixture
    def tenant(self) -> Opener[Tenant]:
        raise NotImplementedError("a SourceContract subclass opens its source in a `tenant` fixture")

    def test_an_active_member_reads_as_active_with_its_properties_and_relevant_groups(
        self, tenant: Opener[Tenant]
    ) -> None:
        async def body(t: Tenant) -> None:
            uid = await t.add(**person("Ada"))
            await t.join(uid, STAFF)
            await t.join(uid, OTHER)  # a group no mapping entry names is none of its business
            ada = await t.source.read(uid)
            assert (ada.id, ada.state, ada.groups) == (uid, SourceState.ACTIVE, frozenset({STAFF}))
            assert {k: value(t, ada, k) for k in ("mail", "displayName", "department", "accountEnabled")} == {
                "mail": "ada@contoso.example", "displayName": "Ada", "department": "Sales", "accountEnabled": True,
            }  # fmt: skip
            assert ada.source == t.source.name  # an identity names the source it came from

        run(tenant, body)

    def test_a_person_is_found_by_the_sign_in_name_people_know_without_case(self, tenant: Opener[Tenant]) -> None:
        async def body(t: Tenant) -> None:
            if not isinstance(t.source, FindsIdentities):
                pytest.skip("this source finds no one by name")
            ada = await t.add(**person("Ada"))
            quoted = await t.add(**person("O'Hara"))  # a quote is data, never query syntax
            assert await t.source.find_ids("ada@contoso.example") == [ada]
            assert await t.source.find_ids("  ADA@Contoso.Example ") == [ada]
            assert await t.source.find_ids(ada) == [ada]
            assert await t.source.find_ids("o'hara@contoso.example") == [quoted]
            assert await t.source.find_ids("nobody@contoso.example") == []
            assert await t.source.find_ids("' or 1 eq 1 or mail eq '") == []

        run(tenant, body)

    def test_a_disabled_user_reads_as_disabled_and_a_guest_as_out_of_scope(self, tenant: Opener[Tenant]) -> None:
        async def body(t: Tenant) -> None:
            disabled = await t.add(**person("Bob", accountEnabled=False))
            await t.join(disabled, STAFF)
            guest = await t.add(**person("Eve", userType="Guest"))
            await t.join(guest, STAFF)
            changed = await t.add(**person("Cy"))
            await t.update(changed, accountEnabled=False)
            assert (await t.source.read(disabled)).state is SourceState.DISABLED
            assert (await t.source.read(guest)).state is SourceState.OUT_OF_SCOPE
            cy = await t.source.read(changed)
            assert cy.state is SourceState.DISABLED and value(t, cy, "mail") == "cy@contoso.example"

        run(tenant, body)

    def test_a_soft_deleted_user_reads_as_soft_deleted_with_its_properties(self, tenant: Opener[Tenant]) -> None:
        async def body(t: Tenant) -> None:
            if t.soft_delete is None:
                pytest.skip("this source deletes for good only (a leaver comes as disabled first)")
            uid = await t.add(**person("Dee"))
            await t.soft_delete(uid)
            dee = await t.source.read(uid)
            assert (dee.id, dee.state) == (uid, SourceState.SOFT_DELETED)
            assert value(t, dee, "mail") == "dee@contoso.example"  # a restorable leaver can still be matched

        run(tenant, body)

    def test_a_user_deleted_for_good_and_one_never_seen_read_as_hard_deleted(self, tenant: Opener[Tenant]) -> None:
        async def body(t: Tenant) -> None:
            gone, binned = await t.add(**person("Fay")), await t.add(**person("Gus"))
            await t.hard_delete(gone)
            if t.soft_delete is not None:
                await t.soft_delete(binned)
            await t.hard_delete(binned)
            never = "d1111111-2222-4333-8444-555555555555"
            for uid in (gone, binned, never):
                assert await t.source.read(uid) == Identity(uid, SourceState.HARD_DELETED, source=t.source.name)

        run(tenant, body)

    def test_identities_pages_through_every_user_once_classified(self, tenant: Opener[Tenant]) -> None:
        async def body(t: Tenant) -> None:
            states: dict[str, SourceState] = {}
            for i in range(5):
                uid = await t.add(**person(f"Member{i}"))
                await t.join(uid, SALES if i % 2 else STAFF)
                states[uid] = SourceState.ACTIVE
            states[await t.add(**person("Off", accountEnabled=False))] = SourceState.DISABLED
            states[await t.add(**person("Visitor", userType="Guest"))] = SourceState.OUT_OF_SCOPE
            if t.soft_delete is not None:
                await t.soft_delete(await t.add(**person("Binned")))  # deleted users are not listed
            await t.hard_delete(await t.add(**person("Gone")))

            everyone = [i for page in await every(t.source.identities()) for i in page]  # the port's own paging
            pages = await every(t.pages(3))
            assert len(pages) >= 3 and all(1 <= len(page) <= 3 for page in pages[:-1])
            paged = [i for page in pages for i in page]
            for seen in (everyone, paged):
                assert sorted(i.id for i in seen) == sorted(states)  # each once
                assert {i.id: i.state for i in seen} == states
            groups = {i.id: i.groups for i in paged if i.state is SourceState.ACTIVE}
            assert sorted(len(g) for g in groups.values()) == [1] * 5
            assert sum(g == {SALES} for g in groups.values()) == 2
            assert {i.id: value(t, i, "mail") for i in paged} == {i.id: value(t, i, "mail") for i in everyone}

        run(tenant, body)

    def test_changed_without_a_cursor_is_every_user_and_then_only_what_changed_since(
        self, tenant: Opener[Tenant]
    ) -> None:
        async def body(t: Tenant) -> None:
            kept, edited, binned, gone = [await t.add(**person(n)) for n in ("Hal", "Ivy", "Jo", "Kit")]
            off = await t.add(**person("Lee", accountEnabled=False))
            everyone, cursor = await t.source.changed(None)
            assert everyone == {kept, edited, binned, gone, off}  # the disabled one too
            nothing, cursor = await t.source.changed(cursor)
            assert nothing == set()
            await t.update(edited, department="Finance")
            await (t.soft_delete or t.hard_delete)(binned)
            await t.hard_delete(gone)
            joiner = await t.add(**person("Max"))
            changes, next_cursor = await t.source.changed(cursor)
            assert changes == {edited, binned, gone, joiner}  # the deleted ones too: they are leavers
            assert (await t.source.changed(next_cursor))[0] == set()
            assert (await t.source.changed(cursor))[0] == changes  # a cursor can be followed again

        run(tenant, body)

    def test_a_cursor_the_source_has_forgotten_raises_delta_expired(self, tenant: Opener[Tenant]) -> None:
        async def body(t: Tenant) -> None:
            if t.expire_cursors is None:
                pytest.skip("this source keeps every cursor (a malformed one is its only expired cursor)")
            await t.add(**person("Ned"))
            _, cursor = await t.source.changed(None)
            await t.expire_cursors()
            with pytest.raises(DeltaExpired):
                await t.source.changed(cursor)
            again, fresh = await t.source.changed(None)  # a full round starts over
            assert len(again) == 1 and (await t.source.changed(fresh))[0] == set()

        run(tenant, body)
