"""The Salesforce emulator's daily API allocation, limit header, outages and control endpoints."""

# ruff: noqa: F811 - test parameters are the imported fixtures, by name
from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceGeneralError, SalesforceRefusedRequest

from sandbox.salesforce import SalesforceEmulator
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


def used(sf: Salesforce) -> tuple[int, int]:
    usage: Any = sf.api_usage["api-usage"]
    return usage.used, usage.total


def test_every_answer_carries_the_limit_header_and_every_call_counts_once(
    emulator: SalesforceEmulator, sf: Salesforce, org: dict[str, Any]
) -> None:
    sf.query("SELECT Id FROM User")
    assert used(sf) == (1, 100_000)
    ann = org["users"]["ann@corp.example.com"]
    sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"records": [{"attributes": {"type": "User"}, "Id": ann, "Title": "x"}]},
    )
    sf.query("SELECT Id FROM User")
    assert used(sf) == (3, 100_000)  # one collection is one call
    sf.bulk2.User.update(records=[{"Id": ann, "Title": "y"}], wait=0)  # create, upload, close, get (x2)
    sf.query("SELECT Id FROM User")
    assert used(sf)[0] == 3 + 5 + 1
    refused = emulator.session().get(emulator.instance_url + "/services/data/v61.0/limits")
    assert refused.status_code == 401
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=9/100000"  # a refused session costs nothing
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 100_000, "Remaining": 100_000 - 10}


def test_a_spent_daily_allocation_refuses_calls_until_the_window_rolls(
    emulator: SalesforceEmulator, sf: Salesforce, clock: FakeClock
) -> None:
    control(emulator, "PUT", "api-limit", {"max": 5, "used": 3})
    sf.query("SELECT Id FROM User")
    sf.query("SELECT Id FROM User")
    assert used(sf) == (5, 5)
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.query("SELECT Id FROM User")
    assert error_of(exc) == {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    with pytest.raises(SalesforceRefusedRequest):
        sf.restful("composite/sobjects", method="PATCH", json={"records": []})
    assert control(emulator, "PUT", "api-limit", {}) == {"used": 5, "max": 5}  # refusals spend nothing
    clock.t += 23 * 3600
    with pytest.raises(SalesforceRefusedRequest):
        sf.query("SELECT Id FROM User")
    clock.t += 3600  # the calls of 24 hours ago leave the rolling window
    assert sf.query("SELECT COUNT() FROM User")["totalSize"] == 1
    assert used(sf) == (1, 5)


def test_an_injected_outage_answers_503_in_salesforce_shape(emulator: SalesforceEmulator, sf: Salesforce) -> None:
    control(emulator, "PUT", "faults", {"rules": [{"route": "salesforce.*", "status": 503, "count": 1}]})
    with pytest.raises(SalesforceGeneralError) as exc:
        sf.query("SELECT Id FROM User")
    assert exc.value.status == 503
    assert error_of(exc)["errorCode"] == "SERVER_UNAVAILABLE"
    assert sf.query("SELECT COUNT() FROM User")["totalSize"] == 1  # the rule fired once


def test_route_names_in_the_request_log(emulator: SalesforceEmulator, sf: Salesforce, org: dict[str, Any]) -> None:
    emulator.log.clear()
    created = sf.User.create(user_fields("ivy@corp.example.com", org["profiles"]["Sales User"]))
    sf.User.update(created["id"], {"Title": "AE"})
    sf.User.get(created["id"])
    sf.query("SELECT Id FROM User")
    sf.PermissionSetAssignment.create(
        {"AssigneeId": created["id"], "PermissionSetId": org["permission_sets"]["Reports"]}
    )
    sf.restful("composite/sobjects", method="PATCH", json={"records": []})
    assert emulator.log.counts() == {
        "salesforce.users.create": 1,
        "salesforce.users.update": 1,
        "salesforce.users.get": 1,
        "salesforce.query": 1,
        "salesforce.permission_set_assignments.create": 1,
        "salesforce.collections.update": 1,
    }


def test_seed_and_reset_over_the_control_endpoints(emulator: SalesforceEmulator) -> None:
    summary = control(
        emulator,
        "POST",
        "seed",
        {
            "licenses": [{"name": "Salesforce", "total": 3}],
            "profiles": [{"name": "Sales User"}],
            "roles": [{"name": "West"}],
            "permission_set_groups": [{"name": "Sales_Bundle"}],
            "users": [
                {
                    "Username": "a@corp.example.com",
                    "profile": "Sales User",
                    "role": "West",
                    "permission_set_groups": ["Sales_Bundle"],
                    "frozen": True,
                }
            ],
        },
    )
    assert set(summary["users"]) == {"a@corp.example.com", "integration@sandbox.example.com"}
    assert summary["licenses"]["Salesforce"].startswith("100")
    sf = emulator.client()
    row = sf.query(
        "SELECT Username, UserRole.Name, Profile.UserLicense.Name FROM User WHERE Username = 'a@corp.example.com'"
    )["records"][0]
    assert (row["UserRole"]["Name"], row["Profile"]["UserLicense"]["Name"]) == ("West", "Salesforce")
    frozen = sf.query("SELECT User.Username FROM UserLogin WHERE IsFrozen = true")["records"]
    assert [r["User"]["Username"] for r in frozen] == ["a@corp.example.com"]
    groups = sf.query(
        "SELECT PermissionSetGroup.DeveloperName FROM PermissionSetAssignment WHERE PermissionSetGroupId != null"
    )
    assert [r["PermissionSetGroup"]["DeveloperName"] for r in groups["records"]] == ["Sales_Bundle"]
    assert emulator.snapshot()["licenses"]["Salesforce"] == {"total": 3, "used": 2}
    control(emulator, "POST", "reset")
    assert emulator.client().query("SELECT COUNT() FROM User")["totalSize"] == 1
    token = control(emulator, "POST", "token")
    assert token["instance_url"] == emulator.instance_url
    assert emulator.client(token["access_token"]).query("SELECT COUNT() FROM Profile")["totalSize"] == 2
    control(emulator, "POST", "tokens/expire")
    with pytest.raises(SalesforceExpiredSession):
        emulator.client(token["access_token"]).query("SELECT COUNT() FROM Profile")
