"""The AuditStore contract: rows per identity in the order things happened, as the CLI and the
operators read them, and the write-ahead intent the worker records before a target write and
settles with its rows (only its own intent: another worker's, written since, stays)."""

from __future__ import annotations

from typing import Any

import pytest

from shared import redact
from shared.core.ports import AuditStore
from shared.stores.audit import AuditQuery, AuditRow
from shared.stores.keys import BATCH_LIMIT
from tests.contracts.backends import Opener, run

WHO = "o'brien/1"  # an identity no table key can hold as it is
AT = "2026-03-01T10:00:00.000Z"


def row(action: str, identity: str = WHO, at: str = AT, **extra: Any) -> AuditRow:
    return AuditRow("c1", "notification", "n1", identity, "auth0", "auth0|x", action, "ok", at=at, **extra)


def actions(rows: list[dict[str, Any]]) -> list[str]:
    return [r["action"] for r in rows]


class AuditStoreContract:
    """What the worker, the CLI and the operators rely on from every AuditStore.

    A subclass gives the store it checks as the ``audit`` fixture: an opener of a new, empty store.
    """

    @pytest.fixture
    def audit(self) -> Opener[AuditStore]:
        raise NotImplementedError("an AuditStoreContract subclass opens its store in an `audit` fixture")

    def test_a_row_comes_back_with_every_field_it_was_written_with(self, audit: Opener[AuditStore]) -> None:
        async def body(store: AuditStore) -> None:
            await store.write(
                AuditRow("c1", "reconcile", "run-7", WHO, "memory:crm", "mem|1", "update", "warning",
                         {"email": [None, "a@x.example"]}, "done in part", "one value refused", at=AT)
            )  # fmt: skip
            [got] = await store.for_identity(WHO)
            expected = {
                "correlation_id": "c1", "source": "reconcile", "source_ref": "run-7", "identity": WHO,
                "target": "memory:crm", "target_id": "mem|1", "action": "update", "outcome": "warning",
                "diff": '{"email": [null, "a@x.example"]}', "detail": "done in part", "error": "one value refused",
                "at": AT,
            }  # fmt: skip
            assert {k: got[k] for k in expected} == expected
            assert (await store.for_identity("someone else")) == []

        run(audit, body)

    def test_rows_come_back_per_identity_in_the_order_they_happened(self, audit: Opener[AuditStore]) -> None:
        async def body(store: AuditStore) -> None:
            await store.write(row("second", at="2026-03-01T10:00:02.000Z"))
            await store.write(row("elsewhere", identity="u2", at="2026-03-01T10:00:01.500Z"))
            await store.write(row("first", at="2026-03-01T10:00:01.000Z"))
            await store.write_many([row("third", at="2026-03-01T10:00:03.000Z")])
            assert actions(await store.for_identity(WHO)) == ["first", "second", "third"]
            assert actions(await store.for_identity("u2")) == ["elsewhere"]
            assert actions(await store.all()) == ["first", "elsewhere", "second", "third"]

        run(audit, body)

    def test_a_search_filters_by_every_field_and_time_and_gives_the_newest_first(
        self, audit: Opener[AuditStore]
    ) -> None:
        async def body(store: AuditStore) -> None:
            second = "2026-03-01T10:00:0{}.000Z".format
            await store.write_many([
                row("create", at=second(1)),
                AuditRow("c1", "notification", "n1", WHO, "scim:crm", "s|1", "update", "ok", at=second(2)),
                row("block", identity="u2", at=second(3)),
                AuditRow("c9", "operator", "alice", "operator", "auth0", "", "pause", "ok", at=second(4)),
                row("update", at=second(5)),
            ])  # fmt: skip
            await store.write_intent(WHO, "auth0", {"actions": []})  # never a row of a search

            def find(**fields: Any) -> Any:
                return store.search(AuditQuery(**fields))

            assert actions(await find()) == ["update", "pause", "block", "update", "create"]
            assert actions(await find(limit=2)) == ["update", "pause"]
            assert actions(await find(identity=WHO)) == ["update", "update", "create"]
            assert actions(await find(target="scim:crm")) == ["update"]
            assert actions(await find(action="update", identity=WHO, limit=1)) == ["update"]
            assert [r["at"] for r in await find(action="update", limit=1)] == ["2026-03-01T10:00:05.000Z"]
            assert actions(await find(correlation_id="c9")) == ["pause"]
            assert actions(await find(outcome="failed")) == []
            window = await find(since="2026-03-01T10:00:02.000Z", until="2026-03-01T10:00:04.000Z")
            assert actions(window) == ["pause", "block", "update"]  # both ends included
            assert actions(await find(identity="' or PartitionKey ne '")) == []  # a value, never syntax

        run(audit, body)

    def test_rows_of_the_same_moment_come_back_in_the_order_they_were_written(self, audit: Opener[AuditStore]) -> None:
        # A create and its grants are often recorded within one millisecond (a fast target).
        steps = ["create", "grant", "grant", "update", "disable", "enable", "delete", "none"]

        async def body(store: AuditStore) -> None:
            await store.write_many([row(action) for action in steps[:4]])
            for action in steps[4:6]:
                await store.write(row(action))
            await store.settle([row(action) for action in steps[6:]], WHO, "auth0", drop_intent=False)
            assert actions(await store.for_identity(WHO)) == steps
            assert actions(await store.all()) == steps

        run(audit, body)

    def test_write_many_writes_more_rows_than_one_transaction_holds_for_several_identities(
        self,
        audit: Opener[AuditStore],
    ) -> None:
        rows = [row(f"a{i:03d}", identity="u1" if i % 3 else "u2", at=f"2026-03-01T10:{i // 60:02d}:{i % 60:02d}.000Z")
                for i in range(BATCH_LIMIT + 50)]  # fmt: skip

        async def body(store: AuditStore) -> None:
            await store.write_many(rows)
            await store.write_many([])
            assert actions(await store.for_identity("u1")) == [r.action for r in rows if r.identity == "u1"]
            assert actions(await store.for_identity("u2")) == [r.action for r in rows if r.identity == "u2"]
            assert len(await store.all()) == len(rows)

        run(audit, body)

    def test_secrets_never_reach_a_row(self, audit: Opener[AuditStore]) -> None:
        secret = "contract-secret-4b1f0c9e77"
        redact.register(secret)

        async def body(store: AuditStore) -> None:
            await store.write(row("update", diff={"token": secret}, detail=f"sent {secret}", error=f"401 for {secret}"))
            [got] = await store.for_identity(WHO)
            assert secret not in str(got)
            assert got["detail"] == f"sent {redact.MASK}" and got["error"] == f"401 for {redact.MASK}"

        run(audit, body)

    def test_an_intent_round_trips_is_replaced_and_is_never_an_audit_row(self, audit: Opener[AuditStore]) -> None:
        async def body(store: AuditStore) -> None:
            assert await store.read_intent(WHO, "auth0") is None
            first = await store.write_intent(WHO, "auth0", {"actions": [{"kind": "create"}], "at": AT})
            assert await store.read_intent(WHO, "auth0") == {"actions": [{"kind": "create"}], "at": AT}
            second = await store.write_intent(WHO, "auth0", {"actions": [{"kind": "update"}]})
            assert first and second and first != second
            assert await store.read_intent(WHO, "auth0") == {"actions": [{"kind": "update"}]}
            assert await store.read_intent(WHO, "memory:crm") is None  # one intent per target
            assert await store.read_intent("u2", "auth0") is None
            assert await store.for_identity(WHO) == [] and await store.all() == []

        run(audit, body)

    def test_settle_with_the_intents_etag_drops_it_and_writes_the_rows(self, audit: Opener[AuditStore]) -> None:
        async def body(store: AuditStore) -> None:
            etag = await store.write_intent(WHO, "auth0", {"actions": ["create"]})
            await store.write_intent(WHO, "memory:crm", {"actions": ["update"]})
            await store.settle([row("create"), row("grant")], WHO, "auth0", drop_intent=True, intent_etag=etag)
            assert await store.read_intent(WHO, "auth0") is None
            assert await store.read_intent(WHO, "memory:crm") == {"actions": ["update"]}  # another target's
            assert actions(await store.for_identity(WHO)) == ["create", "grant"]

        run(audit, body)

    def test_settle_keeps_an_intent_another_worker_wrote_since_and_still_writes_the_rows(
        self,
        audit: Opener[AuditStore],
    ) -> None:
        async def body(store: AuditStore) -> None:
            mine = await store.write_intent(WHO, "auth0", {"by": "me"})
            await store.write_intent(WHO, "auth0", {"by": "the worker that took the lease over"})
            await store.settle([row("create")], WHO, "auth0", drop_intent=True, intent_etag=mine)
            assert await store.read_intent(WHO, "auth0") == {"by": "the worker that took the lease over"}
            assert actions(await store.for_identity(WHO)) == ["create"]

        run(audit, body)

    def test_settle_without_drop_intent_keeps_the_intent(self, audit: Opener[AuditStore]) -> None:
        async def body(store: AuditStore) -> None:
            etag = await store.write_intent(WHO, "auth0", {"by": "me"})
            await store.settle([row("create")], WHO, "auth0", drop_intent=False, intent_etag=etag)
            assert await store.read_intent(WHO, "auth0") == {"by": "me"}
            assert actions(await store.for_identity(WHO)) == ["create"]

        run(audit, body)

    def test_settle_without_an_etag_drops_whatever_intent_is_there_or_just_writes_the_rows(
        self,
        audit: Opener[AuditStore],
    ) -> None:
        async def body(store: AuditStore) -> None:
            await store.write_intent(WHO, "auth0", {"left": "by a killed attempt"})
            await store.settle([row("recovered")], WHO, "auth0", drop_intent=True)
            assert await store.read_intent(WHO, "auth0") is None
            await store.settle([row("none")], WHO, "auth0", drop_intent=True)  # no intent left: the rows only
            await store.settle([], WHO, "auth0", drop_intent=True)
            assert actions(await store.for_identity(WHO)) == ["recovered", "none"]

        run(audit, body)
