"""The mapping file: validation names file, entry and problem; transforms and scope are pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.mapping.load import load_mapping, parse_mapping
from shared.mapping.model import (
    AttributeMapping,
    Condition,
    MappingError,
    Scope,
    SyncMapping,
    TargetSection,
    Transform,
    read_path,
)

REPO = Path(__file__).resolve().parent.parent


def auth0(m: SyncMapping) -> TargetSection:
    """A version 1 file's one target."""
    return m.target("auth0")


MINIMAL = "version: 1\nattributes:\n  - {source: mail, target: email}\n"
G1, G2, G3 = (f"0000000{n}-1111-4222-8333-444444444444" for n in (1, 2, 3))


def problems(text: str) -> list[str]:
    with pytest.raises(MappingError) as info:
        parse_mapping(text, source="m.yaml")
    assert str(info.value).startswith("mapping file m.yaml is invalid")
    return info.value.problems


def test_the_shipped_example_is_valid_and_complete() -> None:
    m = load_mapping(REPO / "mapping.example.yaml")
    assert auth0(m).options.connection == "Username-Password-Authentication"
    assert m.scope.user_types == ("Member",)
    assert auth0(m).matching == ("link", "app_metadata", "enterprise_identity", "email")
    assert auth0(m).managed == {"Employee", "Sales Reader", "Sales Writer"}
    assert auth0(m).deprovision.action == "disable"
    select, manager = m.graph_select()
    assert manager is True
    assert {"id", "accountEnabled", "mail", "department", "companyName", "businessPhones"} <= set(select)
    assert "manager" not in select


def test_the_example_s_day_one_block_loads_once_uncommented() -> None:
    """The example shows the Auth0 day-one keys commented out; uncommented, they are a valid file
    with what the comments say (so the example cannot drift from the checker)."""
    lines = (REPO / "mapping.example.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("# Day one"))
    end = lines.index("", start)
    assert end - start > 5
    block = [line.replace("    # ", "    ", 1) for line in lines[start + 1 : end]]
    options = auth0(parse_mapping("\n".join(lines[:start] + block + lines[end:]))).options
    assert [(c.group[-2:], c.connection) for c in options.policy.connections] == [("d4", "entra")]
    assert [(m.organization, m.roles) for m in options.policy.organizations] == [("acme", ("Org Member",))]
    assert options.policy.flags[0].flags == {"mfa_required": True, "step_up": "high"}
    assert options.policy.mfa_enrollment_ticket is True
    assert options.policy.welcome["Username-Password-Authentication"].send == "password_change_ticket"
    assert options.welcome_mailbox == "welcome@contoso.com"
    assert options.baseline is not None and options.baseline.enforce is False
    assert options.baseline.connections["Username-Password-Authentication"]["password_policy"] == "good"


def test_defaults_for_a_minimal_file() -> None:
    m = parse_mapping(MINIMAL)
    assert auth0(m).deprovision.action == "disable"
    assert auth0(m).deprovision.revoke_sessions is True
    assert auth0(m).matching == ("link", "app_metadata", "email")  # no enterprise connection named
    assert auth0(m).grants == ()
    assert auth0(m).managed == frozenset()


def test_json_files_are_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "mapping.json"
    path.write_text('{"version": 1, "attributes": [{"source": "mail", "target": "email"}]}')
    assert auth0(load_mapping(path)).attributes[0].target == "email"


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"missing\.yaml is invalid"):
        load_mapping(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 3\n" + MINIMAL[11:], "version: must be 1 or 2, got 3"),
        ("version: 1\n", "attributes: must be a non-empty list"),
        (MINIMAL + "colour: blue\n", "colour: unknown section"),
        (
            "version: 1\nattributes:\n  - {source: mail, target: password}\n",
            "attributes[0].target: 'password' is not a writable Auth0 attribute",
        ),
        (
            "version: 1\nattributes:\n  - {source: mail, target: user_metadata.a.b}\n",
            "attributes[0].target: 'user_metadata.a.b': metadata targets are one key deep",
        ),
        (
            "version: 1\nattributes:\n  - {source: 'mail; drop', target: email}\n",
            "attributes[0].source: 'mail; drop' is not a Graph property path",
        ),
        (
            "version: 1\nattributes:\n  - {target: email}\n",
            "attributes[0]: needs a source",
        ),
        (
            "version: 1\nattributes:\n  - {source: mail, target: email, transforms: [shout]}\n",
            "attributes[0].transforms[0]: unknown transform 'shout'",
        ),
        (
            "version: 1\nattributes:\n  - {source: mail, target: email, transforms: [{lookup: {a: b}}]}\n",
            "attributes[0].transforms[0]: lookup takes {table:",
        ),
        (
            "version: 1\nattributes:\n  - {source: mail, target: email}\n  - {source: mailNickname, target: email}\n",
            "attributes[1].target: 'email' is already mapped by attributes[0]",
        ),
        (MINIMAL + "scope: {user_types: [Robot]}\n", "scope.user_types[0]: must be Member or Guest, got 'Robot'"),
        (
            MINIMAL + "scope: {conditions: [{attribute: department, operator: like, value: x}]}\n",
            "scope.conditions[0].operator: must be one of",
        ),
        (
            MINIMAL + "scope: {conditions: [{attribute: department, operator: in, value: x}]}\n",
            "scope.conditions[0].value: operator in needs a non-empty list",
        ),
        (
            MINIMAL + "scope: {conditions: [{attribute: department, operator: matches, value: '(x'}]}\n",
            "scope.conditions[0].value: is not a valid regular expression",
        ),
        (
            MINIMAL + "matching: {precedence: [link, guess]}\n",
            "matching.precedence[1]: must be one of link, app_metadata, enterprise_identity, email, got 'guess'",
        ),
        (
            MINIMAL + "matching: {precedence: [enterprise_identity]}\n",
            "matching.enterprise_connection: is required when precedence includes enterprise_identity",
        ),
        (MINIMAL + f"roles: [{{group: {G1}, roles: []}}]\n", "roles[0].roles: must name at least one Auth0 role"),
        (MINIMAL + "deprovision: {action: shred}\n", "deprovision.action: must be one of block, delete, got 'shred'"),
        (MINIMAL + "deprovision: {revoke_sessions: 'yes'}\n", "deprovision.revoke_sessions: must be true or false"),
        ("version: 1\nattributes: [\n", "is not valid YAML"),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
)
def test_each_error_names_the_entry_and_the_problem(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_all_problems_are_reported_together() -> None:
    found = problems("version: 3\nattributes: []\ndeprovision: {action: x}\n")
    assert len(found) == 3


@pytest.mark.parametrize(
    ("transforms", "value", "expected"),
    [
        ((Transform("lower"),), "Ada@Contoso.COM", "ada@contoso.com"),
        ((Transform("upper"),), "emea", "EMEA"),
        ((Transform("trim"),), "  Sales  ", "Sales"),
        ((Transform("trim"),), "   ", None),
        ((Transform("trim"), Transform("default", "n/a")), "   ", "n/a"),
        ((Transform("default", "n/a"),), None, "n/a"),
        ((Transform("default", "n/a"),), "Sales", "Sales"),
        ((Transform("lookup", {"DE": "EMEA"}, "Other"),), "DE", "EMEA"),
        ((Transform("lookup", {"DE": "EMEA"}, "Other"),), "US", "Other"),
        ((Transform("lookup", {"DE": "EMEA"}),), "US", "US"),
        ((Transform("lookup", {"DE": "EMEA"}, "Other"),), None, None),
        ((Transform("first"),), ["", "+49 1", "+49 2"], "+49 1"),
        ((Transform("first"),), [], None),
        ((Transform("join", " "),), ["Ada", None, "Lovelace"], "Ada Lovelace"),
        ((Transform("join", " "),), [None, ""], None),
        ((Transform("constant", True),), None, True),
        ((Transform("lower"),), None, None),
        ((Transform("lower"),), "Ünïcode ÄÖ", "ünïcode äö"),
    ],
)
def test_transforms(transforms: tuple[Transform, ...], value: Any, expected: Any) -> None:
    result = value
    for t in transforms:
        result = t.apply(result)
    assert result == expected


def test_multi_source_attribute_joins_in_order() -> None:
    m = AttributeMapping("name", ("givenName", "surname"), (Transform("join", " "),))
    assert m.value_from({"givenName": "Ada", "surname": "Lovelace"}) == "Ada Lovelace"
    assert m.value_from({"surname": "Lovelace"}) == "Lovelace"


def test_read_path_walks_nested_objects_and_tolerates_gaps() -> None:
    user = {"manager": {"id": "m1"}, "onPremisesExtensionAttributes": {"extensionAttribute1": "cc-42"}}
    assert read_path(user, "manager.id") == "m1"
    assert read_path(user, "onPremisesExtensionAttributes.extensionAttribute1") == "cc-42"
    assert read_path(user, "manager.mail") is None
    assert read_path({"manager": None}, "manager.id") is None


@pytest.mark.parametrize(
    ("condition", "user", "holds"),
    [
        (Condition("department", "equals", "sales"), {"department": "Sales"}, True),
        (Condition("department", "equals", "sales"), {"department": "Sales Ops"}, False),
        (Condition("department", "not_equals", "sales"), {}, True),
        (Condition("department", "in", ["Sales", "HR"]), {"department": "hr"}, True),
        (Condition("department", "not_in", ["Sales"]), {"department": "HR"}, True),
        (Condition("mail", "ends_with", "@contoso.com"), {"mail": "a@CONTOSO.com"}, True),
        (Condition("employeeId", "matches", r"E\d{4}"), {"employeeId": "E1234"}, True),
        (Condition("employeeId", "matches", r"E\d{4}"), {"employeeId": "E12345"}, False),
        (Condition("employeeId", "is_present"), {"employeeId": " "}, False),
        (Condition("employeeId", "is_absent"), {}, True),
        (Condition("accountEnabled", "is_true"), {"accountEnabled": True}, True),
        (Condition("accountEnabled", "is_false"), {"accountEnabled": True}, False),
        (Condition("department", "starts_with", "eng"), {"department": None}, False),
    ],
)
def test_scope_conditions(condition: Condition, user: dict[str, Any], holds: bool) -> None:
    assert condition.holds(user) is holds


def test_scope_combines_user_type_groups_and_conditions() -> None:
    scope = Scope(("Member",), ("g1", "g2"), (Condition("companyName", "equals", "Contoso"),))
    member = {"userType": "Member", "companyName": "Contoso"}
    assert scope.includes(member, frozenset({"g2", "g9"}))
    assert not scope.includes(member, frozenset({"g9"}))
    assert not scope.includes({**member, "userType": "Guest"}, frozenset({"g1"}))
    assert not scope.includes({**member, "companyName": "Fabrikam"}, frozenset({"g1"}))
    assert Scope().includes({"userType": "Member"}, frozenset())


def test_roles_are_many_to_many() -> None:
    m = parse_mapping(
        MINIMAL + f"roles:\n  - {{group: {G1}, roles: [A, B]}}\n  - {{group: {G2}, roles: [B]}}\n"
        f"  - {{group: {G3}, roles: [C]}}\n"
    )
    assert auth0(m).entitlements_for(frozenset({G1})) == {"A", "B"}
    assert auth0(m).entitlements_for(frozenset({G2, G3})) == {"B", "C"}
    assert auth0(m).entitlements_for(frozenset()) == frozenset()
    assert auth0(m).managed == {"A", "B", "C"}
    assert m.relevant_groups == {G1, G2, G3}


def test_naming_an_enterprise_connection_adds_its_matcher_by_default() -> None:
    m = parse_mapping(MINIMAL + "matching: {enterprise_connection: entra}\n")
    assert auth0(m).matching == ("link", "app_metadata", "enterprise_identity", "email")
    assert auth0(m).options.enterprise_connection == "entra"


def test_reconcile_and_risk_policies_default_safely() -> None:
    m = parse_mapping(MINIMAL)
    assert auth0(m).reconcile.remediate == ("missing", "attribute_mismatch", "role_mismatch")
    assert auth0(m).reconcile.max_deprovisions == 25
    assert m.risk.actions_for("high", "anything") == ("block", "revoke_sessions", "revoke_refresh_tokens", "notify")
    assert m.risk.actions_for("medium", "x") == ("revoke_sessions", "require_mfa", "notify")
    assert m.risk.actions_for("low", "x") == ("notify",)
    assert m.risk.restore_on == ()


def test_the_guard_holds_live_leavers_by_its_own_limits_not_the_nightly_breakers() -> None:
    strict_nights = parse_mapping(MINIMAL + "reconcile: {max_deprovisions: 3, max_deprovision_share: 0.01}\n")
    guard = auth0(strict_nights).guard
    assert (guard.max_deprovisions, guard.max_deprovision_share, guard.min_changes_for_share) == (100, 0.2, 10)
    assert guard.configured == frozenset()  # nothing written: start-up warns
    written = auth0(parse_mapping(MINIMAL + "guard: {max_deprovisions: 7, min_changes_for_share: 3}\n")).guard
    assert (written.max_deprovisions, written.min_changes_for_share) == (7, 3)
    assert written.configured == {"max_deprovisions", "min_changes_for_share"}
    example = auth0(load_mapping(REPO / "mapping.example.yaml")).guard
    assert example.configured >= {"max_deprovisions", "max_deprovision_share", "min_changes_for_share"}


def test_the_example_risk_rules_put_event_types_before_levels() -> None:
    m = load_mapping(REPO / "mapping.example.yaml")
    assert m.risk.actions_for("low", "leakedCredentials")[0] == "block"
    assert m.risk.actions_for("low", "unfamiliarFeatures") == ("notify",)
    assert "orphaned" in auth0(m).reconcile.remediate


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("reconcile: {remediate: [ambiguous]}", "reconcile.remediate[0]: ambiguous drift is never repaired"),
        ("reconcile: {remediate: [everything]}", "reconcile.remediate[0]: must be one of"),
        ("reconcile: {max_deprovision_share: 2}", "reconcile.max_deprovision_share: must be a number from 0 to 1"),
        ("risk: {rules: [{level: severe, actions: [block]}]}", "risk.rules[0].level: must be one of low, medium, high"),
        ("risk: {rules: [{level: high, actions: [shred]}]}", "risk.rules[0].actions[0]: must be one of"),
        ("risk: {restore_on: [forgiven]}", "risk.restore_on[0]: must be dismissed, remediated or confirmedSafe"),
    ],
)
def test_policy_errors_name_the_entry(section: str, expected: str) -> None:
    found = problems(MINIMAL + section + "\n")
    assert any(p.startswith(expected) for p in found), found


# ------------------------------------------------------------------------------------------------
# Graph sources are checked against the v1.0 user properties; groups are object ids
# ------------------------------------------------------------------------------------------------


def with_attribute(source: str) -> str:
    return f"version: 1\nattributes:\n  - {{source: mail, target: email}}\n  - {{source: {source}, target: name}}\n"


def test_a_misspelt_property_is_refused_naming_the_file_the_entry_and_the_nearest_property() -> None:
    with pytest.raises(MappingError) as info:
        parse_mapping(with_attribute("departmnet"), source="mapping.yaml")
    message = str(info.value)
    assert message.startswith("mapping file mapping.yaml is invalid (1 problem(s))")
    assert (
        "attributes[1].source: 'departmnet' is not a Microsoft Graph v1.0 user property; did you mean 'department'?"
    ) in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Department", "'Department' is not a Microsoft Graph v1.0 user property; did you mean 'department'?"),
        ("jobtitle", "did you mean 'jobTitle'?"),
        ("shoeSize", "'shoeSize' is not a Microsoft Graph v1.0 user property (see the user resource"),
        ("employeeOrgData.costCentre", "'employeeOrgData' has no property 'costCentre'; did you mean "
         "'employeeOrgData.costCenter'?"),
        ("onPremisesExtensionAttributes.customAttribute1", "'onPremisesExtensionAttributes' has no property "
         "'customAttribute1'; did you mean 'onPremisesExtensionAttributes.extensionAttribute1'?"),
        ("onPremisesExtensionAttributes.extensionAttribute1.x", "'onPremisesExtensionAttributes.extensionAttribute1' "
         "is a single value: it has no property 'x'"),
        ("manager", "'manager' is an object: name one of its properties (id, displayName, mail, userPrincipalName)"),
        ("manager.mial", "'manager' has no property 'mial'; did you mean 'manager.mail'?"),
        ("manager.department", "'manager' has no property 'department'; entra-sync reads these of a manager: "
         "displayName, id, mail, userPrincipalName"),
        ("department.name", "'department' is a single value (or a list of values): it has no property 'name'"),
        ("identities.issuer", "'identities' is a list of objects: a path into it reads nothing"),
        ("birthday", "'birthday' cannot be read for a list of users (Graph answers 501 Not Implemented)"),
        ("extension_b7d8e_costCenter", "'extension_b7d8e_costCenter' is not a directory extension property name, "
         "which has the form extension_<application (client) id without dashes, 32 hex digits>_<name>"),
        ("extension_0123456789abcdef0123456789abcdef_costCenter.code", "a directory extension holds a value"),
    ],
)  # fmt: skip
def test_an_unreadable_source_path_says_what_is_wrong(source: str, expected: str) -> None:
    found = problems(with_attribute(source))
    assert len(found) == 1, found
    assert found[0].startswith("attributes[1].source: ")
    assert expected in found[0]


@pytest.mark.parametrize(
    "source",
    [
        "department",
        "employeeOrgData.costCenter",
        "employeeOrgData.division",
        "onPremisesExtensionAttributes.extensionAttribute15",
        "onPremisesSamAccountName",
        "employeeHireDate",
        "employeeType",
        "otherMails",
        "proxyAddresses",
        "usageLocation",
        "preferredLanguage",
        "identities",
        "manager.userPrincipalName",
        "extension_0123456789abcdef0123456789ABCDEF_costCenter",
        "customSecurityAttributes.Engineering.ProjectDate",
    ],
)
def test_documented_properties_and_extension_forms_are_accepted(source: str) -> None:
    mapping = parse_mapping(with_attribute(source))
    assert auth0(mapping).attributes[1].sources == (source,)


def test_each_source_of_a_multi_source_attribute_is_checked() -> None:
    found = problems("version: 1\nattributes:\n  - {source: [givenName, surnmae], target: name}\n")
    assert found == [
        "attributes[0].source[1]: 'surnmae' is not a Microsoft Graph v1.0 user property; did you mean 'surname'?"
    ]


def test_scope_condition_attributes_are_checked_like_sources() -> None:
    found = problems(MINIMAL + "scope: {conditions: [{attribute: companyNmae, operator: equals, value: Contoso}]}\n")
    assert found == [
        "scope.conditions[0].attribute: 'companyNmae' is not a Microsoft Graph v1.0 user property; did you mean "
        "'companyName'?"
    ]


def test_the_select_list_reads_nested_and_extension_properties_by_their_top_level_name() -> None:
    m = parse_mapping(
        "version: 1\nattributes:\n  - {source: mail, target: email}\n"
        "  - {source: employeeOrgData.costCenter, target: app_metadata.cost_center}\n"
        "  - {source: extension_0123456789abcdef0123456789abcdef_badge, target: app_metadata.badge}\n"
    )
    select, manager = m.graph_select()
    assert {"employeeOrgData", "extension_0123456789abcdef0123456789abcdef_badge"} <= set(select)
    assert manager is False


@pytest.mark.parametrize(
    ("section", "entry"),
    [
        ("roles: [{group: Sales Team, roles: [Sales Reader]}]", "roles[0].group"),
        (f"roles: [{{group: {G1}, roles: [A]}}, {{group: All Staff, roles: [B]}}]", "roles[1].group"),
        ("scope: {groups: [All Staff]}", "scope.groups[0]"),
        (f"scope: {{groups: ['{{{G1}}}']}}", "scope.groups[0]"),  # braces: not the form Graph writes
        (f"scope: {{groups: [{G1}-extra]}}", "scope.groups[0]"),
        (f"scope: {{groups: [{G1[:-1]}]}}", "scope.groups[0]"),
    ],
)
def test_a_group_that_is_not_an_object_id_is_refused_naming_the_entry(section: str, entry: str) -> None:
    found = problems(MINIMAL + section + "\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"{entry}: ")
    assert "is not a group object id: use the group's object id" in found[0]


def test_group_ids_are_kept_in_lower_case_as_graph_writes_them() -> None:
    upper = "ABCDEF01-1111-4222-8333-44444444444A"
    m = parse_mapping(MINIMAL + f"scope: {{groups: [{upper}]}}\nroles: [{{group: {upper}, roles: [A]}}]\n")
    assert m.scope.groups == (upper.lower(),)
    assert auth0(m).entitlements_for(frozenset({upper.lower()})) == {"A"}


def test_group_entries_name_every_place_a_group_appears_in_file_order() -> None:
    m = parse_mapping(
        MINIMAL
        + f"scope: {{groups: [{G3}]}}\nroles:\n  - {{group: {G1}, roles: [A]}}\n  - {{group: {G3}, roles: [B]}}\n"
    )
    assert m.group_entries() == [("scope.groups[0]", G3), ("roles[0].group", G1), ("roles[1].group", G3)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nattributes:\n  - {source: mail, target: email}\n  - {}\n", "attributes[1].target: must be"),
        (MINIMAL + "roles: [{}]\n", "roles[0].group: must be a non-empty string"),
    ],
)
def test_an_empty_entry_is_an_error_not_skipped(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_the_sandbox_mappings_stay_valid() -> None:
    from sandbox.mapping import sandbox_mapping, three_role_grants

    groups = [G1, G2, G3]
    plain = parse_mapping(sandbox_mapping(three_role_grants(groups)))
    assert plain.relevant_groups == set(groups)
    scoped = parse_mapping(
        sandbox_mapping(three_role_grants(groups), scope=f"{{groups: [{G1}]}}", department_default="X")
    )
    assert scoped.scope.groups == (G1,)


# -- version 2: a shared scope and named targets ------------------------------------------------------

V2 = f"""\
version: 2
scope: {{user_types: [Member]}}
targets:
  auth0:
    connection: Username-Password-Authentication
    attributes:
      - {{source: mail, target: email, transforms: [trim, lower]}}
      - {{source: department, target: user_metadata.department}}
    roles:
      - {{group: {G1}, roles: [Employee]}}
    deprovision: {{action: block}}
  memory:crm:
    attributes:
      - {{source: mail, target: email}}
      - {{source: officeLocation, target: office}}
    groups:
      - {{group: {G2}, groups: [sales]}}
    scope: {{groups: [{G3}]}}
    deprovision: {{action: delete}}
"""


def memory_kinds() -> Any:
    from sandbox.memory import kinds_with_memory

    return kinds_with_memory()


def v2_problems(text: str) -> list[str]:
    with pytest.raises(MappingError) as info:
        parse_mapping(text, source="m.yaml", kinds=memory_kinds())
    return info.value.problems


def test_a_version_2_file_loads_every_named_target_with_its_own_sections() -> None:
    m = parse_mapping(V2, kinds=memory_kinds())
    assert m.version == 2 and list(m.targets) == ["auth0", "memory:crm"]
    auth0_section, crm = m.target("auth0"), m.target("memory:crm")
    assert (auth0_section.kind, crm.kind) == ("auth0", "memory")
    assert [a.target for a in crm.attributes] == ["email", "office"]
    assert crm.deprovision.action == "delete" and auth0_section.deprovision.action == "disable"  # Auth0 calls it block
    assert crm.scope is not None and crm.scope.groups == (G3,)
    # Every target's groups are watched, and every target's sources are read from Graph.
    assert m.relevant_groups == {G1, G2, G3}
    select, _ = m.graph_select()
    assert {"mail", "department", "officeLocation"} <= set(select)


def test_a_version_1_file_is_the_auth0_target_of_its_version_2_conversion() -> None:
    v1 = (
        "version: 1\ntarget: {connection: Username-Password-Authentication}\n"
        "attributes:\n  - {source: mail, target: email}\n"
        f"roles:\n  - {{group: {G1}, roles: [Employee]}}\ndeprovision: {{action: block}}\n"
    )
    v2 = (
        "version: 2\ntargets:\n  auth0:\n    connection: Username-Password-Authentication\n"
        "    attributes:\n      - {source: mail, target: email}\n"
        f"    roles:\n      - {{group: {G1}, roles: [Employee]}}\n    deprovision: {{action: block}}\n"
    )
    old, new = parse_mapping(v1).target("auth0"), parse_mapping(v2).target("auth0")
    assert old.where == "" and new.where == "targets.auth0."  # errors name the entry where it is
    same = ("kind", "attributes", "grants", "matching", "deprovision", "reconcile", "guard", "options")
    assert all(getattr(old, f) == getattr(new, f) for f in same)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("target: email, transforms: [trim, lower]", "target: nickname.x"), "targets.auth0.attributes[0].target:"),
        (("[sales]", "[]"), "targets.memory:crm.groups[0].groups:"),
        (
            ("memory:crm:", "ldap:crm:"),
            "targets.ldap:crm.kind: 'ldap' is not a target kind (one of: auth0, memory, salesforce, scim)",
        ),
        (("memory:crm:", "Memory:CRM:"), "targets.Memory:CRM: a target name is a kind and an optional name"),
        (("    scope: {groups", "    kind: auth0\n    scope: {groups"), "targets.memory:crm.kind: 'auth0' differs"),
        (("deprovision: {action: delete}", "deprovision: {action: explode}"), "targets.memory:crm.deprovision.action:"),
        (("    connection:", "    colour: blue\n    connection:"), "targets.auth0.colour: unknown key"),
        (("version: 2\n", "version: 2\nroles: []\n"), "roles: unknown section"),
    ],
)
def test_version_2_errors_name_the_target_and_the_entry(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in V2
    found = v2_problems(V2.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize("targets", ["targets:\n", "targets: {}\n", ""])
def test_a_version_2_file_without_targets_is_refused(targets: str) -> None:
    found = v2_problems(f"version: 2\nscope: {{user_types: [Member]}}\n{targets}")
    assert any(p.startswith("targets: a version 2 file names at least one target") for p in found), found


def test_every_problem_of_every_target_is_reported_at_once() -> None:
    text = V2.replace("target: office", "target: ''").replace("roles: [Employee]", "roles: []")
    found = v2_problems(text)
    assert any(p.startswith("targets.memory:crm.attributes[1].target") for p in found), found
    assert any(p.startswith("targets.auth0.roles[0].roles") for p in found), found


def test_an_inbound_source_s_paths_are_checked_with_the_nearest_scim_path_as_the_hint() -> None:
    text = """version: 2
sources: {hr-push: {kind: scim_inbox}}
targets:
  auth0:
    source: hr-push
    connection: Username-Password-Authentication
    attributes:
      - {source: emails.work, target: email}
      - {source: Departmnt, target: app_metadata.department}
    deprovision: {action: block}
"""
    with pytest.raises(MappingError) as refused:
        parse_mapping(text)
    assert refused.value.problems == [
        "targets.auth0.attributes[1].source: Inbound SCIM source: 'Departmnt' is not a SCIM user attribute "
        "an inbound source keeps (did you mean 'department'?)"
    ]


def test_two_auth0_targets_of_one_tenant_may_not_stamp_accounts_with_the_same_key() -> None:
    two = """\
version: 2
targets:
  auth0:
    attributes: [{source: mail, target: email}]
  auth0:hr:
    attributes: [{source: mail, target: email}]
"""
    assert v2_problems(two) == [
        "targets.auth0:hr.matching.app_metadata_key: auth0 and auth0:hr would both stamp accounts of one Auth0 "
        "tenant with app_metadata.entra_object_id: each would take the other's accounts for orphans; give each "
        "its own key"
    ]
    own = two.replace(
        "  auth0:hr:\n    attributes:", "  auth0:hr:\n    matching: {app_metadata_key: hr_id}\n    attributes:"
    )
    assert list(parse_mapping(own, kinds=memory_kinds()).targets) == ["auth0", "auth0:hr"]
