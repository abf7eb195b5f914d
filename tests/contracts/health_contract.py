"""The HealthStore contract: one record per target, changed only over the version read, so that
of two instances writing over the same version exactly one succeeds (one probe claim, one opening)."""

from __future__ import annotations

import pytest

from shared.core.ports import HealthRecord, HealthStore
from tests.contracts.backends import Opener, run

TARGETS = ["auth0", "scim:hr-app", "scim:o'brien/#1?x\\y", "100% sure"]


class HealthStoreContract:
    """What the shared breaker relies on from every HealthStore.

    A subclass gives the store it checks as the ``health`` fixture: an opener of a new, empty store.
    """

    @pytest.fixture
    def health(self) -> Opener[HealthStore]:
        raise NotImplementedError("a HealthStoreContract subclass opens its store in a `health` fixture")

    def test_a_target_never_written_reads_as_a_closed_breaker_with_no_version(
        self, health: Opener[HealthStore]
    ) -> None:
        async def body(store: HealthStore) -> None:
            assert await store.read("auth0") == (HealthRecord(), None)

        run(health, body)

    def test_a_record_round_trips_per_target_whatever_its_name(self, health: Opener[HealthStore]) -> None:
        async def body(store: HealthStore) -> None:
            for i, target in enumerate(TARGETS):
                record = HealthRecord(
                    generation=i + 1, open_until=1_700_000_000.25 + i, trips=i, probe_until=1_700_000_030.5,
                    gate_until=1_700_000_004.0, paused=i % 2 == 1, reason=f"TransientError: 503 from {target}",
                )  # fmt: skip
                assert await store.write(target, record, None) is not None
            for i, target in enumerate(TARGETS):
                record, version = await store.read(target)
                assert version is not None
                assert (record.generation, record.trips, record.paused) == (i + 1, i, i % 2 == 1)
                assert record.open_until == 1_700_000_000.25 + i and record.gate_until == 1_700_000_004.0
                assert record.reason == f"TransientError: 503 from {target}"

        run(health, body)

    def test_a_write_over_a_version_that_is_no_longer_stored_changes_nothing(self, health: Opener[HealthStore]) -> None:
        async def body(store: HealthStore) -> None:
            first = await store.write("auth0", HealthRecord(generation=1), None)
            assert first is not None
            assert await store.write("auth0", HealthRecord(generation=9), None) is None  # an insert over a record
            _, version = await store.read("auth0")
            # Two instances read the same version; both try to claim the probe: one wins.
            won = await store.write("auth0", HealthRecord(generation=1, probe_until=10.0), version)
            lost = await store.write("auth0", HealthRecord(generation=1, probe_until=20.0), version)
            assert won is not None and lost is None and won != version
            record, now = await store.read("auth0")
            assert (record.probe_until, now) == (10.0, won)
            assert await store.write("auth0", HealthRecord(generation=2), won) is not None

        run(health, body)

    def test_a_long_reason_is_cut_not_refused(self, health: Opener[HealthStore]) -> None:
        async def body(store: HealthStore) -> None:
            assert await store.write("auth0", HealthRecord(reason="x" * 100_000), None) is not None
            record, _ = await store.read("auth0")
            assert 0 < len(record.reason) <= 1000

        run(health, body)
