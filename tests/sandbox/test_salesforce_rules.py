"""The errors Salesforce users hit, from the emulator through simple-salesforce: usernames,
licences, required fields, deactivation blockers, inactive owners, queues, assignments."""

# ruff: noqa: F811 - test parameters are the imported fixtures, by name
from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sandbox.salesforce import SalesforceEmulator
from tests.sandbox.salesforce_fixtures import clock, control, emulator, error_of, org, sf, user_fields  # noqa: F401 - fixtures, used by name


def refused(call: Any, *args: Any) -> dict[str, Any]:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        call(*args)
    return error_of(exc)


def test_usernames_are_unique_in_this_org_and_across_other_orgs(
    emulator: SalesforceEmulator, sf: Salesforce, org: dict[str, Any]
) -> None:
    profile = org["profiles"]["Sales User"]
    error = refused(sf.User.create, user_fields("ANN@corp.example.com", profile, CommunityNickname="ann2"))
    assert error["errorCode"] == "DUPLICATE_USERNAME"
    assert error["fields"] == ["Username"]
    assert "another Salesforce organization" in error["message"]
    control(emulator, "POST", "other-orgs", {"usernames": ["Taken@Elsewhere.example.com"]})
    assert refused(sf.User.create, user_fields("taken@elsewhere.example.com", profile))["errorCode"] == (
        "DUPLICATE_USERNAME"
    )
    other = sf.User.create(user_fields("carl@corp.example.com", profile))["id"]
    renamed = refused(sf.User.update, other, {"Username": "ann@corp.example.com"})
    assert renamed["errorCode"] == "DUPLICATE_USERNAME"
    # a failed create writes nothing: its username is still free
    assert sf.query("SELECT COUNT() FROM User WHERE Username = 'taken@elsewhere.example.com'")["totalSize"] == 0


def test_community_nicknames_are_unique_per_org_and_generated_when_absent(sf: Salesforce, org: dict[str, Any]) -> None:
    profile = org["profiles"]["Sales User"]
    first = sf.User.create(user_fields("dana@one.example.com", profile))["id"]
    second = sf.User.create(user_fields("dana@two.example.com", profile))["id"]
    nicknames = {sf.User.get(i)["CommunityNickname"] for i in (first, second)}
    assert len(nicknames) == 2
    error = refused(sf.User.update, second, {"CommunityNickname": sf.User.get(first)["CommunityNickname"]})
    assert error["errorCode"] == "DUPLICATE_COMM_NICKNAME"
    assert error["fields"] == ["CommunityNickname"]


@pytest.mark.parametrize(
    ("change", "code", "fields"),
    [
        ({"LastName": None, "Alias": None}, "REQUIRED_FIELD_MISSING", ["LastName", "Alias"]),
        ({"ProfileId": None}, "REQUIRED_FIELD_MISSING", ["ProfileId"]),
        ({"Alias": "toolongalias"}, "STRING_TOO_LONG", ["Alias"]),
        ({"Username": "not-an-email"}, "INVALID_EMAIL_ADDRESS", ["Username"]),
        ({"Email": "nobody@"}, "INVALID_EMAIL_ADDRESS", ["Email"]),
        ({"TimeZoneSidKey": "Mars"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["TimeZoneSidKey"]),
        ({"EmailEncodingKey": "UTF-9"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["EmailEncodingKey"]),
        ({"ProfileId": "00e000000000000AAA"}, "INVALID_CROSS_REFERENCE_KEY", ["ProfileId"]),
        ({"ProfileId": "not-an-id"}, "MALFORMED_ID", ["ProfileId"]),
        ({"ManagerId": "001000000000000AAA"}, "FIELD_INTEGRITY_EXCEPTION", ["ManagerId"]),
    ],
)
def test_a_bad_user_is_refused_with_the_fields_named(
    sf: Salesforce, org: dict[str, Any], change: dict[str, Any], code: str, fields: list[str]
) -> None:
    values = {**user_fields("eve@corp.example.com", org["profiles"]["Sales User"]), **change}
    values = {k: v for k, v in values.items() if v is not None}
    error = refused(sf.User.create, values)
    assert (error["errorCode"], error["fields"]) == (code, fields)
    assert sf.query("SELECT COUNT() FROM User WHERE Email = 'eve@corp.example.com'")["totalSize"] == 0


def test_a_licence_limit_stops_creates_and_deactivating_frees_one(
    emulator: SalesforceEmulator, sf: Salesforce, org: dict[str, Any]
) -> None:
    profile = org["profiles"]["Sales User"]
    used = sf.query("SELECT UsedLicenses FROM UserLicense WHERE Name = 'Salesforce'")["records"][0]["UsedLicenses"]
    assert used == 3  # the integration user, boss and ann
    control(emulator, "PUT", "licenses", {"name": "Salesforce", "total": 4})
    fourth = sf.User.create(user_fields("fay@corp.example.com", profile))["id"]
    error = refused(sf.User.create, user_fields("gus@corp.example.com", profile))
    assert error == {"message": "License Limit Exceeded", "errorCode": "LICENSE_LIMIT_EXCEEDED", "fields": []}
    inactive = sf.User.create(user_fields("hal@corp.example.com", profile, IsActive=False))["id"]
    assert refused(sf.User.update, inactive, {"IsActive": True})["errorCode"] == "LICENSE_LIMIT_EXCEEDED"
    login = sf.query(f"SELECT Id FROM UserLogin WHERE UserId = '{fourth}'")["records"][0]["Id"]  # noqa: S608
    sf.UserLogin.update(login, {"IsFrozen": True})
    assert refused(sf.User.create, user_fields("gus@corp.example.com", profile))["errorCode"] == (
        "LICENSE_LIMIT_EXCEEDED"  # a frozen user still holds its licence
    )
    sf.User.update(fourth, {"IsActive": False})
    assert sf.User.create(user_fields("gus@corp.example.com", profile))["success"] is True
    assert emulator.snapshot()["licenses"]["Salesforce"] == {"total": 4, "used": 4}


@pytest.mark.parametrize(
    ("blocker", "words"),
    [
        ("default_case_owner", "default owner of cases"),
        ("default_lead_owner", "default lead owner"),
        ("workflow_user", "Default Workflow User"),
        ("alert_recipient", "workflow email alert"),
    ],
)
def test_deactivating_a_default_owner_or_workflow_user_is_refused(
    emulator: SalesforceEmulator, sf: Salesforce, org: dict[str, Any], blocker: str, words: str
) -> None:
    ann = org["users"]["ann@corp.example.com"]
    control(emulator, "PUT", "blockers", {"user": "ann@corp.example.com", "blockers": [blocker]})
    error = refused(sf.User.update, ann, {"IsActive": False, "Title": "Gone"})
    assert error["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert words in error["message"]
    user = sf.User.get(ann)
    assert (user["IsActive"], user["Title"]) == (True, None)  # nothing of the refused update landed
    login = sf.query(f"SELECT Id FROM UserLogin WHERE UserId = '{ann}'")["records"][0]["Id"]  # noqa: S608
    assert sf.UserLogin.update(login, {"IsFrozen": True}) == 204  # freezing is allowed meanwhile
    control(emulator, "PUT", "blockers", {"user": ann, "blockers": []})
    assert sf.User.update(ann, {"IsActive": False}) == 204


def test_a_user_named_in_a_hierarchy_field_cannot_be_deactivated(sf: Salesforce, org: dict[str, Any]) -> None:
    boss, ann = org["users"]["boss@corp.example.com"], org["users"]["ann@corp.example.com"]
    sf.User.update(ann, {"Approver__c": boss})
    error = refused(sf.User.update, boss, {"IsActive": False})
    assert error["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert "hierarchy field" in error["message"]
    sf.User.update(ann, {"Approver__c": None})
    assert sf.User.update(boss, {"IsActive": False}) == 204


def test_records_cannot_be_given_to_an_inactive_owner(sf: Salesforce, org: dict[str, Any]) -> None:
    boss, ann = org["users"]["boss@corp.example.com"], org["users"]["ann@corp.example.com"]
    opp = sf.Opportunity.create({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2027-01-31", "OwnerId": ann})
    sf.User.update(boss, {"IsActive": False})
    error = refused(sf.Opportunity.update, opp["id"], {"OwnerId": boss})
    assert error["errorCode"] == "INACTIVE_OWNER_OR_USER"
    assert boss in error["message"]
    created = refused(sf.Case.create, {"Subject": "Help", "OwnerId": boss})  # on create as well
    assert created["errorCode"] == "INACTIVE_OWNER_OR_USER"
    # Records an inactive user already owns can still be edited (and reassigned away).
    sf.User.update(ann, {"IsActive": False})
    assert sf.Opportunity.update(opp["id"], {"Amount": 10.0}) == 204


def test_queues_own_only_the_types_they_serve(emulator: SalesforceEmulator, sf: Salesforce) -> None:
    seeded = emulator.seed(
        {"queues": [{"name": "Leavers", "sobjects": ["Lead", "Case"]}, {"name": "Support", "sobjects": ["Case"]}]}
    )
    queue, cases_only = seeded["queues"]["Leavers"], seeded["queues"]["Support"]
    lead = sf.Lead.create({"LastName": "Lee", "Company": "Acme"})["id"]
    assert sf.Lead.update(lead, {"OwnerId": queue}) == 204
    assert sf.query(f"SELECT Owner.Name FROM Lead WHERE Id = '{lead}'")["records"][0]["Owner"]["Name"] == "Leavers"  # noqa: S608
    opp = sf.Opportunity.create({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2027-01-31"})["id"]
    assert refused(sf.Opportunity.update, opp, {"OwnerId": queue})["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert refused(sf.Lead.update, lead, {"OwnerId": cases_only})["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"


def test_open_records_are_selected_by_is_closed_and_is_converted(emulator: SalesforceEmulator, sf: Salesforce) -> None:
    emulator.seed(
        {
            "users": [{"Username": "rep@corp.example.com"}],
            "generate": [
                {"type": "Opportunity", "count": 5, "closed": 2, "owner": "rep@corp.example.com"},
                {"type": "Case", "count": 4, "closed": 1, "owner": "rep@corp.example.com"},
                {"type": "Lead", "count": 3, "closed": 1, "owner": "rep@corp.example.com"},
            ],
        }
    )
    count = lambda soql: sf.query(soql)["totalSize"]  # noqa: E731
    assert (
        count("SELECT COUNT() FROM Opportunity WHERE Owner.Username = 'rep@corp.example.com' AND IsClosed = false") == 3
    )
    assert count("SELECT COUNT() FROM Case WHERE IsClosed = false") == 3
    assert count("SELECT COUNT() FROM Lead WHERE IsConverted = false") == 2
    opp = sf.query("SELECT Id FROM Opportunity WHERE IsClosed = false LIMIT 1")["records"][0]["Id"]
    sf.Opportunity.update(opp, {"StageName": "Closed Lost"})
    assert count("SELECT COUNT() FROM Opportunity WHERE IsClosed = false") == 2
    assert refused(sf.Lead.create, {"LastName": "x", "Company": "y", "IsConverted": True})["errorCode"] == (
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    )


def test_permission_set_assignments_are_created_deleted_and_never_doubled(sf: Salesforce, org: dict[str, Any]) -> None:
    ann, reports = org["users"]["ann@corp.example.com"], org["permission_sets"]["Reports"]
    created = sf.PermissionSetAssignment.create({"AssigneeId": ann, "PermissionSetId": reports})
    assert created["id"].startswith("0Pa")
    again = refused(sf.PermissionSetAssignment.create, {"AssigneeId": ann, "PermissionSetId": reports})
    assert again["errorCode"] == "DUPLICATE_VALUE"
    managed = "SELECT PermissionSet.Name FROM PermissionSetAssignment WHERE AssigneeId = '{}' AND PermissionSet.IsOwnedByProfile = false ORDER BY PermissionSet.Name"  # noqa: E501
    assert [r["PermissionSet"]["Name"] for r in sf.query(managed.format(ann))["records"]] == ["Reports", "Sales_Ops"]
    assert sf.PermissionSetAssignment.delete(created["id"]) == 204
    assert [r["PermissionSet"]["Name"] for r in sf.query(managed.format(ann))["records"]] == ["Sales_Ops"]
    owned = sf.query(
        f"SELECT Id FROM PermissionSetAssignment WHERE AssigneeId = '{ann}' AND PermissionSet.IsOwnedByProfile = true"  # noqa: S608
    )["records"]
    assert len(owned) == 1  # every user holds its profile's own permission set
    assert refused(sf.PermissionSetAssignment.delete, owned[0]["Id"])["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"


def test_a_profile_change_moves_the_profile_assignment(sf: Salesforce, org: dict[str, Any]) -> None:
    ann = org["users"]["ann@corp.example.com"]
    sf.User.update(ann, {"ProfileId": org["profiles"]["Standard User"]})
    rows = sf.query(
        f"SELECT PermissionSet.Profile.Name FROM PermissionSetAssignment WHERE AssigneeId = '{ann}' "  # noqa: S608
        "AND PermissionSet.IsOwnedByProfile = true"
    )["records"]
    assert [r["PermissionSet"]["Profile"]["Name"] for r in rows] == ["Standard User"]


def test_a_group_assignment_names_the_groups_aggregate_permission_set(
    emulator: SalesforceEmulator, sf: Salesforce
) -> None:
    seeded = emulator.seed(
        {"permission_set_groups": [{"name": "Sales_Bundle"}], "users": [{"Username": "kim@corp.example.com"}]}
    )
    kim, bundle = seeded["users"]["kim@corp.example.com"], seeded["permission_set_groups"]["Sales_Bundle"]
    created = sf.PermissionSetAssignment.create({"AssigneeId": kim, "PermissionSetGroupId": bundle})
    row = sf.PermissionSetAssignment.get(created["id"])
    assert row["PermissionSetGroupId"] == bundle and row["PermissionSetId"].startswith("0PS")
    fields = "PermissionSetGroup.DeveloperName, PermissionSet.Type"
    where = f"AssigneeId = '{kim}' AND PermissionSet.IsOwnedByProfile = false"
    managed = sf.query(f"SELECT {fields} FROM PermissionSetAssignment WHERE {where}")["records"]  # noqa: S608
    assert [(r["PermissionSetGroup"]["DeveloperName"], r["PermissionSet"]["Type"]) for r in managed] == [
        ("Sales_Bundle", "Group")
    ]
    again = refused(sf.PermissionSetAssignment.create, {"AssigneeId": kim, "PermissionSetGroupId": bundle})
    assert again["errorCode"] == "DUPLICATE_VALUE"
    direct = refused(sf.PermissionSetAssignment.create, {"AssigneeId": kim, "PermissionSetId": row["PermissionSetId"]})
    assert direct["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    both = refused(
        sf.PermissionSetAssignment.create,
        {"AssigneeId": kim, "PermissionSetGroupId": bundle, "PermissionSetId": row["PermissionSetId"]},
    )
    assert both["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert refused(sf.PermissionSetAssignment.create, {"AssigneeId": kim})["errorCode"] == "REQUIRED_FIELD_MISSING"
