"""The compact target side reconciliation holds: what it gives back equals what it was given."""

from __future__ import annotations

import asyncio

from shared.core.model import Account, DeprovisionState, Link
from shared.services.target_side import CompactAccounts, CompactLinks
from shared.targets.auth0.rules import Auth0Rules
from tests.test_planner import MAPPING


def accounts() -> list[Account]:
    nested = {"user_metadata": {"department": "Sales", "tags": ["a", {"b": (1, None)}]}, "app_metadata": {}}
    return [
        Account("auth0|1", {"user_id": "auth0|1", "email": "Ada@X.example", "blocked": False, **nested},
                frozenset({"Employee"}), owner="1"),
        Account("auth0|2", {"email": "bo@x.example", "user_id": "auth0|2", "identities": [{"connection": "c"}]},
                frozenset({"Employee"}), active=False, owner=None, known={"name": "Bo", "x": [1, 2]}),
        Account("auth0|3", {"user_id": "auth0|3", "email": "ada@x.example", "logins": 3, "ratio": 0.5, "t": ()}),
    ]  # fmt: skip


def test_every_account_reads_back_equal_and_is_found_by_each_matchers_key() -> None:
    index = CompactAccounts(Auth0Rules(MAPPING.target("auth0")))
    given = accounts()
    for account in given:
        index.add(account)

    async def reads() -> None:
        assert [await index.read(a.target_id) for a in given] == given
        assert await index.read("auth0|missing") is None
        assert [a.target_id for a in await index.find("email", "ada@x.example")] == ["auth0|1", "auth0|3"]
        assert await index.find("app_metadata", "1") == [given[0]]
        assert await index.find("email", "nobody@x.example") == []

    asyncio.run(reads())
    assert len(index) == 3 and list(index.ids()) == ["auth0|1", "auth0|2", "auth0|3"]
    first, again = index.get("auth0|1"), index.get("auth0|1")
    assert first is not None and again is not None
    assert first.data is not again.data  # each read its own: a caller's change reaches no other run step


def test_links_read_back_equal_whether_plain_or_with_state_of_their_own() -> None:
    links = CompactLinks()
    plain = Link("u1", "auth0|u1", target="auth0", source="entra")
    pending = Link("u2", "auth0|u2", DeprovisionState.PENDING, disabled_by_sync=True, target="auth0", source="entra")
    gone = Link("u3", "auth0|u3", target_deleted=True, target="auth0", source="entra")
    refused = Link("u4", "auth0|u1", conflicts={"email": "a@x.example"}, target="auth0", source="entra")
    for link in (plain, pending, gone, refused):
        links.add(link)
    assert [links.get(s) for s in ("u1", "u2", "u3", "u4", "u5")] == [plain, pending, gone, refused, None]
    assert len(links) == 4
    # Who links an account: a link marked deleted in the target names none; the last listed wins.
    assert links.holders({"auth0|u1", "auth0|u2", "auth0|u3"}) == {"auth0|u1": "u4", "auth0|u2": "u2"}
