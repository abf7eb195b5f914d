"""The Auth0 section's per-user policy: the connection, organizations, flags and welcome a joiner
gets from their groups, as the file says and as the planner sees them."""

from __future__ import annotations

import pytest

from shared.core import plan as planner
from shared.core.model import Account, ActionKind, Identity, SourceState
from shared.mapping.load import parse_mapping
from shared.mapping.model import MappingError, TargetSection
from shared.targets.auth0.kind import CAPABILITIES
from shared.targets.auth0.policy import ORGANIZATIONS
from shared.targets.auth0.rules import WELCOME_PATH, Auth0Rules

G1, G2, G3 = (f"0000000{n}-1111-4222-8333-444444444444" for n in (1, 2, 3))
POLICY = f"""version: 2
targets:
  auth0:
    connection: Username-Password-Authentication
    connections:
      - {{group: {G1}, connection: entra}}
    organizations:
      - {{group: {G2}, organization: acme, roles: [Org Member]}}
      - {{group: {G3}, organization: acme, roles: [Org Admin]}}
    policy:
      - {{group: {G2}, mfa_required: true, step_up: high}}
      - {{group: {G3}, mfa_required: false, allowed_connections: [entra]}}
    welcome:
      Username-Password-Authentication:
        {{send: password_change_ticket, result_url: 'https://app.example/hi', ttl_s: 3600}}
      entra: {{send: none}}
    matching: {{enterprise_connection: entra}}
    attributes:
      - {{source: mail, target: email}}
"""


def section(text: str = POLICY) -> TargetSection:
    return parse_mapping(text, source="m.yaml").target("auth0")


def person(*groups: str) -> Identity:
    return Identity("oid-1", SourceState.ACTIVE, {"mail": "ada@example.com"}, frozenset(groups), source="entra")


def test_groups_choose_the_connection_and_members_of_the_enterprise_connection_get_no_database_account() -> None:
    rules = Auth0Rules(section())
    payload = rules.create_payload(person(G2), rules.desired(person(G2)))
    assert isinstance(payload, dict) and payload["connection"] == "Username-Password-Authentication"
    sso = rules.create_payload(person(G1, G2), rules.desired(person(G1, G2)))
    assert isinstance(sso, str) and "enterprise connection entra" in sso and "first sign-in" in sso
    assert section().groups >= {G1, G2, G3}  # the policy's groups are read for every identity


def test_flags_come_from_the_first_entry_that_sets_them_and_a_flag_no_group_gives_is_removed() -> None:
    rules = Auth0Rules(section())
    both = rules.desired(person(G3, G2))
    assert both["app_metadata.mfa_required"] is True  # G2's entry comes first in the file
    assert both["app_metadata.step_up"] == "high"
    assert both["app_metadata.allowed_connections"] == ["entra"]
    nothing = rules.desired(person())
    flags = {k: v for k, v in nothing.items() if k.startswith("app_metadata.") and k != "app_metadata.entra_object_id"}
    assert flags == {
        "app_metadata.mfa_required": None, "app_metadata.step_up": None, "app_metadata.allowed_connections": None,
        WELCOME_PATH: "sent",
    }  # fmt: skip
    account = Account("auth0|oid-1", {"app_metadata": {"mfa_required": True, "theme": "dark"}}, owner="oid-1")
    update = planner.plan(person(), account, None, section(), rules, CAPABILITIES).first(ActionKind.UPDATE)
    assert update is not None
    assert update.payload["app_metadata"]["mfa_required"] is None  # removed: no group gives it now
    assert "theme" not in update.payload["app_metadata"]  # a flag no entry names is never touched


def test_organizations_and_their_roles_follow_the_groups() -> None:
    rules = Auth0Rules(section())
    assert rules.desired(person(G2, G3))[ORGANIZATIONS] == {"acme": ["Org Admin", "Org Member"]}
    assert rules.desired(person(G1))[ORGANIZATIONS] == {}
    account = Account("auth0|oid-1", {ORGANIZATIONS: {"acme": ["Org Member"]}}, owner="oid-1")
    update = planner.plan(person(G3), account, None, section(), rules, CAPABILITIES).first(ActionKind.UPDATE)
    assert update is not None and update.diff[ORGANIZATIONS] == ({"acme": ["Org Member"]}, {"acme": ["Org Admin"]})


def test_a_joiner_is_created_with_the_welcome_pending_and_an_old_account_is_never_welcomed() -> None:
    rules = Auth0Rules(section())
    payload = rules.create_payload(person(G2), rules.desired(person(G2)))
    assert isinstance(payload, dict) and payload["app_metadata"]["entra_welcome"] == "pending"
    assert rules.same(WELCOME_PATH, "sent", None)  # linked, or from before the welcome: left alone
    assert rules.same(WELCOME_PATH, "sent", "sent")
    assert not rules.same(WELCOME_PATH, "sent", "pending")  # a joiner whose welcome did not go out yet


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("connections: [{group: G, connection: ''}]", "targets.auth0.connections[0].connection: must be a non-empty"),
        ("policy: [{group: G}]", "targets.auth0.policy[0]: sets no flag"),
        ("policy: [{group: G, mfa_required: maybe}]", "targets.auth0.policy[0].mfa_required: must be true or false"),
        ("welcome: {x: {send: carrier-pigeon}}", "targets.auth0.welcome.x.send: must be one of"),
        ("welcome: {x: {send: password_change_ticket, result_url: 'http://a'}}", "must be an https:// URL"),
        ("welcome: {x: {send: none, ttl_s: 60}}", "result_url and ttl_s belong to send: password_change_ticket"),
        ("welcome: {entra: {send: verification_email}}", "targets.auth0.welcome.entra: its members sign in through"),
        ("organizations: [{group: G, roles: [a]}]", "targets.auth0.organizations[0].organization: must be"),
    ],
)
def test_each_mistake_names_its_entry(entry: str, expected: str) -> None:
    text = (
        "version: 2\ntargets:\n  auth0:\n    matching: {enterprise_connection: entra}\n"
        f"    {entry.replace('G', G1) if 'group: G' in entry else entry}\n"
        "    attributes:\n      - {source: mail, target: email}\n"
    )
    with pytest.raises(MappingError) as info:
        parse_mapping(text, source="m.yaml")
    assert any(expected in p for p in info.value.problems), info.value.problems
