"""The Salesforce benchmark's own counting and goals: calls are read and judged against the
minimum from the emulator's log (the token apart), the org's users are checked for their profile,
role and sets as the tenant's memberships say, and each goal says MISSED when it is; and a tiny
backfill through the product is counted alike by the emulator and the benchmark, every user right."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.salesforce import (
    ALLOCATION,
    DEFAULT_PROFILE,
    SALES_PROFILE,
    SALES_ROLE,
    Backfilled,
    Calls,
    access_problems,
    backfill,
    backfill_goals,
    counted,
    events_table,
    judge,
    org_access,
    org_seed,
    transitive,
)
from sandbox.salesforce import SalesforceEmulator
from sandbox.server import LoggedRequest

pytestmark = pytest.mark.timeout(120)


def logged(route: str, method: str = "GET") -> LoggedRequest:
    return LoggedRequest(0.0, method, "/x", route, 200, method != "GET")


def test_calls_are_counted_by_route_the_token_apart_and_judged_against_the_minimum() -> None:
    entries = [
        logged("salesforce.oauth.token", "POST"),
        logged("salesforce.query"),
        logged("salesforce.users.create", "POST"),
        logged("salesforce.collections.create", "POST"),
    ]
    reads, writes, routes = counted(entries)
    assert (reads, writes) == (1, 2) and routes["oauth.token"] == 1
    assert judge("joiner", Calls(2, reads, writes, routes)) == "met"
    assert judge("joiner", Calls(2, 3, 2, routes)) == "MISSED: reads +2"
    assert judge("joiner", Calls(2, 1, 3, routes)) == "MISSED: writes +1"
    assert judge("no-op replay", Calls(2, 0, 1, {})) == "MISSED: writes +1"
    assert judge("mover (one attribute)", Calls(2, 0, 0, {})) == "MISSED: writes -1"  # a write left out
    _, goals = events_table({"joiner": Calls(2, 1, 2, {}), "leaver": Calls(1, 7, 5, {})})
    assert goals[0].startswith("met") and goals[1].startswith("MISSED") and "leaver 7 of 6" in goals[1]


def test_the_org_is_checked_against_the_tenants_memberships_user_by_user() -> None:
    members = {"staff": ["a", "nested"], "nested": ["b"], "sales": ["b"]}
    assert transitive(members, "staff") == {"a", "nested", "b"}
    with SalesforceEmulator().start() as org:
        seed = org_seed(10)
        seed["users"] = [
            *seed["users"],
            {"Username": "a@x.example", "FederationIdentifier": "a", "permission_sets": ["Staff_Access"]},
            {"Username": "b@x.example", "FederationIdentifier": "b", "profile": SALES_PROFILE, "role": SALES_ROLE,
             "permission_sets": ["Staff_Access", "Sales_Reader"], "permission_set_groups": ["Sales_Bundle"]},
        ]  # fmt: skip
        org.seed(seed)
        staff = frozenset({"Staff_Access"})
        expected = {
            "a": (DEFAULT_PROFILE, None, staff),
            "b": (SALES_PROFILE, SALES_ROLE, staff | {"Sales_Reader", "group:Sales_Bundle"}),
        }
        assert access_problems(expected, org_access(org)) == []
        gone = next(
            x["Id"]
            for x in org.org.records["PermissionSetAssignment"].values()
            if x.get("PermissionSetGroupId") is not None
        )
        org.org.delete("PermissionSetAssignment", gone)
        (problem,) = access_problems(expected, org_access(org))
        assert problem.startswith("b: has")
    assert access_problems({**expected, "c": expected["a"]}, {})[-1] == "c: 0 Salesforce users"
    doubled = {"a": [(DEFAULT_PROFILE, None, staff, True)] * 2}
    assert access_problems({"a": expected["a"]}, doubled) == ["a: 2 Salesforce users"]
    assert access_problems({}, {"z": [(DEFAULT_PROFILE, None, staff, True)]}) == [
        "z: not in scope, yet a Salesforce user"
    ]


GOOD = Backfilled(
    in_scope=1000, created=1000, failed=0, seconds=10.0, api_used=30,
    routes={"collections.create": 17, "query": 13}, problems=[],
    batches={"users": (5, 1000), "permission set assignments": (12, 1800)}, concurrency=400,
)  # fmt: skip


@pytest.mark.parametrize(
    ("changed", "missed"),
    [
        ({"problems": ["u: 0 Salesforce users"]}, 0),
        ({"created": 999}, 0),
        ({"api_used": ALLOCATION // 10 + 1}, 1),
        ({"batches": {"users": (8, 1000), "permission set assignments": (12, 1800)}}, 2),  # 8 calls where 5 do
        ({"routes": {"collections.create": 17, "users.create": 1}}, 2),  # one create went alone
        ({"routes": {"collections.create": 20}}, 2),  # calls the count did not see
    ],
)
def test_each_backfill_goal_can_fail(changed: dict[str, object], missed: int) -> None:
    assert all(g.startswith("met") for g in backfill_goals(GOOD))
    goals = backfill_goals(replace(GOOD, **changed))  # type: ignore[arg-type]
    assert [g.startswith("MISSED") for g in goals] == [n == missed for n in range(3)]


def test_a_tiny_backfill_through_the_product_is_counted_and_checked() -> None:
    result = backfill(40, 50, seed=3)
    assert result.in_scope > 30 and result.created == result.in_scope
    users, assignments = result.batches["users"], result.batches["permission set assignments"]
    assert users[1] == result.in_scope and assignments[1] > 0  # every create and assignment was gathered
    assert users[0] + assignments[0] == result.routes["collections.create"]  # as the emulator logged them
    assert "users.create" not in result.routes and result.api_used < 100
    goals = backfill_goals(result)  # the third (calls per batch) depends on timing: not asserted here
    assert goals[0].startswith("met") and goals[1].startswith("met"), goals
