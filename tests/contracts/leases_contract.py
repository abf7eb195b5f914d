"""The LeaseStore contract: one writer per key. What the worker, delta and risk services rely on:
a lease is exclusive until released or expired, is taken over once expired (on the injected clock),
is renewed while held, and fences off every write of a worker that lost it. Workers share one
table, so every worker's store is over one storage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from shared.clock import Clock
from shared.core.ports import LeaseStore
from shared.errors import LeaseBusy, LeaseLost
from tests.contracts.backends import Opener, run
from tests.support import FakeClock

TTL_S = 60.0
MARGIN_S = 25.0  # the default fence margin (LEASE_FENCE_MARGIN_S), under half the lifetime

Workers = Callable[[Clock], LeaseStore]


class LeaseStoreContract:
    """What the worker, delta and the risk response rely on from every LeaseStore.

    A subclass gives the stores it checks as the ``leases`` fixture: an opener of a factory, a clock
    -> a worker's lease store with a lifetime of ``TTL_S``, every store over one new, empty storage.
    """

    @pytest.fixture
    def leases(self) -> Opener[Workers]:
        raise NotImplementedError("a LeaseStoreContract subclass opens its stores in a `leases` fixture")

    def test_a_lease_is_exclusive_until_released_and_then_another_worker_gets_it(self, leases: Opener[Workers]) -> None:
        async def body(workers: Workers) -> None:
            clock = FakeClock()
            one, two = workers(clock), workers(clock)
            mine = await one.try_acquire("u1")
            assert mine is not None and not mine.lost and mine.expires_at == clock.now() + TTL_S
            assert await two.try_acquire("u1") is None
            assert await one.try_acquire("u1") is None  # not even its own store takes it twice
            assert await two.try_acquire("u2") is not None  # other keys are free
            await one.release(mine)
            assert await two.try_acquire("u1") is not None

        run(leases, body)

    def test_a_busy_lease_is_refused_with_lease_busy_after_waiting(self, leases: Opener[Workers]) -> None:
        async def body(workers: Workers) -> None:
            clock = FakeClock()
            assert await workers(clock).try_acquire("u1") is not None
            with pytest.raises(LeaseBusy):
                async with workers(clock).held("u1", wait_s=0.1):
                    raise AssertionError("a busy lease was handed out")

        run(leases, body)

    def test_an_expired_lease_is_taken_over_and_its_old_owner_can_no_longer_release_it(
        self, leases: Opener[Workers]
    ) -> None:
        async def body(workers: Workers) -> None:
            clock = FakeClock()
            crashed, other = workers(clock), workers(clock)
            stale = await crashed.try_acquire("u1")
            assert stale is not None
            clock.advance(TTL_S - 1)
            assert await other.try_acquire("u1") is None  # not expired yet
            clock.advance(2)
            fresh = await other.try_acquire("u1")
            assert fresh is not None and fresh.expires_at == clock.now() + TTL_S
            await crashed.release(stale)  # the crashed worker comes back late: it is not its lease now
            assert await workers(clock).try_acquire("u1") is None
            await other.release(fresh)
            assert await workers(clock).try_acquire("u1") is not None

        run(leases, body)

    def test_concurrent_workers_get_exactly_one_lease(self, leases: Opener[Workers]) -> None:
        async def body(workers: Workers) -> None:
            clock = FakeClock()
            got = await asyncio.gather(*(workers(clock).try_acquire("same") for _ in range(8)))
            assert sum(lease is not None for lease in got) == 1

        run(leases, body)

    def test_a_write_may_start_only_while_the_fence_margin_is_left_and_land_until_expiry(
        self, leases: Opener[Workers]
    ) -> None:
        async def body(workers: Workers) -> None:
            clock = FakeClock()
            store = workers(clock)
            lease = await store.try_acquire("u1")
            assert lease is not None
            store.fence(lease)
            clock.advance(TTL_S - MARGIN_S - 1)
            store.fence(lease)  # just enough left
            clock.advance(2)
            with pytest.raises(LeaseLost) as before:
                store.fence(lease)  # too little left for a write to finish while it is ours
            assert not before.value.after_write
            store.fence_after_write(lease)  # a write that ended now still landed while it was ours
            clock.advance(MARGIN_S)
            with pytest.raises(LeaseLost) as after:
                store.fence_after_write(lease)
            assert after.value.after_write

        run(leases, body)

    def test_a_lease_taken_over_fences_off_every_later_write_and_its_renewal_fails(
        self, leases: Opener[Workers]
    ) -> None:
        async def body(workers: Workers) -> None:
            behind = FakeClock()  # this worker's clock runs behind: by its own time the lease is fine
            ahead = FakeClock(behind.now() + TTL_S + 10)
            slow, other = workers(behind), workers(ahead)
            mine = await slow.try_acquire("u1")
            assert mine is not None
            theirs = await other.try_acquire("u1")
            assert theirs is not None
            with pytest.raises(LeaseLost):
                await slow.renew(mine)  # the take-over is noticed
            assert mine.lost
            with pytest.raises(LeaseLost):
                slow.fence(mine)
            with pytest.raises(LeaseLost) as after:
                slow.fence_after_write(mine)
            assert after.value.after_write
            with pytest.raises(LeaseLost):
                await slow.renew(mine)  # and stays lost
            await slow.release(mine)  # a no-op: the lease is the other worker's
            assert await workers(behind).try_acquire("u1") is None
            other.fence(theirs)  # the new owner writes on

        run(leases, body)

    def test_a_renewed_lease_lasts_a_lifetime_from_the_renewal(self, leases: Opener[Workers]) -> None:
        async def body(workers: Workers) -> None:
            clock = FakeClock()
            store, other = workers(clock), workers(clock)
            lease = await store.try_acquire("u1")
            assert lease is not None
            clock.advance(TTL_S - 10)
            await store.renew(lease)
            assert lease.expires_at == clock.now() + TTL_S
            clock.advance(TTL_S - 10)
            assert await other.try_acquire("u1") is None  # past the first expiry: still ours
            store.fence_after_write(lease)

        run(leases, body)

    def test_a_held_lease_is_renewed_while_the_work_runs_and_released_at_the_end(self, leases: Opener[Workers]) -> None:
        async def body(workers: Workers) -> None:
            clock = FakeClock()
            store, other = workers(clock), workers(clock)
            async with store.held("u1") as lease:
                for _ in range(6):  # a minute and a half of work, past one lifetime
                    await clock.run_for(15)
                    assert await other.try_acquire("u1") is None
                    store.fence(lease)
                assert lease.expires_at > clock.now() + MARGIN_S
            assert await other.try_acquire("u1") is not None

        run(leases, body)

    def test_many_takes_every_free_key_refuses_a_busy_one_alone_and_releases_them(
        self, leases: Opener[Workers]
    ) -> None:
        async def body(workers: Workers) -> None:
            clock = FakeClock()
            store, other = workers(clock), workers(clock)
            busy = await other.try_acquire("u1:crm")
            assert busy is not None
            keys = {"auth0": "u1:auth0", "scim:hr-app": "u1:scim", "memory:crm": "u1:crm"}
            async with store.many(keys, wait_s=0.1) as (leased, refused):
                assert sorted(leased) == ["auth0", "scim:hr-app"]
                assert list(refused) == ["memory:crm"] and isinstance(refused["memory:crm"], LeaseBusy)
                for lease in leased.values():
                    store.fence(lease)
                assert await other.try_acquire("u1:auth0") is None
            assert await other.try_acquire("u1:auth0") is not None
            assert await other.try_acquire("u1:scim") is not None

        run(leases, body)

    def test_keys_that_table_keys_cannot_hold_as_they_are_can_be_leased(self, leases: Opener[Workers]) -> None:
        async def body(workers: Workers) -> None:
            clock = FakeClock()
            store = workers(clock)
            for key in ("o'brien/jr#1?x\\y", "100% sure", "subscription:users"):
                lease = await store.try_acquire(key)
                assert lease is not None
                assert await store.try_acquire(key) is None
                await store.release(lease)
                assert await store.try_acquire(key) is not None

        run(leases, body)
