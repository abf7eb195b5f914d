"""The Salesforce target's rules without an org: the mapping section (errors that name the entry),
the username template and its suffix rule, the alias, locale defaults, the profile and role
tables' precedence, matching keys, SOQL quoting and the settings the kind needs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.core.model import Account, Identity, SourceState
from shared.mapping.load import parse_mapping
from shared.mapping.model import MappingError, TargetSection
from shared.settings import Settings, SettingsError
from shared.targets.registry import check_settings, target_title
from shared.targets.salesforce import soql
from shared.targets.salesforce.client import ApiError, first_error
from shared.targets.salesforce.leaver import blocker
from shared.targets.salesforce.rules import SalesforceRules, alias_of, same_username, suffixed
from tests.support import sandbox_env

SALES, MANAGERS, WEST = (
    "00000001-1111-4222-8333-444444444444",
    "00000002-1111-4222-8333-444444444444",
    "00000003-1111-4222-8333-444444444444",
)
ADA = "0000000a-aaaa-4bbb-8ccc-dddddddddddd"

GOOD = f"""\
    username_template: '{{Email}}.acme'
    locale: {{TimeZoneSidKey: Europe/Paris, LanguageLocaleKey: fr}}
    attributes:
      - {{source: mail, target: Email, transforms: [trim, lower]}}
      - {{source: givenName, target: FirstName}}
      - {{source: surname, target: LastName}}
      - {{source: employeeId, target: EmployeeNumber}}
      - {{source: preferredLanguage, target: LocaleSidKey}}
    profiles:
      - {{group: {MANAGERS}, profile: Sales Manager}}
      - {{group: {SALES}, job_title: [Account Executive, AE], profile: Sales AE}}
      - {{group: {SALES}, profile: Sales User}}
    default_profile: Standard User
    roles:
      - {{group: {WEST}, department: Sales West, role: West Sales Rep}}
    permission_sets:
      - {{group: {SALES}, permission_sets: [Sales_Cloud_User, 'group:Sales_Ops']}}
      - {{group: {MANAGERS}, permission_sets: [Sales_Cloud_User, Forecasts]}}
      - {{group: {SALES}, department: [Sales West], job_title: AE, permission_sets: [West_AE]}}
"""


def mapping(body: str, name: str = "salesforce") -> str:
    return f"version: 2\ntargets:\n  {name}:\n{body}"


def section(body: str = GOOD, name: str = "salesforce") -> TargetSection:
    return parse_mapping(mapping(body, name)).targets[name]


def problems(body: str) -> list[str]:
    with pytest.raises(MappingError) as info:
        parse_mapping(mapping(body), source="m.yaml")
    return info.value.problems


def person(groups: set[str] = frozenset(), **attributes: str) -> Identity:  # type: ignore[assignment]
    base = {"mail": " Zoë.OBrien@Contoso.example ", "givenName": "Zoë", "surname": "O'Brien", "employeeId": "E42"}
    return Identity(ADA, SourceState.ACTIVE, {**base, **attributes}, frozenset(groups), source="entra")


def test_a_joiner_gets_the_templated_username_a_short_alias_the_locale_and_the_owner_stamp() -> None:
    rules = SalesforceRules(section())
    want = rules.desired(person())
    assert want["Username"] == "zoë.obrien@contoso.example.acme".replace("ë", "e")  # folded to ASCII, lower case
    assert want["Alias"] == "zobrien" and len(want["Alias"]) <= 8
    assert want["FederationIdentifier"] == ADA
    assert (want["TimeZoneSidKey"], want["LanguageLocaleKey"]) == ("Europe/Paris", "fr")  # the section's
    assert (want["EmailEncodingKey"], want["LocaleSidKey"]) == ("UTF-8", "en_US")  # defaults
    assert rules.desired(person(preferredLanguage="de_DE"))["LocaleSidKey"] == "de_DE"  # mapped wins
    payload = rules.create_payload(person(), want)
    assert isinstance(payload, dict)
    assert payload["IsActive"] is True and payload["Profile"] == "Standard User"
    other = rules.create_payload(person(), want)
    assert isinstance(other, dict) and other["CommunityNickname"].startswith("zoe.obrien.")


def test_the_alias_is_at_most_eight_letters_or_digits() -> None:
    assert alias_of("Maximiliane", "Vanderbergenhausen", None) == "mvanderb"
    assert alias_of(None, None, "x.y@z") == "xy"
    assert alias_of("", "  ", "") is None


def test_profile_and_role_follow_the_first_entry_that_applies() -> None:
    rules = SalesforceRules(section())
    assert rules.desired(person({SALES}))["Profile"] == "Sales User"
    assert rules.desired(person({SALES}, jobTitle="ae"))["Profile"] == "Sales AE"  # the condition, without case
    assert rules.desired(person({SALES, MANAGERS}, jobTitle="AE"))["Profile"] == "Sales Manager"  # earlier entry
    assert rules.desired(person())["Profile"] == "Standard User"  # the default
    assert rules.desired(person({WEST}))["UserRole"] is None  # its department condition does not hold
    assert rules.desired(person({WEST}, department="Sales West"))["UserRole"] == "West Sales Rep"
    assert rules.removes_unmapped("UserRole") and not rules.removes_unmapped("Profile")


def test_the_tables_groups_and_conditions_are_read_from_the_source() -> None:
    s = section()
    assert {SALES, MANAGERS, WEST} <= s.groups  # membership of the profile/role groups matters
    loaded = parse_mapping(mapping(GOOD))
    select, _ = loaded.graph_select()
    assert {"jobTitle", "department"} <= set(select)
    assert ("targets.salesforce.roles[0].group", WEST) in loaded.group_entries()
    assert s.managed == frozenset({"Sales_Cloud_User", "group:Sales_Ops", "Forecasts", "West_AE"})


def test_a_permission_set_entry_may_name_a_department_and_job_title_too() -> None:
    s = section()
    plain = {"Sales_Cloud_User", "group:Sales_Ops"}
    assert s.entitlements_for(frozenset({SALES}), {"department": "sales west", "jobTitle": "AE"}) == plain | {"West_AE"}
    assert s.entitlements_for(frozenset({SALES}), {"department": "Sales West", "jobTitle": "Seller"}) == plain
    assert s.entitlements_for(frozenset({WEST}), {"department": "Sales West", "jobTitle": "AE"}) == frozenset()
    auth0 = "version: 2\ntargets:\n  auth0:\n    attributes: [{source: mail, target: email}]\n"
    with pytest.raises(MappingError) as info:  # grants by group alone there: the key is refused, not ignored
        parse_mapping(auth0 + f"    roles: [{{group: {SALES}, department: Sales, roles: [Seller]}}]\n")
    assert any("roles[0]" in p and "department" in p for p in info.value.problems), info.value.problems


def test_the_suffix_rule_keeps_a_username_the_templates_own() -> None:
    assert suffixed("jane.doe@acme.com", 2) == "jane.doe.2@acme.com"
    assert same_username("jane.doe@acme.com", "Jane.Doe.3@ACME.com")
    assert not same_username("jane.doe@acme.com", "jane.doe.10@acme.com")
    assert not same_username("jane.doe@acme.com", "jane.doe2@acme.com")
    rules = SalesforceRules(section())
    assert rules.same("Email", "a@b.example", "A@B.example")
    assert not rules.same("Title", "Rep", "rep")


def test_matching_keys_and_what_an_account_is_found_by() -> None:
    rules = SalesforceRules(section())
    want = rules.desired(person())
    keys = {m: rules.match_key(m, person(), want) for m in ("federation_id", "employee_number", "email", "username")}
    assert keys == {
        "federation_id": ADA,
        "employee_number": "E42",
        "email": "zoë.obrien@contoso.example",
        "username": "zoe.obrien@contoso.example.acme",
    }
    account = rules.account(
        {"Id": "005000000000001AAA", "FederationIdentifier": ADA.upper(), "Email": "Zoë.OBrien@contoso.example",
         "Username": "zoe.obrien@contoso.example.acme", "EmployeeNumber": "E42", "IsActive": True}
    )  # fmt: skip
    assert account.owner == ADA
    assert {m: list(k) for m, k in rules.keys_of(account).items()} == {m: [k] for m, k in keys.items()}
    hand_made = rules.account({"Id": "005000000000002AAA", "FederationIdentifier": "zoe@contoso.example"})
    assert hand_made.owner is None  # a UPN in the field is nobody's stamp: the account can be adopted
    assert isinstance(hand_made, Account) and hand_made.active is False


def test_a_joiner_without_what_salesforce_needs_is_skipped_with_the_reason() -> None:
    rules = SalesforceRules(section(GOOD.replace("    default_profile: Standard User\n", "")))
    assert "no profile" in str(rules.create_payload(person(), rules.desired(person())))
    no_mail = person(mail="")
    assert "Username" in str(rules.create_payload(no_mail, rules.desired(no_mail)))


@pytest.mark.parametrize(
    ("body", "entry", "says"),
    [
        (GOOD.replace("'{Email}.acme'", "'{Mail}@acme'"), "username_template", "not mapped: Mail"),
        (GOOD.replace("'{Email}.acme'", "acme"), "username_template", "none named"),
        (GOOD + "    settings_prefix: salesforce_eu\n", "settings_prefix", "SALESFORCE_<NAME>"),
        (GOOD + "    owner_field: Entra Id\n", "owner_field", "custom field"),
        (GOOD.replace("target: EmployeeNumber", "target: Username"), "attributes[3].target", "username_template"),
        (GOOD.replace("target: EmployeeNumber", "target: Profile"), "attributes[3].target", "profiles"),
        (GOOD.replace("target: EmployeeNumber", "target: Nope"), "attributes[3].target", "custom field"),
        (GOOD.replace("Forecasts", "'Fore casts'"), "permission_sets[1].permission_sets[1]", "API name"),
        (GOOD.replace("profile: Sales User", "role: Sales User"), "profiles[2]", "unknown key"),
        (GOOD + "    reassign: {objects: [Task]}\n", "reassign.objects[0]", "Opportunity"),
        (GOOD + "    reassign: {to: [queue]}\n", "reassign.queue", "required"),
        (GOOD + "    deprovision: {hard_delete: delete}\n", "deprovision.hard_delete", "cannot be deleted"),
    ],
)
def test_a_bad_section_names_the_entry(body: str, entry: str, says: str) -> None:
    found = [p for p in problems(body) if p.startswith(f"targets.salesforce.{entry}")]
    assert found and says in found[0], problems(body)


def test_a_named_org_is_its_own_target_with_its_own_settings() -> None:
    s = section(GOOD + "    settings_prefix: SALESFORCE_EU\n", name="salesforce:eu")
    assert (s.kind, target_title("salesforce:eu")) == ("salesforce", "Salesforce eu")
    env = sandbox_env(storage="UseDevelopmentStorage=true")
    with pytest.raises(SettingsError) as info:
        check_settings(Settings.from_env(env), [s])
    text = str(info.value)
    assert all(f"SALESFORCE_EU_{name} is required" in text for name in ("INSTANCE_URL", "CLIENT_ID", "CLIENT_SECRET"))
    vault = "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/sf)"
    env |= {"SALESFORCE_EU_INSTANCE_URL": "https://acme.my.salesforce.com", "SALESFORCE_EU_CLIENT_ID": "id"}
    with pytest.raises(SettingsError, match="SALESFORCE_EU_CLIENT_SECRET is an unresolved Key Vault reference"):
        check_settings(Settings.from_env(env | {"SALESFORCE_EU_CLIENT_SECRET": vault}), [s])
    check_settings(Settings.from_env(env | {"SALESFORCE_EU_CLIENT_SECRET": "s3cret-value-here"}), [s])


def test_a_hostile_value_stays_data_in_soql() -> None:
    hostile = "x' OR Username != '\\"
    where = soql.eq("Email", hostile)
    assert where == "Email = 'x\\' OR Username != \\'\\\\'"
    # Read back as SOQL reads a string literal, it is exactly the value: one literal, no operator outside it.
    body = where.removeprefix("Email = ")
    assert body.startswith("'") and body.endswith("'")
    inner, out, i = body[1:-1], [], 0
    while i < len(inner):
        if inner[i] == "\\":
            out.append(inner[i + 1])
            i += 2
        else:
            assert inner[i] != "'", "an unescaped quote would end the literal"
            out.append(inner[i])
            i += 1
    assert "".join(out) == hostile
    assert soql.within("Id", ["a'b", "c"]) == "Id IN ('a\\'b', 'c')"
    with pytest.raises(Exception, match="not a Salesforce record id"):
        soql.record_id("005/../../sobjects")


def test_errors_and_deactivation_blockers_are_named() -> None:
    assert first_error([{"errorCode": "DUPLICATE_USERNAME", "message": "dup", "fields": ["Username"]}]) == (
        "DUPLICATE_USERNAME", "dup", ("Username",)
    )  # fmt: skip
    default_owner = ApiError("FIELD_INTEGRITY_EXCEPTION", "This user is the default lead owner. Cannot deactivate")
    assert blocker(default_owner).startswith("default owner")
    assert blocker(ApiError("FIELD_INTEGRITY_EXCEPTION", "user is a workflow email alert recipient")).startswith(
        "workflow"
    )
    assert "hierarchy" in blocker(ApiError("FIELD_INTEGRITY_EXCEPTION", "custom hierarchy field Approver__c"))


def test_gathered_records_go_two_hundred_a_call_and_a_lost_lease_stops_its_record_alone() -> None:
    from shared.errors import LeaseLost
    from shared.targets.salesforce.gather import Gatherer
    from tests.support import FakeClock

    sent: list[list[dict[str, Any]]] = []

    async def send(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sent.append(records)
        return [{"success": True, "id": r["n"]} for r in records]

    def lost() -> None:
        raise LeaseLost("lease lapsed")

    async def body() -> None:
        clock = FakeClock()
        gatherer = Gatherer(send, clock)
        gatherer.linger_s = 3.0
        tasks = [asyncio.ensure_future(gatherer.submit({"n": n}, lost if n == 7 else lambda: None)) for n in range(251)]
        for _ in range(5000):  # bounded: each waiter takes its turn, the quiet steps pass on the fake clock
            await asyncio.sleep(0)
            if all(t.done() for t in tasks):
                break
            clock.advance(0.05)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[7], LeaseLost)  # that record alone, never sent
        assert [r["id"] for r in results if isinstance(r, dict)] == [n for n in range(251) if n != 7]

    asyncio.run(body())
    assert [len(batch) for batch in sent] == [199, 51]  # the first 200 (less the fenced one), then the rest
