"""The LinkStore contract: what the worker, reconciliation and backfill rely on from one target's
links, whichever store keeps them (in memory, or Table Storage on Azurite).

(Reading a link row written before link schema 2 is the Table Storage store's own concern:
tests/test_storage.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.core.model import LINK_SCHEMA, DeprovisionState, LastApplied, Link
from shared.core.ports import LinkStore
from shared.stores.keys import BATCH_LIMIT
from tests.contracts.backends import Opener, run

Stores = Callable[..., LinkStore]  # (target name, source name="entra") -> that store

NASTY = ["ada@contoso.example", "o'brien/jr#1?x\\y", "100% sure", "tab\there", "Zoë Ωmega 山田"]


def link(source_id: str, target_id: str, *args: Any, target: str = "auth0", source: str = "entra", **kw: Any) -> Link:
    """A link of the Entra source to the Auth0 target unless named otherwise (the core names no default)."""
    return Link(source_id, target_id, *args, target=target, source=source, **kw)


async def every(store: LinkStore) -> list[Link]:
    return [link async for link in store.all()]


class LinkStoreContract:
    """What the worker, reconciliation and backfill rely on from every LinkStore.

    A subclass gives the stores it checks as the ``links`` fixture: an opener of a factory, a target
    name -> that target's store, every store over one new, empty storage.
    """

    @pytest.fixture
    def links(self) -> Opener[Stores]:
        raise NotImplementedError("a LinkStoreContract subclass opens its stores in a `links` fixture")

    def test_an_identity_without_a_link_has_none_and_an_empty_store_counts_none(self, links: Opener[Stores]) -> None:
        async def body(stores: Stores) -> None:
            store = stores("auth0")
            assert store.target == "auth0"
            assert await store.get("u1") is None
            assert await store.count() == 0
            assert await every(store) == []

        run(links, body)

    def test_a_link_round_trips_with_its_deprovision_state_flags_and_conflicts(self, links: Opener[Stores]) -> None:
        async def body(stores: Stores) -> None:
            store = stores("scim:hr-app")
            stored = link(
                "u1", "2819c223", DeprovisionState.PENDING, disabled_by_sync=True, target_deleted=True,
                risk_locked=True, conflicts={"email": "ada@contoso.example"}, target="scim:hr-app",
            )  # fmt: skip
            await store.put(stored)
            got = await store.get("u1")
            assert got == stored
            assert got is not None and got.schema_version == LINK_SCHEMA and got.source == "entra"
            assert await store.count() == 1

        run(links, body)

    def test_a_link_round_trips_with_what_was_last_applied_to_its_account(self, links: Opener[Stores]) -> None:
        applied = LastApplied(
            values={"email": "ada@contoso.example", "user_metadata.department": None, "app_metadata.tags": ["a", "b"],
                    "name": "Zoë Ωmega 山田", "blocked_hint": False},
            entitlements=frozenset({"Sales Reader"}), managed=frozenset({"Sales Reader", "Sales Writer"}), active=True,
        )  # fmt: skip
        leaver = LastApplied(values={"email": "bo@x.example"}, entitlements=None, managed=frozenset(), active=False)

        async def body(stores: Stores) -> None:
            store = stores("auth0")
            await store.put(link("u1", "auth0|u1", applied=applied))
            await store.put(link("u2", "auth0|u2", DeprovisionState.DONE, applied=leaver))
            assert await store.get("u1") == link("u1", "auth0|u1", applied=applied)
            assert await store.get("u2") == link("u2", "auth0|u2", DeprovisionState.DONE, applied=leaver)
            await store.put(link("u1", "auth0|u1"))  # forgotten: the next change reads the target
            got = await store.get("u1")
            assert got is not None and got.applied is None

        run(links, body)

    def test_a_snapshot_too_large_for_a_table_property_is_not_kept_and_the_link_still_is(
        self, links: Opener[Stores]
    ) -> None:
        huge = LastApplied(values={"notes": "x" * 40_000}, entitlements=frozenset(), managed=frozenset(), active=True)

        async def body(stores: Stores) -> None:
            await stores("auth0").put(link("u1", "auth0|u1", applied=huge))
            assert await stores("auth0").get("u1") == link("u1", "auth0|u1")

        run(links, body)

    def test_a_link_carries_the_target_of_the_store_it_was_put_in(self, links: Opener[Stores]) -> None:
        async def body(stores: Stores) -> None:
            await stores("memory:crm").put(link("u1", "mem|u1"))  # the link says auth0: the store's target wins
            got = await stores("memory:crm").get("u1")
            assert got is not None and got.target == "memory:crm"
            assert await stores("auth0").get("u1") is None

        run(links, body)

    def test_a_put_replaces_the_whole_link(self, links: Opener[Stores]) -> None:
        async def body(stores: Stores) -> None:
            store = stores("auth0")
            await store.put(
                link(
                    "u1",
                    "auth0|u1",
                    DeprovisionState.PENDING,
                    disabled_by_sync=True,
                    conflicts={"email": "a@x.example"},
                )
            )
            await store.put(link("u1", "auth0|u1b", DeprovisionState.DONE))
            assert await store.get("u1") == link("u1", "auth0|u1b", DeprovisionState.DONE)
            assert await store.count() == 1

        run(links, body)

    def test_put_many_writes_more_links_than_one_batch_holds_and_all_yields_each_once(
        self, links: Opener[Stores]
    ) -> None:
        many = [link(f"u{i:03d}", f"auth0|u{i:03d}", risk_locked=i % 2 == 0) for i in range(BATCH_LIMIT + 30)]

        async def body(stores: Stores) -> None:
            store = stores("auth0")
            await store.put_many(many)
            await store.put_many([])
            assert await store.count() == len(many)
            assert sorted(await every(store), key=lambda link: link.source_id) == many

        run(links, body)

    def test_each_target_sees_only_its_own_links(self, links: Opener[Stores]) -> None:
        async def body(stores: Stores) -> None:
            auth0, crm = stores("auth0"), stores("memory:crm")
            await auth0.put(link("u1", "auth0|u1"))
            await auth0.put(link("u2", "auth0|u2"))
            await crm.put_many([link("u1", "mem|u1", target="memory:crm")])
            assert (await auth0.get("u1"), await crm.get("u1")) == (
                link("u1", "auth0|u1"),
                link("u1", "mem|u1", target="memory:crm"),
            )
            assert await crm.get("u2") is None
            assert (await auth0.count(), await crm.count()) == (2, 1)
            assert [link.target_id for link in await every(crm)] == ["mem|u1"]

        run(links, body)

    def test_each_source_sees_only_its_own_links_in_a_target_even_under_the_same_id(
        self, links: Opener[Stores]
    ) -> None:
        async def body(stores: Stores) -> None:
            entra, pushed = stores("auth0", "entra"), stores("auth0", "hr-push")
            await entra.put(link("u1", "auth0|u1"))
            await pushed.put(link("u1", "auth0|p1", source="hr-push"))  # an id both sources use
            await pushed.put(link("u2", "auth0|p2", source="hr-push"))
            assert (await entra.get("u1"), await pushed.get("u1")) == (
                link("u1", "auth0|u1"),
                link("u1", "auth0|p1", source="hr-push"),
            )
            assert await entra.get("u2") is None
            assert (await entra.count(), await pushed.count()) == (1, 2)
            assert [x.target_id for x in await every(pushed)] == ["auth0|p1", "auth0|p2"]
            assert [x.target_id for x in await every(entra)] == ["auth0|u1"]

        run(links, body)

    def test_source_ids_that_table_keys_cannot_hold_as_they_are_round_trip(self, links: Opener[Stores]) -> None:
        async def body(stores: Stores) -> None:
            store = stores("auth0")
            for value in NASTY:
                await store.put(link(value, f"auth0|{value}"))
            for value in NASTY:
                got = await store.get(value)
                assert got is not None and (got.source_id, got.target_id) == (value, f"auth0|{value}")
            assert sorted(link.source_id for link in await every(store)) == sorted(NASTY)

        run(links, body)

    def test_an_empty_source_id_is_refused(self, links: Opener[Stores]) -> None:
        async def body(stores: Stores) -> None:
            store = stores("auth0")
            with pytest.raises(ValueError, match="empty"):
                await store.put(link("", "auth0|x"))
            with pytest.raises(ValueError, match="empty"):
                await store.get("")

        run(links, body)
