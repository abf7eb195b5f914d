"""The link's memory of what was applied (``planner.applied_after``) stands in for a read of the
target (``planner.remembered``): planned against it, a change makes the same plan as against the
account read after the last convergence, and it is not used where it could be wrong."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared.core import plan as planner
from shared.core.model import Account, ActionKind, DeprovisionState, Identity, Link, Plan, SourceState
from shared.targets.auth0.rules import CAPABILITIES, Auth0Rules
from tests.test_planner import LINK, MAPPING, SALES, STAFF, SUPPORT, account, source

SECTION = MAPPING.target("auth0")
RULES = Auth0Rules(SECTION)


def planned(identity: Identity, acct: Account | None, link: Link | None) -> Plan:
    return planner.plan(identity, acct, link, SECTION, RULES, CAPABILITIES)


def remembered_after(identity: Identity, acct: Account | None, link: Link | None) -> tuple[Plan, Link]:
    """Plan the identity against ``acct`` and remember the result in the link, as the worker does."""
    p = planned(identity, acct, link)
    snapshot = planner.applied_after(
        identity, acct, p, SECTION, RULES, RULES.desired(identity),
        entitlements_read=identity.state is SourceState.ACTIVE,
    )  # fmt: skip
    assert snapshot is not None
    return p, dataclasses.replace(link or LINK, applied=snapshot)


def comparable(p: Plan) -> list[tuple[ActionKind, dict[str, Any], tuple[str, ...]]]:
    return [(a.kind, dict(a.payload), tuple(sorted(a.entitlements))) for a in p.actions]


@pytest.mark.parametrize(
    ("change", "groups"),
    [
        ({}, (STAFF,)),  # nothing mapped changed: nothing to do, no call
        ({"department": "Sales"}, (STAFF,)),
        ({"mail": "ada.new@contoso.example"}, (STAFF,)),
        ({"mail": "ADA.LOVELACE@contoso.example"}, (STAFF,)),  # Auth0 compares emails without case
        ({"department": None}, (STAFF,)),  # mapped to nothing: removed
        ({}, (STAFF, SALES)),  # a group change: roles only
        ({"displayName": "Ada L."}, (SUPPORT,)),  # roles taken back and given, and a name
    ],
)
def test_a_change_planned_from_the_link_is_the_plan_a_read_of_the_account_would_give(
    change: dict[str, Any], groups: tuple[str, ...]
) -> None:
    _, link = remembered_after(source(), account(), LINK)  # in sync: account() is what a read shows
    now = source(groups=groups, **change)
    known = planner.remembered(now, link, SECTION, RULES.desired(now))
    assert known is not None
    assert comparable(planned(now, known, link)) == comparable(planned(now, account(), link))


def test_a_block_or_an_unblock_is_never_decided_from_the_link() -> None:
    """An administrator may block or unblock an account by hand, unseen by the memory: a leaver (is
    the block ours? is one needed?), its replay and a returner (lift the block?) read the account."""
    _, link = remembered_after(source(), account(), LINK)
    leaver = source(SourceState.DISABLED)
    assert planner.remembered(leaver, link, SECTION, RULES.desired(leaver)) is None
    # What a read shows when an administrator blocked the account by hand: the block is not ours.
    by_admin = planned(leaver, account(blocked=True), link)
    start = by_admin.first(ActionKind.START_DEPROVISION)
    assert start is not None and start.payload == {"disabled_by_sync": False}
    assert not by_admin.has(ActionKind.DISABLE)
    for state in (DeprovisionState.PENDING, DeprovisionState.DONE):
        left = dataclasses.replace(link, deprovision=state, disabled_by_sync=True)
        assert planner.remembered(leaver, left, SECTION, RULES.desired(leaver)) is None  # a replay
        back = source()
        assert planner.remembered(back, left, SECTION, RULES.desired(back)) is None  # a restore


def test_a_revocation_an_interrupted_attempt_began_is_sent_again_for_a_leaver_and_not_for_a_returner() -> None:
    leaver = source(SourceState.DISABLED)
    done = dataclasses.replace(LINK, deprovision=DeprovisionState.DONE, disabled_by_sync=True)
    blocked = account(blocked=True)
    skip = planned(leaver, blocked, done)
    assert [a.kind for a in skip.actions] == [ActionKind.SKIP]  # "already disabled and revoked"
    earlier = planned(leaver, account(), LINK).actions  # what the killed attempt's intent holds
    again = planner.resend(skip, earlier, leaver, blocked)
    assert [a.kind for a in again.actions] == [ActionKind.REVOKE_SESSIONS, ActionKind.REVOKE_REFRESH_TOKENS]
    assert all("sent again" in a.reason for a in again.actions)
    pending = dataclasses.replace(done, deprovision=DeprovisionState.PENDING)
    finishing = planned(leaver, blocked, pending)  # revocations planned anyway: nothing added
    assert planner.resend(finishing, earlier, leaver, blocked) == finishing
    back = source()
    assert planner.resend(planned(back, blocked, done), earlier, back, blocked) == planned(back, blocked, done)
    assert planner.resend(skip, earlier, leaver, None) == skip  # nothing left to revoke


def test_a_joiner_is_remembered_as_created() -> None:
    joiner = source(groups=(STAFF, SALES))
    p, link = remembered_after(joiner, None, None)
    assert p.first(ActionKind.CREATE) is not None
    assert link.applied is not None
    assert link.applied.entitlements == frozenset({"Employee", "Sales Reader", "Sales Writer"})
    assert link.applied.active
    known = planner.remembered(joiner, link, SECTION, RULES.desired(joiner))
    assert known is not None and planned(joiner, known, link).actions == ()


def remembered_link(**changes: Any) -> Link:
    _, link = remembered_after(source(), account(), LINK)
    return dataclasses.replace(link, **changes)


@pytest.mark.parametrize(
    ("why", "link"),
    [
        ("no memory yet (a link from before, or a backfill's)", LINK),
        ("a deprovision under way", remembered_link(deprovision=DeprovisionState.PENDING)),
        ("a value the target refused", remembered_link(conflicts={"email": "taken@contoso.example"})),
        ("the risk response locked it", remembered_link(risk_locked=True)),
        ("the account is gone", remembered_link(target_deleted=True)),
    ],
)
def test_the_target_is_read_instead_where_the_memory_could_be_wrong(why: str, link: Link) -> None:
    now = source(department="Sales")
    assert planner.remembered(now, link, SECTION, RULES.desired(now)) is None, why


def test_a_mapping_that_maps_another_path_or_grants_other_roles_reads_the_target() -> None:
    link = remembered_link()
    assert link.applied is not None
    fewer = {p: v for p, v in link.applied.values.items() if p != "name"}
    other_paths = dataclasses.replace(link, applied=dataclasses.replace(link.applied, values=fewer))
    other_roles = dataclasses.replace(
        link, applied=dataclasses.replace(link.applied, managed=frozenset({"Employee"}))
    )  # fmt: skip
    unread = dataclasses.replace(link, applied=dataclasses.replace(link.applied, entitlements=None))
    now = source()
    for stale in (other_paths, other_roles, unread):
        assert planner.remembered(now, stale, SECTION, RULES.desired(now)) is None
