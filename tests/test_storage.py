"""Table Storage adapters against Azurite: key encoding, links, leases, state and audit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from azure.data.tables.aio import TableServiceClient

from sandbox.azurite import Azurite
from shared.core.model import DeprovisionState, Link
from shared.errors import LeaseBusy, LeaseLost
from shared.stores.audit import AuditRow, AuditStore
from shared.stores.keys import decode_key, encode_key
from shared.stores.leases import LeaseStore
from shared.stores.links import LinkStore
from shared.stores.state import StateStore
from tests.support import FakeClock

NASTY = [
    "ada@contoso.example",
    "o'brien/jr#1?x\\y",
    "100% sure",
    "tab\there\nnewline\x7f",
    'quote " star * colon : OR spaces',
    "Zoë Ωmega 山田",
]


@pytest.mark.parametrize("value", NASTY)
def test_keys_round_trip_and_hold_no_forbidden_character(value: str) -> None:
    key = encode_key(value)
    assert decode_key(key) == value
    assert not any(ch in key for ch in "/\\#?")
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in key)


def test_empty_and_oversized_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode_key("")
    with pytest.raises(ValueError, match="1 KiB"):
        encode_key("x" * 1025)


def run(coro_fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    return asyncio.run(coro_fn(*args))


async def with_table(azurite: Azurite, name: str, body: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        table = await service.create_table(name)
        async with table:
            await body(table)


@pytest.fixture
def table_name(run_id: str) -> str:
    return f"t{run_id}"


def test_nasty_keys_are_accepted_by_the_service(azurite: Azurite, table_name: str) -> None:
    async def body(table: Any) -> None:
        links = LinkStore(table, "auth0", "entra")
        for value in NASTY:
            await links.put(Link(value, f"auth0|{value}", target="auth0", source="entra"))
        for value in NASTY:
            got = await links.get(value)
            assert got is not None
            assert got.target_id == f"auth0|{value}"
        assert sorted([link.source_id async for link in links.all()]) == sorted(NASTY)

    run(with_table, azurite, table_name, body)


def test_links_round_trip_with_their_deprovision_state(azurite: Azurite, table_name: str) -> None:
    async def body(table: Any) -> None:
        links = LinkStore(table, "auth0", "entra")
        assert await links.get("u1") is None
        link = Link(
            "u1",
            "auth0|u1",
            DeprovisionState.PENDING,
            disabled_by_sync=True,
            risk_locked=True,
            target="auth0",
            source="entra",
        )
        await links.put(link)
        assert await links.get("u1") == link

    run(with_table, azurite, table_name, body)


def test_links_stored_before_schema_2_are_read_and_take_the_new_form_when_they_change(
    azurite: Azurite, table_name: str
) -> None:
    async def body(table: Any) -> None:
        # A row exactly as the release before the vendor-neutral core wrote it.
        await table.upsert_entity({
            "PartitionKey": "auth0", "RowKey": encode_key("u-old"), "entra_id": "u-old", "user_id": "auth0|u-old",
            "deprovision": "done", "blocked_by_sync": True, "target_deleted": False, "risk_locked": True,
            "conflicts": '{"email": "taken@example.com"}', "updated_at": "2026-11-01T00:00:00.000Z",
        })  # fmt: skip
        links = LinkStore(table, "auth0", "entra")
        old = await links.get("u-old")
        assert old is not None
        assert (old.source_id, old.target_id, old.schema_version) == ("u-old", "auth0|u-old", 1)
        assert old.deprovision is DeprovisionState.DONE and old.disabled_by_sync and old.risk_locked
        assert old.conflicts == {"email": "taken@example.com"}
        assert [link.source_id async for link in links.all()] == ["u-old"]
        assert await links.count() == 1
        await links.put(old)  # the next change writes it in schema 2
        row = await table.get_entity("auth0", encode_key("u-old"))
        assert row["schema_version"] == 2 and row["source_id"] == "u-old" and row["target_id"] == "auth0|u-old"
        assert "user_id" not in row and "blocked_by_sync" not in row and row["disabled_by_sync"] is True
        again = await links.get("u-old")
        assert again is not None and again.disabled_by_sync and again.deprovision is DeprovisionState.DONE

    run(with_table, azurite, table_name, body)


def test_a_lease_is_exclusive_until_released(azurite: Azurite, table_name: str) -> None:
    async def body(table: Any) -> None:
        leases = LeaseStore(table, ttl_s=30)
        first = await leases.try_acquire("u1")
        assert first is not None
        assert await leases.try_acquire("u1") is None
        with pytest.raises(LeaseBusy):
            await leases.acquire("u1", wait_s=0.2)
        await leases.release(first)
        assert await leases.try_acquire("u1") is not None

    run(with_table, azurite, table_name, body)


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_release_it(azurite: Azurite, table_name: str) -> None:
    async def body(table: Any) -> None:
        clock = FakeClock()
        crashed = LeaseStore(table, ttl_s=30, clock=clock)
        stale = await crashed.try_acquire("u1")
        assert stale is not None
        clock.advance(31)
        leases = LeaseStore(table, ttl_s=30, clock=clock)
        fresh = await leases.try_acquire("u1")
        assert fresh is not None
        await crashed.release(stale)  # the crashed worker comes back late: a no-op
        assert await leases.try_acquire("u1") is None
        await leases.release(fresh)

    run(with_table, azurite, table_name, body)


def test_concurrent_acquirers_get_exactly_one_lease(azurite: Azurite, table_name: str) -> None:
    async def body(table: Any) -> None:
        leases = LeaseStore(table, ttl_s=30)
        results = await asyncio.gather(*(leases.try_acquire("same") for _ in range(10)))
        assert sum(r is not None for r in results) == 1

    run(with_table, azurite, table_name, body)


def test_state_values_round_trip(azurite: Azurite, table_name: str) -> None:
    async def body(table: Any) -> None:
        state = StateStore(table)
        assert await state.get("delta", "users") is None
        await state.put("delta", "users", {"link": "http://127.0.0.1/v1.0/users/delta()?$deltatoken=a/b#c"})
        await state.put("subscription", "groups", {"id": "s2"})
        assert await state.get("delta", "users") == {"link": "http://127.0.0.1/v1.0/users/delta()?$deltatoken=a/b#c"}
        assert await state.list("subscription") == {"groups": {"id": "s2"}}
        await state.delete("delta", "users")
        assert await state.get("delta", "users") is None

    run(with_table, azurite, table_name, body)


def test_audit_rows_are_kept_per_identity_in_time_order(azurite: Azurite, table_name: str) -> None:
    async def body(table: Any) -> None:
        audit = AuditStore(table)
        for action in ("create", "assign_roles"):
            await audit.write(
                AuditRow(
                    "c1", "notification", "n1", "o'brien/1", "auth0", "auth0|x", action, "ok", {"email": [None, "a"]}
                )
            )
        rows = await audit.for_identity("o'brien/1")
        assert [r["action"] for r in rows] == ["create", "assign_roles"]
        assert rows[0]["diff"] == '{"email": [null, "a"]}'
        assert rows[0]["identity"] == "o'brien/1"

    run(with_table, azurite, table_name, body)


def test_a_held_lease_is_renewed_while_the_work_runs_so_no_one_can_take_it_over(
    azurite: Azurite, table_name: str
) -> None:
    async def body(table: Any) -> None:
        clock = FakeClock()
        leases = LeaseStore(table, ttl_s=60, clock=clock)
        async with leases.held("u1") as lease:
            for _ in range(8):  # two minutes of work, well past one lifetime
                await clock.run_for(15)
                assert await leases.try_acquire("u1") is None  # renewed: still ours
                leases.fence(lease)  # and writes may go on
            assert lease.expires_at > clock.now() + 30
        assert await leases.try_acquire("u1") is not None  # released at the end

    run(with_table, azurite, table_name, body)


def test_a_lease_that_lapsed_or_was_taken_over_fences_off_every_later_write(azurite: Azurite, table_name: str) -> None:
    async def body(table: Any) -> None:
        clock = FakeClock()
        slow = LeaseStore(table, ttl_s=60, clock=clock)
        mine = await slow.try_acquire("u1")
        assert mine is not None
        slow.fence(mine)
        clock.advance(40)  # inside the fence margin: no write may start now
        with pytest.raises(LeaseLost):
            slow.fence(mine)
        slow.fence_after_write(mine)  # a write that finished now still landed while it was ours
        clock.advance(21)
        other = await LeaseStore(table, ttl_s=60, clock=clock).try_acquire("u1")
        assert other is not None
        with pytest.raises(LeaseLost) as lost:
            slow.fence_after_write(mine)
        assert lost.value.after_write
        with pytest.raises(LeaseLost):
            await slow.renew(mine)  # the ETag moved on: the take-over is noticed
        assert mine.lost

    run(with_table, azurite, table_name, body)
