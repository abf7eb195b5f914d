"""The Target contract: what the matching ladder, the planner's writes and reconciliation rely on
from a target, whatever its vendor. Accounts are created, read, found by each matcher of the
target's section, updated, disabled and enabled, granted and ungranted entitlements and deleted; a
duplicate create is a Conflict; the fence runs before every write and a lost lease stops it; every
account can be listed with its owner and entitlements.

Each target is built by its kind from one version 2 mapping file with a section per kind
(``auth0``, ``memory:crm``, ``scim:crm``). The tests speak only the port and the target's own
rules: what a create sends, which keys find an account, what an update sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox.memory import kinds_with_memory
from shared.core.model import Account, Action, ActionKind, Identity, SourceState
from shared.core.ports import FindsAtOnce, Target
from shared.errors import Conflict, LeaseLost, PermanentError
from shared.mapping.load import parse_mapping
from shared.mapping.model import TargetSection
from tests.contracts.backends import Opener, run

STAFF, SALES = "a1111111-2222-4333-8444-555555555555", "b1111111-2222-4333-8444-555555555555"

MAPPING = f"""\
version: 2
scope: {{user_types: [Member]}}
targets:
  auth0:
    connection: Username-Password-Authentication
    attributes:
      - {{source: mail, target: email, transforms: [trim, lower]}}
      - {{source: displayName, target: name}}
      - {{source: department, target: user_metadata.department}}
    roles:
      - {{group: {STAFF}, roles: [Employee]}}
      - {{group: {SALES}, roles: [Sales Reader, Sales Writer]}}
    deprovision: {{action: block}}
  memory:crm:
    attributes:
      - {{source: mail, target: email, transforms: [trim, lower]}}
      - {{source: displayName, target: name}}
      - {{source: department, target: department}}
    groups:
      - {{group: {STAFF}, groups: [staff]}}
      - {{group: {SALES}, groups: [sales, sales-writers]}}
    deprovision: {{action: disable}}
  scim:crm:
    base_url: BASE_URL
    token_setting: SCIM_CRM_TOKEN
    attributes:
      - {{source: mail, target: userName, transforms: [trim, lower]}}
      - {{source: mail, target: 'emails[type eq "work"].value', transforms: [trim, lower]}}
      - {{source: displayName, target: displayName}}
      - {{source: department, target: 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department'}}
    groups:
      - {{group: {STAFF}, groups: [staff]}}
      - {{group: {SALES}, groups: [sales]}}
    deprovision: {{action: disable}}
"""


@dataclass
class Vendor:
    target: Target
    section: TargetSection
    add_by_hand: Callable[[str], str]  # an account someone made in the target itself (email -> id)
    unique: str = "email"  # the path carrying the mail that the target keeps unique
    name: str = "name"  # the path carrying the display name


def sections(scim_url: str = "http://127.0.0.1:9/scim/v2") -> dict[str, TargetSection]:
    return dict(parse_mapping(MAPPING.replace("BASE_URL", scim_url), kinds=kinds_with_memory()).targets)


def person(n: int, groups: frozenset[str] = frozenset({STAFF}), **extra: Any) -> Identity:
    uid = f"{n:08d}-aaaa-4bbb-8ccc-dddddddddddd"
    attributes = {"mail": f" Person.{n}@Contoso.example ", "displayName": f"Person {n}", "department": "Sales"}
    return Identity(uid, SourceState.ACTIVE, {**attributes, **extra}, groups, source="entra")


class Fence:
    """A fence that counts its calls, and raises LeaseLost once ``lost``."""

    def __init__(self) -> None:
        self.calls = 0
        self.lost = False

    def __call__(self) -> None:
        self.calls += 1
        if self.lost:
            raise LeaseLost("lease lapsed before a write; the write was not sent", retry_after_s=5.0)


async def create(v: Vendor, identity: Identity, fence: Callable[[], None] | None = None) -> str:
    rules = v.target.rules
    payload = rules.create_payload(identity, rules.desired(identity))
    assert isinstance(payload, dict), payload
    applied = await v.target.apply("", Action(ActionKind.CREATE, payload), fence or Fence())
    assert applied.target_id
    return applied.target_id


async def update(v: Vendor, target_id: str, before: Identity, after: Identity) -> Any:
    rules = v.target.rules
    old, new = rules.desired(before), rules.desired(after)
    changes = {path: value for path, value in new.items() if not rules.same(path, value, old.get(path))}
    action = Action(
        ActionKind.UPDATE,
        rules.update_payload(changes, new),
        diff={path: (old.get(path), value) for path, value in changes.items()},
    )
    return await v.target.apply(target_id, action, Fence())


async def read(v: Vendor, target_id: str) -> Account:
    account = await v.target.read(target_id)
    assert account is not None, f"{target_id} is gone"
    return account


def mapped(v: Vendor, account: Account, identity: Identity) -> dict[str, bool]:
    """Target path -> whether the account holds what the mapping derives from the identity."""
    rules = v.target.rules
    return {
        path: rules.same(path, want, rules.current(account, path)) for path, want in rules.desired(identity).items()
    }


def matchers(v: Vendor) -> list[str]:
    return [m for m in v.section.matching if m != "link"]


class TargetContract:
    """What the matching ladder, the planner's writes and reconciliation rely on from every Target.

    A subclass gives the target it checks as the ``vendor`` fixture: an opener of the target its
    kind builds from its section of ``MAPPING`` (see ``sections()``), holding no account, with that
    section and a hook that makes an account by hand in the target itself.
    """

    @pytest.fixture
    def vendor(self) -> Opener[Vendor]:
        raise NotImplementedError("a TargetContract subclass opens its target in a `vendor` fixture")

    def test_a_created_account_reads_back_with_the_mapped_values_and_its_owner(self, vendor: Opener[Vendor]) -> None:
        ada = person(1)

        async def body(v: Vendor) -> None:
            assert v.target.name == v.section.name
            target_id = await create(v, ada)
            expected = v.target.rules.deterministic_id(ada)
            assert expected is None or target_id == expected
            account = await read(v, target_id)
            assert (account.target_id, account.owner, account.active) == (target_id, ada.id, True)
            assert all(mapped(v, account, ada).values()), mapped(v, account, ada)
            assert account.entitlements == frozenset()  # nothing granted yet
            assert await v.target.read(v.target.rules.deterministic_id(person(9)) or "no-such-account") is None

        run(vendor, body)

    def test_an_account_is_found_by_each_matcher_of_its_section_and_by_no_other_identitys_keys(
        self,
        vendor: Opener[Vendor],
    ) -> None:
        ada, bob = person(1), person(2)

        async def body(v: Vendor) -> None:
            rules = v.target.rules
            target_id = await create(v, ada)
            await create(v, bob)
            account = await read(v, target_id)
            assert len(matchers(v)) >= 2
            for matcher in matchers(v):
                key = rules.match_key(matcher, ada, rules.desired(ada))
                assert key, f"{matcher} has no key for an active identity with an email"
                assert key in rules.keys_of(account)[matcher]  # how reconciliation indexes the accounts
                assert [a.target_id for a in await v.target.find(matcher, key)] == [target_id]
                stranger = rules.match_key(matcher, person(3), rules.desired(person(3)))
                assert stranger and await v.target.find(matcher, stranger) == []

        run(vendor, body)

    def test_a_target_that_finds_at_once_answers_each_key_as_find_does(self, vendor: Opener[Vendor]) -> None:
        ada, bob = person(1), person(2)

        async def body(v: Vendor) -> None:
            if not isinstance(v.target, FindsAtOnce):
                pytest.skip(f"{v.target.name} finds one key at a time")
            rules = v.target.rules
            ada_id, bob_id = await create(v, ada), await create(v, bob)
            people = (ada, person(3), bob)
            keys = [(m, rules.match_key(m, p, rules.desired(p)) or "") for p in people for m in matchers(v)]
            keys.append((matchers(v)[0], (keys[0][1] or "").upper()))  # as the target compares: case too
            alone = [[a.target_id for a in await v.target.find(m, k)] for m, k in keys]
            together = [[a.target_id for a in found] for found in await v.target.find_each(keys)]
            assert together == alone
            assert {i for ids in together for i in ids} == {ada_id, bob_id}

        run(vendor, body)

    def test_an_update_changes_what_it_sends_and_keeps_the_rest(self, vendor: Opener[Vendor]) -> None:
        ada = person(1)
        moved = person(1, displayName="Ada Moved", department="Finance")

        async def body(v: Vendor) -> None:
            target_id = await create(v, ada)
            applied = await update(v, target_id, ada, moved)
            assert applied.refused == {} and applied.warning == ""
            account = await read(v, target_id)
            assert all(mapped(v, account, moved).values()), mapped(v, account, moved)
            assert (account.owner, account.active) == (ada.id, True)

        run(vendor, body)

    def test_an_update_to_an_email_another_account_holds_is_refused_for_that_value_alone(
        self, vendor: Opener[Vendor]
    ) -> None:
        ada, bob = person(1), person(2)
        taking = person(1, mail=bob.attributes["mail"], department="Finance")

        async def body(v: Vendor) -> None:
            rules = v.target.rules
            target_id = await create(v, ada)
            await create(v, bob)
            applied = await update(v, target_id, ada, taking)
            assert list(applied.refused) == [v.unique]
            assert rules.same(v.unique, applied.refused[v.unique], rules.desired(bob)[v.unique])
            checks = mapped(v, await read(v, target_id), taking)
            assert checks.pop(v.unique) is False  # still Ada's own address
            assert all(checks.values()), checks  # the department moved all the same

        run(vendor, body)

    def test_an_account_is_disabled_and_enabled_again(self, vendor: Opener[Vendor]) -> None:
        async def body(v: Vendor) -> None:
            target_id = await create(v, person(1))
            await v.target.apply(target_id, Action(ActionKind.DISABLE), Fence())
            assert (await read(v, target_id)).active is False
            await v.target.apply(target_id, Action(ActionKind.DISABLE), Fence())  # twice is harmless
            assert (await read(v, target_id)).active is False
            await v.target.apply(target_id, Action(ActionKind.ENABLE), Fence())
            assert (await read(v, target_id)).active is True

        run(vendor, body)

    def test_entitlements_are_granted_and_ungranted(self, vendor: Opener[Vendor]) -> None:
        ada = person(1, groups=frozenset({STAFF, SALES}))

        async def body(v: Vendor) -> None:
            target_id = await create(v, ada)
            granted = tuple(sorted(v.section.entitlements_for(ada.groups, ada.attributes)))
            assert len(granted) >= 2
            await v.target.apply(target_id, Action(ActionKind.GRANT, entitlements=granted), Fence())
            assert (await read(v, target_id)).entitlements == frozenset(granted)
            await v.target.apply(target_id, Action(ActionKind.UNGRANT, entitlements=granted[:1]), Fence())
            assert (await read(v, target_id)).entitlements == frozenset(granted[1:])
            without = await v.target.read(target_id, entitlements=False)
            assert without is not None and without.owner == ada.id  # a read that leaves entitlements out

        run(vendor, body)

    def test_a_deleted_account_is_gone_and_deleting_it_again_is_harmless(self, vendor: Opener[Vendor]) -> None:
        ada = person(1)

        async def body(v: Vendor) -> None:
            target_id = await create(v, ada)
            if not v.target.capabilities.delete:  # Salesforce: users are deactivated, never deleted
                with pytest.raises(PermanentError):
                    await v.target.apply(target_id, Action(ActionKind.DELETE), Fence())
                assert (await read(v, target_id)).active  # refused, and nothing else done
                return
            await v.target.apply(target_id, Action(ActionKind.DELETE), Fence())
            assert await v.target.read(target_id) is None
            for matcher in matchers(v):
                key = v.target.rules.match_key(matcher, ada, v.target.rules.desired(ada))
                assert key and await v.target.find(matcher, key) == []
            await v.target.apply(target_id, Action(ActionKind.DELETE), Fence())

        run(vendor, body)

    def test_a_second_create_for_an_identity_or_its_email_is_a_conflict(self, vendor: Opener[Vendor]) -> None:
        ada = person(1)
        same_email = person(2, mail=ada.attributes["mail"])

        async def body(v: Vendor) -> None:
            await create(v, ada)
            with pytest.raises(Conflict):
                await create(v, ada)
            with pytest.raises(Conflict):
                await create(v, same_email)
            assert len([a async for a in v.target.accounts()]) == 1

        run(vendor, body)

    def test_the_fence_is_called_before_every_write(self, vendor: Opener[Vendor]) -> None:
        ada = person(1)

        async def body(v: Vendor) -> None:
            fence = Fence()
            target_id = await create(v, ada, fence)
            assert fence.calls >= 1
            granted = tuple(sorted(v.section.entitlements_for(ada.groups, ada.attributes)))
            for action in (
                Action(ActionKind.DISABLE),
                Action(ActionKind.ENABLE),
                Action(ActionKind.GRANT, entitlements=granted),
                Action(ActionKind.UNGRANT, entitlements=granted),
                *([Action(ActionKind.DELETE)] if v.target.capabilities.delete else []),
            ):
                before = fence.calls
                await v.target.apply(target_id, action, fence)
                assert fence.calls > before, action.kind

        run(vendor, body)

    def test_a_lost_lease_stops_every_write_before_it_is_sent(self, vendor: Opener[Vendor]) -> None:
        ada, bob = person(1), person(2)

        async def body(v: Vendor) -> None:
            rules = v.target.rules
            lost = Fence()
            lost.lost = True
            with pytest.raises(LeaseLost):
                await create(v, bob, lost)
            for matcher in matchers(v):
                assert await v.target.find(matcher, rules.match_key(matcher, bob, rules.desired(bob)) or "") == []
            target_id = await create(v, ada)
            before = await read(v, target_id)
            granted = tuple(sorted(v.section.entitlements_for(ada.groups)))
            for action in (
                Action(ActionKind.DISABLE),
                Action(ActionKind.GRANT, entitlements=granted),
                Action(ActionKind.UPDATE, rules.update_payload({v.name: "Not Sent"}, {v.name: "Not Sent"}),
                       diff={v.name: (None, "Not Sent")}),
                *([Action(ActionKind.DELETE)] if v.target.capabilities.delete else []),
            ):  # fmt: skip
                with pytest.raises(LeaseLost):
                    await v.target.apply(target_id, action, lost)
            assert await read(v, target_id) == before

        run(vendor, body)

    def test_accounts_lists_every_account_once_with_its_owner_and_entitlements(self, vendor: Opener[Vendor]) -> None:
        people = [person(n, groups=frozenset([STAFF] if n % 2 else [STAFF, SALES])) for n in range(1, 6)]

        async def body(v: Vendor) -> None:
            expected: dict[str, tuple[str | None, frozenset[str]]] = {}
            for identity in people:
                target_id = await create(v, identity)
                granted = tuple(sorted(v.section.entitlements_for(identity.groups)))
                await v.target.apply(target_id, Action(ActionKind.GRANT, entitlements=granted), Fence())
                expected[target_id] = (identity.id, frozenset(granted))
            expected[v.add_by_hand("made.by.hand@contoso.example")] = (None, frozenset())  # nobody's: no owner
            listed = [a async for a in v.target.accounts()]
            assert sorted(a.target_id for a in listed) == sorted(expected)  # each once
            assert {a.target_id: (a.owner, a.entitlements) for a in listed} == expected
            assert all(a.active for a in listed)

        run(vendor, body)
