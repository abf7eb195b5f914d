"""The inbound SCIM store's contract: scim2-server's storage contract (every SCIM storage's rules:
copies, versions, uniqueness, not found, filters, paging) for our users and groups, and what the
endpoint and the inbound source rely on beyond it: a repeated create is recognised, two creates of
one userName at once store one user, two PATCHes of one group at once lose no member, a DELETE
leaves a tombstone the source reads, memberships are readable from both sides.

A subclass gives the rows the store is built on as the ``rows`` fixture: an opener of an empty
:class:`~shared.sources.scim_inbox.rows.Rows` (memory, or a fresh partition on Azurite).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest
from scim2_models import (
    Context,
    PatchOp,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ScimProvider,
    UniquenessException,
)
from scim2_server.testing import AsyncScimStorageContract, BlockingStorage

from shared.sources.scim_inbox import schema
from shared.sources.scim_inbox.rows import Conflict, Op, Rows
from shared.sources.scim_inbox.storage import InboxStorage, Replayed
from tests.contracts.backends import Opener


class InboxStoreContract(AsyncScimStorageContract):
    supports_root_search = False  # /Users and /Groups only: the endpoint serves no root search

    @pytest.fixture
    def rows(self) -> Opener[Rows]:
        raise NotImplementedError("an InboxStoreContract subclass opens empty rows in a `rows` fixture")

    @pytest.fixture
    def provider(self) -> ScimProvider:
        return schema.provider()

    @pytest.fixture
    def storage(self, rows: Opener[Rows], provider: ScimProvider) -> Iterator[Any]:
        with asyncio.Runner() as runner:
            opened = rows()
            subject = runner.run(opened.__aenter__())
            try:
                yield BlockingStorage(InboxStorage(subject, provider), runner)
            finally:
                runner.run(opened.__aexit__(None, None, None))

    # -- the rows ---------------------------------------------------------------------------------

    def test_a_commit_of_one_write_keeps_its_condition_as_a_batch_does(self, rows: Opener[Rows]) -> None:
        """A single write takes the store's cheaper path (Table Storage: the entity call, not a
        one-operation batch); its conditions hold as in a batch of two."""

        async def check() -> None:
            async with rows() as subject:
                for prefix, pad in (("one", []), ("two", [Op("upsert", "pad", {"changed": 1})])):
                    await subject.commit([Op("insert", f"{prefix}|a", {"n": 1}), *pad])
                    first = await subject.get(f"{prefix}|a")
                    assert first is not None and first.data["n"] == 1
                    with pytest.raises(Conflict) as taken:  # an insert where a row is
                        await subject.commit([Op("insert", f"{prefix}|a", {"n": 2}), *pad])
                    assert taken.value.key == f"{prefix}|a"
                    await subject.commit([Op("replace", f"{prefix}|a", {"n": 3}, etag=first.etag), *pad])
                    with pytest.raises(Conflict):  # over the version it was read at, now gone
                        await subject.commit([Op("replace", f"{prefix}|a", {"n": 4}, etag=first.etag), *pad])
                    with pytest.raises(Conflict):  # a replace of a row that is not there
                        await subject.commit([Op("replace", f"{prefix}|none", {"n": 5}), *pad])
                    with pytest.raises(Conflict):  # a delete too
                        await subject.commit([Op("delete", f"{prefix}|none"), *pad])
                    after = await subject.get(f"{prefix}|a")
                    assert after is not None and after.data["n"] == 3 and await subject.get(f"{prefix}|none") is None

        asyncio.run(check())

    # -- what the endpoint relies on -------------------------------------------------------------

    def test_a_create_repeating_a_stored_user_is_recognised_as_a_replay(
        self, storage: Any, user_type: ResourceType, user_model: Any
    ) -> None:
        stored = storage.create(user_type, user_model(user_name="ada@contoso.example", external_id="Obj-1"))
        with pytest.raises(Replayed) as replay:
            storage.create(user_type, user_model(user_name="ADA@contoso.example", external_id="Obj-1"))
        assert replay.value.stored.id == stored.id and replay.value.stored.external_id == "Obj-1"
        with pytest.raises(UniquenessException):  # the same userName for someone else: a conflict
            storage.create(user_type, user_model(user_name="ada@contoso.example", external_id="Obj-2"))
        with pytest.raises(UniquenessException):  # and without an externalId, never a replay
            storage.create(user_type, user_model(user_name="ada@contoso.example"))

    def test_a_user_created_twice_at_once_is_stored_once(
        self, storage: Any, user_type: ResourceType, user_model: Any
    ) -> None:
        inbox = cast(InboxStorage, storage.storage)

        async def twice() -> list[Any]:
            user = user_model(user_name="bo@contoso.example", external_id="Obj-B")
            return await asyncio.gather(*(inbox.create(user_type, user) for _ in range(2)), return_exceptions=True)

        outcomes = storage.run(twice())
        created = [o for o in outcomes if isinstance(o, Resource)]
        assert len(created) == 1 and isinstance(next(o for o in outcomes if o not in created), Replayed)
        users = storage.run(_all_users(inbox))
        assert [u.id for u in users] == [created[0].id]

    def test_two_patches_of_one_group_at_once_lose_no_member(
        self, storage: Any, user_type: ResourceType, user_model: Any, group_type: ResourceType, group_model: Any
    ) -> None:
        inbox = cast(InboxStorage, storage.storage)
        ann, bea, cy = self.create_users(storage, user_type, user_model, "ann", "bea", "cy")
        group = storage.create(group_type, group_model(display_name="Staff", members=[{"value": cy.id}]))

        async def add(member: str) -> Any:
            for _ in range(8):  # what the endpoint's handler does: re-read and re-apply on a conflict
                current = await inbox.get(group_type, group.id)
                previous = current.model_copy(deep=True)
                patch = PatchOp[group_model].model_validate(
                    {"Operations": [{"op": "Add", "path": "members", "value": [{"value": member}]}]},
                    scim_ctx=Context.RESOURCE_PATCH_REQUEST,
                )
                patch.patch(current)
                try:
                    return await inbox.update(
                        group_type, current, expected_version=current.meta.version, previous=previous
                    )
                except PreconditionFailedException:
                    continue
            raise AssertionError("never written")

        async def both() -> None:
            await asyncio.gather(add(ann.id), add(bea.id))

        storage.run(both())
        members = {m.value for m in storage.get(group_type, group.id).members}
        assert members == {ann.id, bea.id, cy.id}
        assert storage.run(inbox.groups_of(ann.id)) == {group.id}

    def test_a_write_over_a_row_read_before_another_write_is_refused(
        self, storage: Any, user_type: ResourceType, user_model: Any
    ) -> None:
        """A PATCH hands :meth:`InboxStorage.update` the row it read instead of reading it again:
        when another request wrote the user in between, that row is not trusted, and nothing of
        the stale change lands (the handler reads again and re-applies)."""
        inbox = cast(InboxStorage, storage.storage)
        (ann,) = self.create_users(storage, user_type, user_model, "ann")
        stale, row = storage.run(inbox.read(user_type, ann.id))
        meanwhile = storage.get(user_type, ann.id)
        meanwhile.display_name = "Ann, written meanwhile"
        written = storage.update(user_type, meanwhile, expected_version=meanwhile.meta.version)
        stale.display_name = "Ann, from the stale read"
        with pytest.raises(PreconditionFailedException):
            storage.run(inbox.update(user_type, stale, expected_version=stale.meta.version, read=row))
        kept = storage.get(user_type, ann.id)
        assert kept.display_name == "Ann, written meanwhile" and kept.meta.version == written.meta.version

    def test_a_membership_change_takes_effect_against_what_was_read(
        self, storage: Any, user_type: ResourceType, user_model: Any, group_type: ResourceType, group_model: Any
    ) -> None:
        inbox = cast(InboxStorage, storage.storage)
        ann, bea = self.create_users(storage, user_type, user_model, "ann", "bea")
        group = storage.create(group_type, group_model(display_name="Staff", members=[{"value": ann.id}]))
        read = storage.get(group_type, group.id)  # a PATCH read the group with ann only ...
        previous = read.model_copy(deep=True)
        storage.run(
            inbox.update(
                group_type,
                group_model(id=group.id, display_name="Staff", members=[{"value": ann.id}, {"value": bea.id}]),
            )
        )
        read.members = []  # ... and removes ann: bea, added meanwhile, stays
        storage.run(inbox.update(group_type, read, previous=previous))
        assert [m.value for m in storage.get(group_type, group.id).members] == [bea.id]

    def test_a_group_display_name_is_unique_without_case(
        self, storage: Any, group_type: ResourceType, group_model: Any
    ) -> None:
        storage.create(group_type, group_model(display_name="Sales"))
        with pytest.raises(UniquenessException):
            storage.create(group_type, group_model(display_name="SALES"))

    def test_a_deleted_user_leaves_a_tombstone_and_its_memberships(
        self, storage: Any, user_type: ResourceType, user_model: Any, group_type: ResourceType, group_model: Any
    ) -> None:
        inbox = cast(InboxStorage, storage.storage)
        ann, bea = self.create_users(storage, user_type, user_model, "ann", "bea")
        group = storage.create(
            group_type, group_model(display_name="Staff", members=[{"value": ann.id}, {"value": bea.id}])
        )
        before = storage.run(inbox.changed_since(None))
        storage.delete(user_type, ann.id)
        gone = storage.run(inbox.user(ann.id))
        assert gone is not None and gone.resource is None  # read as deleted, not as never seen
        assert [m.value for m in storage.get(group_type, group.id).members] == [bea.id]
        assert ann.id in before and ann.id in storage.run(inbox.changed_since(None))
        storage.create(user_type, user_model(user_name="ann"))  # the name is free again

    def test_externalid_is_kept_exactly_and_found_by_filter(
        self, storage: Any, user_type: ResourceType, user_model: Any
    ) -> None:
        storage.create(user_type, user_model(user_name="cy", external_id="MiXeD-Case-42"))
        found = self.search(
            storage, [user_type], self.search_request([user_model], filter='externalId eq "MiXeD-Case-42"')
        )
        assert [u.external_id for u in found.resources] == ["MiXeD-Case-42"]
        other = self.search(
            storage, [user_type], self.search_request([user_model], filter='externalId eq "mixed-case-42"')
        )
        assert other.total == 0  # externalId is caseExact

    def test_the_externalid_index_follows_every_write_and_lists_each_resource_that_carries_it(
        self, storage: Any, user_type: ResourceType, user_model: Any, group_type: ResourceType, group_model: Any
    ) -> None:
        """SCIM does not make externalId unique: two users may carry one, and a lookup finds both.
        The index is read by key (a RowKey range walks the whole table in Azurite)."""
        inbox = cast(InboxStorage, storage.storage)

        def found(value: str, kind: ResourceType = user_type, model: Any = user_model) -> list[str]:
            request = self.search_request([model], filter=f'externalId eq "{value}"')
            return sorted(r.id for r in self.search(storage, [kind], request).resources)

        ann = storage.create(user_type, user_model(user_name="ann", external_id="Shared-1"))
        bea = storage.create(user_type, user_model(user_name="bea", external_id="Shared-1"))
        assert found("Shared-1") == sorted([ann.id, bea.id])
        assert storage.run(inbox.find_user_ids("Shared-1")) == sorted([ann.id, bea.id])
        moved = storage.run(inbox.get(user_type, ann.id)).model_copy(update={"external_id": "Moved-2"})
        storage.run(inbox.update(user_type, moved))
        assert (found("Shared-1"), found("Moved-2")) == ([bea.id], [ann.id])
        storage.delete(user_type, bea.id)
        assert found("Shared-1") == [] and storage.run(inbox.find_user_ids("Shared-1")) == []
        team = storage.create(group_type, group_model(display_name="Team", external_id="Moved-2"))
        assert found("Moved-2", group_type, group_model) == [team.id]  # a group's index is its own
        assert found("Moved-2") == [ann.id]

        async def together() -> list[Any]:  # two creates of one externalId at once: both kept, both indexed
            made = (inbox.create(user_type, user_model(user_name=n, external_id="Same-3")) for n in ("cy", "dee"))
            return await asyncio.gather(*made)

        both = storage.run(together())
        assert found("Same-3") == sorted(u.id for u in both)


async def _all_users(inbox: InboxStorage) -> list[Any]:
    return [u for page in [p async for p in inbox.users()] for u in page]
