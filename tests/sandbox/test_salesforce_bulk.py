"""sObject Collections and Bulk API 2.0 on the Salesforce emulator, through simple-salesforce:
200 records a call, allOrNone, Setup and non-Setup never mixed, a bulk job's whole life."""

# ruff: noqa: F811 - test parameters are the imported fixtures, by name
from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from sandbox.salesforce import SalesforceEmulator
from tests.sandbox.salesforce_fixtures import clock, control, emulator, error_of, org, sf  # noqa: F401 - fixtures, used by name


@pytest.fixture
def book(emulator: SalesforceEmulator) -> dict[str, Any]:
    """Two reps, a manager and a queue; the leaver owns 250 open opportunities and 3 leads."""
    return emulator.seed(
        {
            "queues": [{"name": "Leavers", "sobjects": ["Lead", "Case"]}],
            "users": [
                {"Username": "mgr@corp.example.com"},
                {"Username": "leaver@corp.example.com", "manager": "mgr@corp.example.com"},
                {"Username": "gone@corp.example.com", "IsActive": False},
            ],
            "generate": [
                {"type": "Opportunity", "count": 250, "owner": "leaver@corp.example.com"},
                {"type": "Lead", "count": 3, "owner": "leaver@corp.example.com"},
            ],
        }
    )


def owned_ids(sf: Salesforce, sobject: str, owner: str) -> list[str]:
    rows = sf.query_all(f"SELECT Id FROM {sobject} WHERE OwnerId = '{owner}' ORDER BY Id")["records"]  # noqa: S608
    return [r["Id"] for r in rows]


def reassign(records: list[str], sobject: str, owner: str) -> list[dict[str, Any]]:
    return [{"attributes": {"type": sobject}, "Id": i, "OwnerId": owner} for i in records]


def test_a_collection_updates_up_to_200_records_in_one_call(
    emulator: SalesforceEmulator, sf: Salesforce, book: dict[str, Any]
) -> None:
    leaver, mgr = book["users"]["leaver@corp.example.com"], book["users"]["mgr@corp.example.com"]
    opps = owned_ids(sf, "Opportunity", leaver)
    emulator.log.clear()
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"allOrNone": False, "records": reassign(opps[:200], "Opportunity", mgr)},
    )
    assert [r["success"] for r in results] == [True] * 200
    assert [r["id"] for r in results] == opps[:200]
    assert emulator.log.counts() == {"salesforce.collections.update": 1}
    assert len(owned_ids(sf, "Opportunity", mgr)) == 200
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="PATCH", json={"records": reassign(opps[:201], "Opportunity", mgr)})
    assert error_of(exc)["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert len(owned_ids(sf, "Opportunity", leaver)) == 50  # the refused call changed nothing


def test_without_all_or_none_each_record_stands_alone(sf: Salesforce, book: dict[str, Any]) -> None:
    leaver, gone = book["users"]["leaver@corp.example.com"], book["users"]["gone@corp.example.com"]
    mgr = book["users"]["mgr@corp.example.com"]
    opps = owned_ids(sf, "Opportunity", leaver)[:3]
    records = reassign(opps[:1], "Opportunity", mgr) + reassign(opps[1:2], "Opportunity", gone)
    records += reassign(opps[2:], "Opportunity", mgr)
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})
    assert [r["success"] for r in results] == [True, False, True]
    assert results[1]["id"] == opps[1]
    assert results[1]["errors"][0]["statusCode"] == "INACTIVE_OWNER_OR_USER"
    assert owned_ids(sf, "Opportunity", mgr) == sorted([opps[0], opps[2]])


def test_all_or_none_rolls_every_record_back_when_one_fails(sf: Salesforce, book: dict[str, Any]) -> None:
    leaver, gone = book["users"]["leaver@corp.example.com"], book["users"]["gone@corp.example.com"]
    mgr = book["users"]["mgr@corp.example.com"]
    opps = owned_ids(sf, "Opportunity", leaver)[:3]
    records = reassign(opps[:2], "Opportunity", mgr) + reassign(opps[2:], "Opportunity", gone)
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": records})
    assert [r["success"] for r in results] == [False, False, False]
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "INACTIVE_OWNER_OR_USER",
    ]
    assert owned_ids(sf, "Opportunity", mgr) == []
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "allOrNone": True,
            "records": [
                {"attributes": {"type": "Account"}, "Name": "Kept?"},
                {"attributes": {"type": "Account"}},  # Name missing
            ],
        },
    )
    assert [(r["id"], r["errors"][0]["statusCode"]) for r in created] == [
        (None, "ALL_OR_NONE_OPERATION_ROLLED_BACK"),
        (None, "REQUIRED_FIELD_MISSING"),
    ]
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0


def test_setup_and_non_setup_objects_never_share_a_call(sf: Salesforce, book: dict[str, Any]) -> None:
    leaver, mgr = book["users"]["leaver@corp.example.com"], book["users"]["mgr@corp.example.com"]
    opp = owned_ids(sf, "Opportunity", leaver)[0]
    records = [
        {"attributes": {"type": "User"}, "Id": leaver, "Title": "Leaving"},
        *reassign([opp], "Opportunity", mgr),
    ]
    results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records})
    assert results[0]["success"] is True
    assert results[1]["success"] is False
    assert results[1]["errors"][0]["statusCode"] == "MIXED_DML_OPERATION"
    assert owned_ids(sf, "Opportunity", mgr) == []
    rolled = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": records[::-1]})
    assert [r["errors"][0]["statusCode"] for r in rolled] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "MIXED_DML_OPERATION",
    ]


def test_assignments_are_created_and_deleted_in_collections(sf: Salesforce, org: dict[str, Any]) -> None:
    ann, boss = org["users"]["ann@corp.example.com"], org["users"]["boss@corp.example.com"]
    reports = org["permission_sets"]["Reports"]
    new = [
        {"attributes": {"type": "PermissionSetAssignment"}, "AssigneeId": user, "PermissionSetId": reports}
        for user in (ann, boss)
    ]
    created = sf.restful("composite/sobjects", method="POST", json={"records": new})
    ids = [r["id"] for r in created]
    assert all(r["success"] for r in created) and all(i.startswith("0Pa") for i in ids)
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids), "allOrNone": "true"})
    assert [(r["id"], r["success"]) for r in deleted] == [(i, True) for i in ids]
    left = "SELECT COUNT() FROM PermissionSetAssignment WHERE PermissionSet.Name = 'Reports'"
    assert sf.query(left)["totalSize"] == 0
    again = sf.restful("composite/sobjects", method="DELETE", params={"ids": ids[0]})
    assert again[0]["errors"][0]["statusCode"] == "NOT_FOUND"


def test_a_bulk_job_updates_owners_and_reports_each_row(
    emulator: SalesforceEmulator, sf: Salesforce, book: dict[str, Any]
) -> None:
    leaver, gone = book["users"]["leaver@corp.example.com"], book["users"]["gone@corp.example.com"]
    mgr = book["users"]["mgr@corp.example.com"]
    opps = owned_ids(sf, "Opportunity", leaver)
    rows = [{"Id": i, "OwnerId": mgr} for i in opps[:-1]] + [{"Id": opps[-1], "OwnerId": gone}]
    emulator.log.clear()
    [result] = sf.bulk2.Opportunity.update(records=rows, wait=0)
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (250, 1)
    assert len(owned_ids(sf, "Opportunity", mgr)) == 249
    failed = list(csv.DictReader(io.StringIO(sf.bulk2.Opportunity.get_failed_records(result["job_id"]))))
    assert [(r["sf__Id"], r["sf__Error"].split(":")[0]) for r in failed] == [(opps[-1], "INACTIVE_OWNER_OR_USER")]
    ok = list(csv.DictReader(io.StringIO(sf.bulk2.Opportunity.get_successful_records(result["job_id"]))))
    assert len(ok) == 249 and {r["sf__Created"] for r in ok} == {"false"}
    counts = emulator.log.counts()
    assert counts["salesforce.bulk.create"] == 1 and counts["salesforce.bulk.upload"] == 1
    assert counts["salesforce.bulk.state"] == 1


def test_a_bulk_job_waits_in_upload_complete_until_processed(
    emulator: SalesforceEmulator, sf: Salesforce, book: dict[str, Any]
) -> None:
    control(emulator, "PUT", "bulk", {"auto_process": False})
    leaver, queue = book["users"]["leaver@corp.example.com"], book["queues"]["Leavers"]
    leads = owned_ids(sf, "Lead", leaver)
    session, base = emulator.session(), emulator.instance_url + "/services/data/v61.0/jobs/ingest"
    headers = {"Authorization": f"Bearer {emulator.static_token}"}
    job = session.post(
        base, json={"object": "Lead", "operation": "update", "contentType": "CSV"}, headers=headers
    ).json()
    assert job["state"] == "Open" and job["id"].startswith("750")
    data = "Id,OwnerId\n" + "".join(f"{i},{queue}\n" for i in leads)
    upload = session.put(f"{base}/{job['id']}/batches", data=data, headers={**headers, "Content-Type": "text/csv"})
    assert upload.status_code == 201
    again = session.put(f"{base}/{job['id']}/batches", data=data, headers={**headers, "Content-Type": "text/csv"})
    assert again.status_code == 409
    closed = session.patch(f"{base}/{job['id']}", json={"state": "UploadComplete"}, headers=headers).json()
    assert closed["state"] == "UploadComplete"
    assert session.get(f"{base}/{job['id']}", headers=headers).json()["state"] == "UploadComplete"
    early = session.get(f"{base}/{job['id']}/successfulResults", headers=headers)
    assert early.status_code == 409
    assert owned_ids(sf, "Lead", queue) == []
    assert control(emulator, "POST", "bulk/process") == {"processed": 1}
    info = session.get(f"{base}/{job['id']}", headers=headers).json()
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == ("JobComplete", 3, 0)
    assert owned_ids(sf, "Lead", queue) == leads


def test_bad_bulk_jobs_are_refused(emulator: SalesforceEmulator, sf: Salesforce) -> None:
    session, base = emulator.session(), emulator.instance_url + "/services/data/v61.0/jobs/ingest"
    headers = {"Authorization": f"Bearer {emulator.static_token}"}
    for body in ({"object": "Widget", "operation": "update"}, {"object": "Lead", "operation": "merge"}):
        answer = session.post(base, json=body, headers=headers)
        assert answer.status_code == 400 and answer.json()[0]["errorCode"] == "INVALIDJOB"
    missing = session.get(f"{base}/750000000000000AAA", headers=headers)
    assert missing.status_code == 404
