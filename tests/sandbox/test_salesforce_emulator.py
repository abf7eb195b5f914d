"""The Salesforce emulator driven through simple-salesforce, the way the target will use it:
OAuth, sObject CRUD and upsert, SOQL with paging, the user rules and their errors."""

# ruff: noqa: F811 - test parameters are the imported fixtures, by name
from __future__ import annotations

from typing import Any

import pytest
import requests
import requests.auth
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceResourceNotFound,
)

from sandbox.salesforce import SalesforceEmulator, loopback_session
from sandbox.salesforce.schema import normalise_id
from tests.sandbox.salesforce_fixtures import (  # noqa: F401 - fixtures, used by name
    FakeClock,
    client,
    clock,
    control,
    emulator,
    error_of,
    org,
    sf,
    user_fields,
)

# --------------------------------------------------------------------------------------------
# OAuth and the session
# --------------------------------------------------------------------------------------------


def test_client_credentials_issue_a_token_that_simple_salesforce_uses(emulator: SalesforceEmulator) -> None:
    session = emulator.session()
    answer = session.post(
        emulator.instance_url + "/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "sandbox-consumer-key",
            "client_secret": "sandbox-consumer-secret",
        },
    )
    assert answer.status_code == 200
    token = answer.json()
    assert token["token_type"] == "Bearer"
    assert token["instance_url"] == emulator.instance_url
    sf = Salesforce(
        instance_url=token["instance_url"], session_id=token["access_token"], session=session, version="61.0"
    )
    assert sf.query("SELECT COUNT() FROM Profile")["totalSize"] == 2


@pytest.mark.parametrize(
    ("form", "error"),
    [
        (
            {"grant_type": "client_credentials", "client_id": "sandbox-consumer-key", "client_secret": "wrong"},
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "other", "client_secret": "sandbox-consumer-secret"},
            "invalid_client",
        ),
        (
            {"grant_type": "password", "client_id": "sandbox-consumer-key", "client_secret": "sandbox-consumer-secret"},
            "unsupported_grant_type",
        ),
    ],
)
def test_bad_client_credentials_get_an_oauth_error(
    emulator: SalesforceEmulator, form: dict[str, str], error: str
) -> None:
    answer = emulator.session().post(emulator.instance_url + "/services/oauth2/token", data=form)
    assert answer.status_code == 400
    assert answer.json()["error"] == error
    assert "access_token" not in answer.json()


def test_client_credentials_may_come_as_basic_authentication(emulator: SalesforceEmulator) -> None:
    basic = requests.auth.HTTPBasicAuth("sandbox-consumer-key", "sandbox-consumer-secret")
    answer = emulator.session().post(
        emulator.instance_url + "/services/oauth2/token", data={"grant_type": "client_credentials"}, auth=basic
    )
    assert answer.status_code == 200
    assert client(emulator, answer.json()["access_token"]).query("SELECT COUNT() FROM User")["totalSize"] == 1
    wrong = requests.auth.HTTPBasicAuth("sandbox-consumer-key", "nope")
    refused = emulator.session().post(
        emulator.instance_url + "/services/oauth2/token", data={"grant_type": "client_credentials"}, auth=wrong
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_client")


def test_calls_without_a_valid_token_are_refused_with_invalid_session_id(emulator: SalesforceEmulator) -> None:
    with pytest.raises(SalesforceExpiredSession) as exc:
        client(emulator, token="not-a-token").query("SELECT Id FROM User")
    assert error_of(exc) == {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    bare = emulator.session().get(emulator.instance_url + "/services/data/v61.0/limits")
    assert bare.status_code == 401


def test_expired_tokens_are_refused_until_the_client_authenticates_again(
    emulator: SalesforceEmulator, clock: FakeClock
) -> None:
    sf = client(emulator, emulator.issue_token())
    sf.query("SELECT Id FROM User")
    assert emulator.expire_tokens() == 1
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM User")
    fresh = client(emulator, emulator.issue_token())
    assert fresh.query("SELECT COUNT() FROM User")["totalSize"] == 1
    clock.t += emulator.token_ttl_s + 1  # a token also ends when its lifetime is over
    with pytest.raises(SalesforceExpiredSession):
        fresh.query("SELECT Id FROM User")
    assert control(emulator, "POST", "tokens/expire") == {"expired": 0}


def test_the_loopback_session_only_rewrites_loopback_instances() -> None:
    with pytest.raises(ValueError, match="loopback"):
        loopback_session("https://example.my.salesforce.com")
    with pytest.raises(ValueError, match="loopback"):
        loopback_session("http://127.0.0.1:8443")


# --------------------------------------------------------------------------------------------
# sObjects
# --------------------------------------------------------------------------------------------


def test_a_user_is_created_read_and_updated(sf: Salesforce, org: dict[str, Any]) -> None:
    profile = org["profiles"]["Sales User"]
    created = sf.User.create(
        user_fields("New.Hire@Corp.example.com", profile, FirstName="New", LastName="Hire", Department="Sales")
    )
    assert created["success"] is True and created["errors"] == []
    user_id = created["id"]
    assert len(user_id) == 18 and user_id.startswith("005")
    got = sf.User.get(user_id)
    assert got["Username"] == "new.hire@corp.example.com"  # stored lower-case
    assert got["Name"] == "New Hire"
    assert got["IsActive"] is True
    assert got["attributes"] == {"type": "User", "url": f"/services/data/v61.0/sobjects/User/{user_id}"}
    assert sf.User.update(user_id, {"Title": "AE", "Department": "West"}) == 204
    narrow = sf.restful(f"sobjects/User/{user_id}", params={"fields": "Title,Department,Profile.Name"})
    assert narrow["Title"] == "AE" and narrow["Department"] == "West"
    assert narrow["Profile"]["Name"] == "Sales User"
    assert "Username" not in narrow
    assert sf.User.get(user_id[:15])["Id"] == user_id  # a 15-character id names the same record
    login = sf.query(f"SELECT Id, IsFrozen FROM UserLogin WHERE UserId = '{user_id}'")["records"]  # noqa: S608 - the point of the test
    assert [r["IsFrozen"] for r in login] == [False]


def test_unknown_records_and_types_are_not_found(sf: Salesforce) -> None:
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.User.get("005000000000000AAA")
    assert error_of(exc)["errorCode"] == "NOT_FOUND"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Widget__c.create({"Name": "x"})


def test_upsert_by_external_id_creates_then_updates(sf: Salesforce) -> None:
    assert sf.Account.upsert("External_Id__c/ACME-1", {"Name": "Acme"}) == 201
    assert sf.Account.upsert("External_Id__c/ACME-1", {"Name": "Acme Corp"}) == 200
    rows = sf.query("SELECT Name, External_Id__c FROM Account")["records"]
    assert [(r["Name"], r["External_Id__c"]) for r in rows] == [("Acme Corp", "ACME-1")]
    assert sf.Account.get_by_custom_id("External_Id__c", "ACME-1")["Name"] == "Acme Corp"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.upsert("Name/Acme", {"Industry": "x"})  # not an external id field
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.upsert("External_Id__c/ACME-2?updateOnly=true", {"Name": "Nobody"})
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Account.upsert("External_Id__c/ACME-1", {"External_Id__c": "ACME-9"})
    assert error_of(exc)["errorCode"] == "INVALID_FIELD"
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 1


def test_unknown_and_read_only_fields_are_refused(sf: Salesforce, org: dict[str, Any]) -> None:
    user_id = org["users"]["ann@corp.example.com"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.User.update(user_id, {"Nickname__c": "x"})
    assert error_of(exc)["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.User.update(user_id, {"Name": "x"})
    assert error_of(exc)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.User.update(user_id, {"IsActive": "yes"})
    assert error_of(exc)["errorCode"] == "INVALID_TYPE_ON_FIELD_IN_RECORD"


# --------------------------------------------------------------------------------------------
# SOQL
# --------------------------------------------------------------------------------------------


def test_soql_filters_with_and_or_in_null_and_relationships(sf: Salesforce, org: dict[str, Any]) -> None:
    q = "SELECT Username FROM User WHERE "
    names = lambda where: sorted(r["Username"] for r in sf.query_all(q + where)["records"])  # noqa: E731
    assert names("Manager.Username = 'boss@corp.example.com'") == ["ann@corp.example.com"]
    assert names("FederationIdentifier = 'ANN-OID'") == ["ann@corp.example.com"]  # text compares case-insensitively
    assert names("EmployeeNumber IN ('E1', 'E9') OR UserRole.Name = 'Sales'") == [
        "ann@corp.example.com",
        "boss@corp.example.com",
    ]
    assert names("ManagerId = null AND (Profile.Name = 'Sales User' OR Username LIKE 'integ%')") == [
        "boss@corp.example.com",
        "integration@sandbox.example.com",
    ]
    assert names("IsActive = true AND NOT Username LIKE '%corp%'") == ["integration@sandbox.example.com"]
    assert names("Username NOT IN ('ann@corp.example.com') AND ManagerId != null") == []
    ann = org["users"]["ann@corp.example.com"]
    assert names(f"Id = '{ann[:15]}'") == ["ann@corp.example.com"]
    rows = sf.query(
        "SELECT Assignee.Username, PermissionSet.Name FROM PermissionSetAssignment "
        "WHERE PermissionSet.IsOwnedByProfile = false"
    )["records"]
    assert [(r["Assignee"]["Username"], r["PermissionSet"]["Name"]) for r in rows] == [
        ("ann@corp.example.com", "Sales_Ops")
    ]
    ordered = sf.query("SELECT Username FROM User ORDER BY Username DESC LIMIT 2")["records"]
    assert [r["Username"] for r in ordered] == ["integration@sandbox.example.com", "boss@corp.example.com"]
    assert sf.query("SELECT COUNT() FROM User WHERE IsActive = true") == {"totalSize": 3, "done": True, "records": []}


def test_an_escaped_quote_is_data_not_query_text(sf: Salesforce, org: dict[str, Any]) -> None:
    hostile = "x' OR Username != '"
    escaped = hostile.replace("\\", "\\\\").replace("'", "\\'")
    rows = sf.query(f"SELECT Id FROM User WHERE Username = '{escaped}'")["records"]  # noqa: S608 - the point of the test
    assert rows == []  # one literal that no username equals, not "every user"
    odd = "o'brien\\x@corp.example.com"
    created = sf.User.create(user_fields(odd, org["profiles"]["Sales User"], Alias="obrien"))
    literal = odd.replace("\\", "\\\\").replace("'", "\\'")
    found = sf.query(f"SELECT Id, Username FROM User WHERE Username = '{literal}'")["records"]  # noqa: S608 - the point of the test
    assert [(r["Id"], r["Username"]) for r in found] == [(created["id"], odd)]
    # Unescaped, the same value *is* query text and matches every user: the emulator parses an
    # injection as Salesforce would, so a target that forgets to escape is caught by its tests.
    unescaped = sf.query(f"SELECT Id FROM User WHERE Username = '{hostile}'")["records"]  # noqa: S608 - the point of the test
    assert len(unescaped) == 4
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM User WHERE Username = 'o'brien'")
    assert error_of(exc)["errorCode"] == "MALFORMED_QUERY"


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM User WHERE", "MALFORMED_QUERY"),
        ("SELECT Id FROM User WHERE Username = 'open", "MALFORMED_QUERY"),
        ("SELECT Id FROM User WHERE Username = 'a\\qb'", "MALFORMED_QUERY"),
        ("SELECT Id FROM User LIMIT 1 extra", "MALFORMED_QUERY"),
        ("SELECT Nope FROM User", "INVALID_FIELD"),
        ("SELECT Profile.Nope FROM User", "INVALID_FIELD"),
        ("SELECT Id FROM Widget", "INVALID_TYPE"),
    ],
)
def test_bad_soql_is_refused_with_salesforce_codes(sf: Salesforce, soql: str, code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query(soql)
    assert error_of(exc)["errorCode"] == code


def test_query_results_page_with_next_records_url(emulator: SalesforceEmulator, sf: Salesforce) -> None:
    emulator.seed({"generate": [{"type": "Lead", "count": 25}]})
    control(emulator, "PUT", "query", {"batch_size": 10})
    first = sf.query("SELECT Id, LastName FROM Lead")
    assert first["totalSize"] == 25 and first["done"] is False and len(first["records"]) == 10
    assert first["nextRecordsUrl"].startswith("/services/data/v61.0/query/01g")
    everything = sf.query_all("SELECT Id, LastName FROM Lead")
    assert len({r["Id"] for r in everything["records"]}) == 25
    counts = emulator.log.counts()
    assert (counts["salesforce.query"], counts["salesforce.query.more"]) == (2, 2)
    again = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)  # a page may be read again
    assert len(again["records"]) == 10 and again["done"] is False
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query_more("01g5gAAAAAAAAAAAAA-10")
    assert error_of(exc)["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_ids_are_18_characters_with_the_case_safe_suffix() -> None:
    assert normalise_id("001000000000001") == "001000000000001AAA"
    assert normalise_id("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert normalise_id("001000000000001AAB") is None
    assert normalise_id("not-an-id") is None


def test_describe_lists_fields_with_their_rules(sf: Salesforce) -> None:
    described = sf.User.describe()
    fields = {f["name"]: f for f in described["fields"]}
    assert described["keyPrefix"] == "005"
    assert fields["Alias"]["length"] == 8 and fields["Alias"]["nillable"] is False
    assert fields["Name"]["createable"] is False
    assert fields["ManagerId"]["referenceTo"] == ["User"] and fields["ManagerId"]["relationshipName"] == "Manager"
    assert fields["EntraObjectId__c"]["externalId"] is True
