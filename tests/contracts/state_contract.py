"""The StateStore contract: small JSON documents by (kind, name), as subscriptions, delta cursors,
run records and held work are kept, and the clean-up of old ones that keeps the store small."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from shared.core.ports import StateStore
from shared.stores.keys import utcnow
from tests.contracts.backends import Opener, run

NAMES = ["users", "o'brien/jr#1?x\\y", "100% sure", "Zoë 山田"]


async def a_moment_later() -> str:
    """A time stamp later than every write so far (they are stamped to the millisecond): bounded
    polling, not a sleep of a guessed length."""
    before = utcnow()
    deadline = time.monotonic() + 2.0
    while (now := utcnow()) <= before:
        assert time.monotonic() < deadline, "the wall clock did not move"
        await asyncio.sleep(0.001)
    return now


class StateStoreContract:
    """What subscriptions, cursors, run records and held work rely on from every StateStore.

    A subclass gives the store it checks as the ``state`` fixture: an opener of a new, empty store.
    """

    @pytest.fixture
    def state(self) -> Opener[StateStore]:
        raise NotImplementedError("a StateStoreContract subclass opens its store in a `state` fixture")

    def test_a_document_round_trips_and_a_put_replaces_it_whole(self, state: Opener[StateStore]) -> None:
        link = "http://127.0.0.1/v1.0/users/delta()?$deltatoken=a/b#c"

        async def body(store: StateStore) -> None:
            value = {"link": link, "round": 3, "nested": {"ok": True, "ids": ["a", "b"]}}
            await store.put("delta", "users", value)
            assert await store.get("delta", "users") == value
            await store.put("delta", "users", {"link": "x"})
            assert await store.get("delta", "users") == {"link": "x"}
            assert await store.get("delta", "groups") is None  # another name
            assert await store.get("run", "users") is None  # another kind

        run(state, body)

    def test_values_are_kept_as_json(self, state: Opener[StateStore]) -> None:
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

        async def body(store: StateStore) -> None:
            value = {"pair": ("a", 1), "at": at}
            await store.put("run", "r1", value)
            assert await store.get("run", "r1") == {"pair": ["a", 1], "at": str(at)}
            value["pair"] = ("changed", 2)  # what was put is a copy: changing the caller's dict changes nothing
            assert (await store.get("run", "r1") or {})["pair"] == ["a", 1]

        run(state, body)

    def test_a_missing_document_is_none_and_deleting_one_is_harmless(self, state: Opener[StateStore]) -> None:
        async def body(store: StateStore) -> None:
            assert await store.get("subscription", "users") is None
            await store.delete("subscription", "users")
            await store.put("subscription", "users", {"id": "s1"})
            await store.delete("subscription", "users")
            await store.delete("subscription", "users")
            assert await store.get("subscription", "users") is None
            assert await store.list("subscription") == {}

        run(state, body)

    def test_list_returns_the_documents_of_one_kind_by_name(self, state: Opener[StateStore]) -> None:
        async def body(store: StateStore) -> None:
            for i, name in enumerate(NAMES):
                await store.put("subscription", name, {"id": f"s{i}"})
            await store.put("delta", "users", {"link": "x"})
            assert await store.list("subscription") == {name: {"id": f"s{i}"} for i, name in enumerate(NAMES)}
            assert await store.list("delta") == {"users": {"link": "x"}}
            assert await store.list("held") == {}

        run(state, body)

    def test_delete_older_deletes_at_most_limit_documents_of_its_kind_written_before_the_cutoff(
        self,
        state: Opener[StateStore],
    ) -> None:
        async def body(store: StateStore) -> None:
            for name in ("r1", "r2", "r3"):
                await store.put("run", name, {"name": name})
            await store.put("report", "old", {"kept": True})  # old, but of another kind
            cutoff = await a_moment_later()
            await store.put("run", "r4", {"name": "r4"})  # written at or after the cutoff
            assert await store.delete_older("run", cutoff, 0) == 0
            assert await store.delete_older("run", cutoff, 2) == 2
            left = await store.list("run")
            assert len(left) == 2 and "r4" in left
            assert await store.delete_older("run", cutoff, 2) == 1
            assert await store.delete_older("run", cutoff, 2) == 0
            assert await store.list("run") == {"r4": {"name": "r4"}}
            assert await store.get("report", "old") == {"kept": True}

        run(state, body)

    def test_a_conditional_write_lands_only_over_the_version_it_read(self, state: Opener[StateStore]) -> None:
        name = NAMES[1]  # a name with characters a table key cannot hold as they are

        async def body(store: StateStore) -> None:
            assert await store.read("guard:auth0", name) == (None, None)
            # Two writers that both saw no document: exactly one creates it.
            assert await store.put_if("guard:auth0", name, {"episode": "a"}, None) is not None
            assert await store.put_if("guard:auth0", name, {"episode": "b"}, None) is None
            document, version = await store.read("guard:auth0", name)
            assert document == {"episode": "a"} and version is not None
            # Two writers that read the same version: the first lands, the second is told.
            approved = await store.put_if("guard:auth0", name, {"episode": "a", "status": "approved"}, version)
            assert approved is not None and (await store.read("guard:auth0", name))[1] == approved
            assert await store.put_if("guard:auth0", name, {"episode": "c"}, version) is None
            assert await store.get("guard:auth0", name) == {"episode": "a", "status": "approved"}
            # A plain put changes the version too: a writer holding the old one loses.
            _, current = await store.read("guard:auth0", name)
            await store.put("guard:auth0", name, {"episode": "d"})
            assert await store.put_if("guard:auth0", name, {"episode": "e"}, current) is None
            # A document deleted since it was read is not brought back by a stale write.
            _, current = await store.read("guard:auth0", name)
            await store.delete("guard:auth0", name)
            assert await store.put_if("guard:auth0", name, {"episode": "f"}, current) is None
            assert await store.read("guard:auth0", name) == (None, None)

        run(state, body)
