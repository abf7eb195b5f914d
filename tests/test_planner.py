"""The planner is pure: table-driven cases over joiners, movers, roles and leavers, through the
Auth0 target's rules (what its paths are, how its values compare, what a create sends)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from shared.core import plan as planner
from shared.core.match import Resolution, judge, resolve
from shared.core.model import Account, ActionKind, DeprovisionState, Identity, Link, Plan, SourceState
from shared.mapping.load import parse_mapping
from shared.mapping.model import SyncMapping
from shared.targets.auth0.rules import CAPABILITIES, Auth0Rules, nest

OID = "5f1c6a3e-9d2b-4c8e-8a1f-2b3c4d5e6f70"
UID = f"auth0|{OID}"
# Group object ids (the mapping file takes object ids, not names).
STAFF = "0a1b2c3d-0000-4000-8000-00000000000a"
SALES = "0a1b2c3d-0000-4000-8000-00000000000b"
SUPPORT = "0a1b2c3d-0000-4000-8000-00000000000c"

MAPPING = parse_mapping(
    """
version: 1
target: {connection: Username-Password-Authentication}
attributes:
  - {source: mail, target: email, transforms: [trim]}
  - {target: email_verified, transforms: [{constant: true}]}
  - {source: displayName, target: name}
  - {source: department, target: user_metadata.department}
  - {source: jobTitle, target: user_metadata.job_title}
  - {source: manager.id, target: app_metadata.manager_object_id}
roles:
"""
    f"  - {{group: {STAFF}, roles: [Employee]}}\n"
    f"  - {{group: {SALES}, roles: [Sales Reader, Sales Writer]}}\n"
    f"  - {{group: {SUPPORT}, roles: [Sales Reader]}}\n"
    "deprovision: {action: block, hard_delete: delete}\n"
)

PROPS = {"mail": "Ada.Lovelace@contoso.example", "displayName": "Ada Lovelace", "department": "R&D", "jobTitle": None}


def source(state: SourceState = SourceState.ACTIVE, groups: tuple[str, ...] = (STAFF,), **props: Any) -> Identity:
    return Identity(OID, state, {**PROPS, "manager": {"id": "m-1"}, **props}, frozenset(groups), source="entra")


def account(roles: tuple[str, ...] = ("Employee",), **data: Any) -> Account:
    base = {
        "user_id": UID,
        "email": "ada.lovelace@contoso.example",  # Auth0 keeps it lower case
        "email_verified": True,
        "name": "Ada Lovelace",
        "blocked": False,
        "user_metadata": {"department": "R&D"},
        "app_metadata": {"entra_object_id": OID, "manager_object_id": "m-1"},
    }
    base.update(data)
    return Auth0Rules(MAPPING.target("auth0")).account(base, frozenset(roles))


LINK = Link(OID, UID, target="auth0", source="entra")


class Planned:
    """A plan with the Auth0 words for its actions (``kinds``), as audit rows show them."""

    def __init__(self, plan: Plan, rules: Auth0Rules):
        self.actions = plan.actions
        self.writes = plan.writes
        self.kinds = [rules.label(a.kind) for a in plan.actions]


def plan(identity: Identity, acct: Account | None, link: Link | None, mapping: SyncMapping) -> Planned:
    section = mapping.target("auth0")
    rules = Auth0Rules(section)
    return Planned(planner.plan(identity, acct, link, section, rules, CAPABILITIES), rules)


def test_joiner_is_created_with_a_deterministic_id_linked_and_given_roles() -> None:
    p = plan(source(groups=(STAFF, SALES)), None, None, MAPPING)
    assert p.kinds == ["create", "link", "assign_roles"]
    create = p.actions[0].payload
    assert create == {
        "connection": "Username-Password-Authentication",
        "user_id": OID,
        "blocked": False,
        "email": "Ada.Lovelace@contoso.example",
        "email_verified": True,
        "name": "Ada Lovelace",
        "user_metadata": {"department": "R&D"},
        "app_metadata": {"entra_object_id": OID, "manager_object_id": "m-1"},
    }
    assert p.actions[2].entitlements == ("Employee", "Sales Reader", "Sales Writer")


def test_joiner_without_an_email_is_refused_not_created() -> None:
    p = plan(source(mail=None), None, None, MAPPING)
    assert p.kinds == ["skip"]
    assert "no email" in p.actions[0].reason


def test_in_sync_user_plans_no_write() -> None:
    p = plan(source(), account(), LINK, MAPPING)
    assert p.actions == ()


def test_email_case_difference_is_not_a_change() -> None:
    rules = Auth0Rules(MAPPING.target("auth0"))
    assert planner.diff({"email": "A@B.example"}, account(email="a@b.example"), rules) == {}


@pytest.mark.parametrize(
    ("change", "expected_patch"),
    [
        ({"displayName": "Ada King"}, {"name": "Ada King"}),
        ({"department": "Sales"}, {"user_metadata": {"department": "Sales"}}),
        ({"department": None}, {"user_metadata": {"department": None}}),  # removed key
        ({"jobTitle": "CTO"}, {"user_metadata": {"job_title": "CTO"}}),
        ({"manager": {"id": "m-2"}}, {"app_metadata": {"manager_object_id": "m-2"}}),
        ({"mail": "ada@newco.example"}, {"email": "ada@newco.example", "email_verified": True}),
        ({"displayName": None}, None),  # a root attribute mapped to nothing is left alone
    ],
)
def test_mover_patches_only_what_changed(change: dict[str, Any], expected_patch: dict[str, Any] | None) -> None:
    p = plan(source(**change), account(), LINK, MAPPING)
    updates = [a for a in p.actions if a.kind is ActionKind.UPDATE]
    if expected_patch is None:
        assert updates == []
    else:
        assert len(updates) == 1
        assert updates[0].payload == expected_patch


def test_changed_email_updates_the_same_account_and_records_the_diff() -> None:
    p = plan(source(mail="ada@newco.example"), account(), LINK, MAPPING)
    assert p.kinds == ["update"]
    assert p.actions[0].diff == {"email": ("ada.lovelace@contoso.example", "ada@newco.example")}


@pytest.mark.parametrize(
    ("groups", "held", "expected"),
    [
        ((STAFF, SALES), ("Employee",), [("assign_roles", ["Sales Reader", "Sales Writer"])]),
        (
            (STAFF,),
            ("Employee", "Sales Reader", "Sales Writer"),
            [("remove_roles", ["Sales Reader", "Sales Writer"])],
        ),
        # Sales Reader still comes from the support group after leaving the sales group.
        ((STAFF, SUPPORT), ("Employee", "Sales Reader", "Sales Writer"), [("remove_roles", ["Sales Writer"])]),
        # Roles no mapping manages are never touched.
        ((STAFF,), ("Employee", "Billing Admin"), []),
        ((), ("Employee", "Billing Admin"), [("remove_roles", ["Employee"])]),
    ],
)
def test_roles_follow_group_membership(
    groups: tuple[str, ...], held: tuple[str, ...], expected: list[tuple[str, list[str]]]
) -> None:
    p = plan(source(groups=groups), account(roles=held), LINK, MAPPING)
    assert [(kind, list(a.entitlements)) for kind, a in zip(p.kinds, p.actions, strict=True)] == expected


def test_an_account_found_by_matching_gets_linked() -> None:
    p = plan(source(), account(), None, MAPPING)
    assert p.kinds == ["link"]


@pytest.mark.parametrize("state", [SourceState.DISABLED, SourceState.SOFT_DELETED, SourceState.OUT_OF_SCOPE])
def test_leaver_is_blocked_and_revoked_with_the_block_remembered_as_ours(state: SourceState) -> None:
    p = plan(source(state), account(), LINK, MAPPING)
    assert p.kinds == ["start_deprovision", "block", "revoke_sessions", "revoke_refresh_tokens", "finish_deprovision"]
    assert p.actions[0].payload == {"disabled_by_sync": True}


def test_leaver_already_deprovisioned_is_a_no_op_replay() -> None:
    done = Link(OID, UID, DeprovisionState.DONE, disabled_by_sync=True, target="auth0", source="entra")
    p = plan(source(SourceState.DISABLED), account(blocked=True), done, MAPPING)
    assert p.writes == ()


def test_a_crash_after_the_block_completes_the_revocations_on_redelivery() -> None:
    pending = Link(OID, UID, DeprovisionState.PENDING, disabled_by_sync=True, target="auth0", source="entra")
    p = plan(source(SourceState.DISABLED), account(blocked=True), pending, MAPPING)
    assert p.kinds == ["revoke_sessions", "revoke_refresh_tokens", "finish_deprovision"]


def test_a_leaver_unblocked_by_hand_is_blocked_again() -> None:
    done = Link(OID, UID, DeprovisionState.DONE, disabled_by_sync=True, target="auth0", source="entra")
    p = plan(source(SourceState.DISABLED), account(blocked=False), done, MAPPING)
    assert p.kinds == ["block", "revoke_sessions", "revoke_refresh_tokens", "finish_deprovision"]


def test_an_account_blocked_by_someone_else_is_not_ours_to_lift() -> None:
    p = plan(source(SourceState.DISABLED), account(blocked=True), LINK, MAPPING)
    assert p.actions[0].payload == {"disabled_by_sync": False}
    assert "block" not in p.kinds
    later = Link(OID, UID, DeprovisionState.DONE, disabled_by_sync=False, target="auth0", source="entra")
    back = plan(source(), account(blocked=True), later, MAPPING)
    assert back.kinds == ["clear_deprovision"]


def test_re_enabled_user_is_unblocked() -> None:
    done = Link(OID, UID, DeprovisionState.DONE, disabled_by_sync=True, target="auth0", source="entra")
    p = plan(source(), account(blocked=True), done, MAPPING)
    assert p.kinds == ["unblock", "clear_deprovision"]


def test_a_risk_lock_survives_re_enabling() -> None:
    done = Link(
        OID, UID, DeprovisionState.DONE, disabled_by_sync=True, risk_locked=True, target="auth0", source="entra"
    )
    p = plan(source(), account(blocked=True), done, MAPPING)
    assert p.kinds == ["clear_deprovision"]


def test_hard_delete_follows_its_own_policy_and_keeps_the_link() -> None:
    p = plan(source(SourceState.HARD_DELETED), account(), LINK, MAPPING)
    assert p.kinds == ["start_deprovision", "revoke_sessions", "revoke_refresh_tokens", "delete", "mark_target_deleted"]
    gone = plan(
        source(SourceState.HARD_DELETED),
        None,
        Link(OID, UID, target_deleted=True, target="auth0", source="entra"),
        MAPPING,
    )
    assert gone.kinds == ["skip"]


def test_a_leaver_with_no_account_is_never_created() -> None:
    p = plan(source(SourceState.DISABLED), None, None, MAPPING)
    assert p.kinds == ["skip"]


def test_revocation_follows_the_policy_switches() -> None:
    quiet = parse_mapping(
        "version: 1\nattributes: [{source: mail, target: email}]\n"
        "deprovision: {revoke_sessions: false, revoke_refresh_tokens: false}\n"
    )
    p = plan(source(SourceState.DISABLED), account(), LINK, quiet)
    assert p.kinds == ["start_deprovision", "block", "finish_deprovision"]


def test_nest_builds_metadata_objects() -> None:
    assert nest({"user_metadata.a": 1, "user_metadata.b": None, "name": "x"}) == {
        "user_metadata": {"a": 1, "b": None},
        "name": "x",
    }


@pytest.mark.parametrize(
    ("candidates", "outcome", "target_id"),
    [
        ([], "none", None),
        ([Account("auth0|1", owner=OID)], "found", "auth0|1"),
        ([Account("auth0|1")], "found", "auth0|1"),
        ([Account("auth0|1"), Account("auth0|1")], "found", "auth0|1"),
        ([Account("auth0|1"), Account("auth0|2")], "ambiguous", None),
        ([Account("auth0|1", owner="someone-else")], "conflict", "auth0|1"),
    ],
)
def test_matching_never_guesses(candidates: list[Account], outcome: str, target_id: str | None) -> None:
    found, account_found = judge(candidates, OID)
    assert found == outcome
    assert (account_found.target_id if account_found else None) == target_id


class CountingLookup:
    """A live target stand-in: accounts by (matcher, key); counts how it was asked."""

    def __init__(self, found: dict[tuple[str, str], list[Account]]):
        self.found = found
        self.asked: list[str] = []

    async def read(self, target_id: str, *, entitlements: bool = True) -> Account | None:
        self.asked.append(f"read {target_id}")
        return next((a for accounts in self.found.values() for a in accounts if a.target_id == target_id), None)

    async def find(self, matcher: str, key: str) -> list[Account]:
        self.asked.append(f"find {matcher}")
        return self.found.get((matcher, key), [])


class AtOnceLookup(CountingLookup):
    async def find_each(self, keys: Sequence[tuple[str, str]]) -> list[list[Account]]:
        self.asked.append(f"find_each {len(keys)}")
        return [self.found.get(k, []) for k in keys]


def resolved(lookup: CountingLookup, identity: Identity) -> Resolution:
    section = MAPPING.target("auth0")
    rules = Auth0Rules(section)
    desired = rules.desired(identity)
    return asyncio.run(resolve(identity, None, lookup, rules, section.matching, desired, entitlements=False))


def test_a_target_that_finds_at_once_is_asked_once_for_every_matcher_and_decides_alike() -> None:
    ada = source()
    rules = Auth0Rules(MAPPING.target("auth0"))
    email = ("email", rules.match_key("email", ada, rules.desired(ada)) or "")
    assert email[1] and rules.match_key("app_metadata", ada, rules.desired(ada))  # two keys to ask
    stranger = account(user_id="auth0|someone-else", app_metadata={})
    lookup = AtOnceLookup({email: [stranger]})
    found = resolved(lookup, ada)
    assert (found.account, found.matched_by) == (stranger, "email")
    chosen = f"read {rules.deterministic_id(ada)}"  # the id a create would give, read first
    assert lookup.asked == [chosen, "find_each 2", f"read {stranger.target_id}"]  # one request for both keys
    one_by_one = CountingLookup({email: [stranger]})
    assert resolved(one_by_one, ada) == found  # the same decision, one request per matcher
    assert one_by_one.asked == [chosen, "find app_metadata", "find email", f"read {stranger.target_id}"]
    twice = AtOnceLookup({email: [stranger, account(user_id="auth0|third", app_metadata={})]})
    assert resolved(twice, ada).problem == "ambiguous"
    nobody = AtOnceLookup({})
    assert resolved(nobody, ada).account is None and nobody.asked == [chosen, "find_each 2"]
