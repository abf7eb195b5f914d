"""The inbound endpoint benchmark's own logic: the requests it sends are ones Entra would send and
the endpoint can take, its steady phase is an open loop, its initial push adds every member once,
its mapping is one the product loads, and it counts a user converged only when every mapped field
and role is there."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from bench.inbox import (
    ENTERPRISE,
    LEVELS,
    MEMBERS_PER_PATCH,
    MIX,
    ROLES,
    SOURCE,
    Convergence,
    Level,
    Mode,
    Pace,
    Pool,
    Push,
    Request,
    Results,
    Sent,
    auth0_converged,
    groups_of,
    initial_push,
    mapping,
    person,
    report,
    roles_of,
    scim_converged,
    steady,
)
from shared.mapping.load import parse_mapping
from tests.support import RecordingClock

pytestmark = pytest.mark.timeout(60)


def _pool(users: int = 30, groups: int = 3) -> Pool:
    pool = Pool(seed=3, first_number=users)
    for n in range(users):
        pool.add(n, f"u{n}")
    pool.groups = {f"g{i}": {f"u{n}" for n in range(users) if n % groups == i} for i in range(groups)}
    return pool


def test_the_mix_sends_only_requests_the_pool_makes_sense_of() -> None:
    pool = _pool()
    members = {g: set(m) for g, m in pool.groups.items()}  # the test's own account of who is where
    known = {u.id for u in pool.users}
    names = {u.user_name for u in pool.users}
    kinds: Counter[str] = Counter()
    for _ in range(3_000):
        request = pool.next()
        kinds[request.kind] += 1
        target = request.path.rsplit("/", 1)[-1]
        if request.kind == "POST user":
            assert request.body["userName"] not in names, "a create repeated a userName"
            names.add(request.body["userName"])
            pool.add(request.number, f"new{request.number}")  # as when its 201 comes back
            known.add(f"new{request.number}")
        elif request.kind in ("GET by id", "PATCH user"):
            assert target in known
        elif request.kind == "PATCH member add":
            (added,) = request.body["Operations"][0]["value"]
            assert added["value"] in known and added["value"] not in members[target]
            members[target].add(added["value"])
        elif request.kind == "PATCH member remove":
            path = request.body["Operations"][0]["path"]
            removed = path.split('"')[1]
            assert path == f'members[value eq "{removed}"]' and removed in members[target]
            members[target].discard(removed)
        else:
            assert request.kind == "GET filter" and request.method == "GET"
            by, _, value = request.query["filter"].partition(" eq ")
            assert by in ("userName", "externalId") and value.startswith('"')
    assert members == pool.groups
    for kind, share in MIX:
        assert abs(kinds[kind] / 3_000 - share) < 0.04, (kind, kinds)


class Silent:
    """An endpoint that never answers."""

    def __init__(self) -> None:
        self.started = 0

    async def send(self, request: Request, record: Sent) -> dict[str, Any] | None:
        self.started += 1
        record.sent = 1.0
        await asyncio.Event().wait()
        return None


def test_the_steady_phase_sends_on_schedule_while_nothing_is_answered() -> None:
    """Open loop: an endpoint that answers nothing does not hold back the offer; beyond the
    in-flight cap requests are shed and counted, and the unanswered are given up as timeouts."""
    endpoint = Silent()
    results = asyncio.run(steady(endpoint, _pool(), rate=500.0, seconds=0.1, in_flight=40, settle_s=0.1))
    assert len(results.requests) == 50 and endpoint.started == 40
    assert Counter(r.status for r in results.requests) == {"timeout": 40, "shed": 10}
    assert all(r.sent for r in results.requests if r.status == "timeout")
    assert results.errors() == {"timeout": 40, "shed": 10} and results.latencies() == []


class Recorder:
    """An endpoint that creates what it is sent and records the requests."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def send(self, request: Request, record: Sent) -> dict[str, Any] | None:
        self.requests.append(request)
        record.status = "201" if request.method == "POST" else "200"
        if request.method == "POST":
            return {"id": f"id-{len(self.requests)}"}
        return {"totalResults": 0, "Resources": []} if request.method == "GET" else None


def test_the_initial_push_adds_every_member_once_in_bounded_patches() -> None:
    endpoint = Recorder()
    push = Push(Results(), {}, {}, {})
    asyncio.run(initial_push(endpoint, push, users=120, groups=5, limit_s=30.0))
    assert sorted(push.users) == list(range(120)) and len(push.groups) == 5
    added: Counter[tuple[str, str]] = Counter()
    for request in endpoint.requests:
        if request.method == "PATCH":
            values = request.body["Operations"][0]["value"]
            assert 0 < len(values) <= MEMBERS_PER_PATCH
            added.update((request.path.rsplit("/", 1)[1], v["value"]) for v in values)
    expected = {(push.groups[name], push.users[n]) for n in range(120) for name in groups_of(n, 5)}
    assert set(added) == expected and set(added.values()) == {1}
    creates = [r for r in endpoint.requests if r.kind == "POST"]
    assert len(creates) == 125  # each user and group looked up first, then created once


def test_the_paced_push_starts_at_most_its_rate_and_a_slow_spell_builds_no_burst() -> None:
    clock = RecordingClock()
    pace = Pace(4.0, clock=clock)
    starts: list[float] = []

    async def go(count: int) -> None:
        for _ in range(count):
            await pace.turn()
            starts.append(clock.now())

    asyncio.run(go(5))
    assert starts == [1000.0, 1000.25, 1000.5, 1000.75, 1001.0]
    clock.advance(10.0)  # the endpoint was slow: the slots of those 10 s are not owed afterwards
    asyncio.run(go(3))
    assert starts[5:] == [1011.0, 1011.25, 1011.5]


def test_a_paced_push_still_pushes_everything_in_order() -> None:
    """Every request of the push waits for its turn: 20 users and 2 groups are 46 requests at 8 a
    second (a look-up and a create each, one member PATCH per group), 5.625 s of injected clock."""
    clock = RecordingClock()
    endpoint = Recorder()
    push = Push(Results(), {}, {}, {})
    asyncio.run(initial_push(endpoint, push, users=20, groups=2, limit_s=30.0,
                             pace=Pace(8.0, clock=clock)))  # fmt: skip
    assert len(push.users) == 20 and len(push.groups) == 2
    assert len(endpoint.requests) == 46 and clock.now() == pytest.approx(1000.0 + 45 / 8)
    with pytest.raises(ValueError, match="positive"):
        Pace(0.0)


def test_memberships_and_roles() -> None:
    assert groups_of(0, 50) == ["Staff", "Sales", "Team 00"] and groups_of(1, 50) == ["Staff", "Team 01"]
    assert roles_of(groups_of(0, 50)) == ROLES and roles_of(groups_of(1, 50)) == {"Employee"}


def test_the_mapping_loads_with_hr_push_feeding_both_targets() -> None:
    loaded = parse_mapping(mapping(["g1"], "http://127.0.0.1:9/scim/v2"))
    assert {name: t.source for name, t in loaded.targets.items()} == {"auth0": SOURCE, "scim:crm": SOURCE}


def _account(n: int, **changes: Any) -> dict[str, Any]:
    body = person(n)
    department = body[ENTERPRISE]["department"]
    account = {
        "user_id": f"auth0|u{n}", "email": body["userName"], "name": body["displayName"], "given_name": "Bench",
        "family_name": body["name"]["familyName"], "user_metadata": {"department": department},
    }  # fmt: skip
    return {**account, **changes}


def test_a_user_counts_as_converged_on_auth0_only_with_every_field_and_exactly_its_roles() -> None:
    roles = [
        {"id": "r-e", "name": "Employee"},
        {"id": "r-sr", "name": "Sales Reader"},
        {"id": "r-sw", "name": "Sales Writer"},
    ]
    users = [_account(0), _account(1), _account(2, user_metadata={}), _account(3), _account(4, name="Someone")]
    user_roles = {
        "auth0|u0": ["r-e", "r-sr", "r-sw"],  # converged: in Staff and Sales
        "auth0|u1": ["r-e", "r-sr"],  # a role of Sales, which it is not in
        "auth0|u2": ["r-e"],  # no department
        "auth0|u3": [],  # no role yet
        "auth0|u4": ["r-e"],  # another name
    }
    dump = {"users": users, "roles": roles, "user_roles": user_roles}
    assert auth0_converged(range(6), dump, groups=5) == 1  # and u5 has no account at all
    user_roles["auth0|u3"] = ["r-e"]
    assert auth0_converged(range(6), dump, groups=5) == 2


def test_a_user_counts_as_converged_on_the_scim_app_only_active_with_its_fields_and_in_staff() -> None:
    def user(n: int, **changes: Any) -> dict[str, Any]:
        body = person(n)
        base = {"id": f"s{n}", "userName": body["userName"], "displayName": body["displayName"], "active": True,
                "emails": [{"type": "work", "value": body["userName"]}]}  # fmt: skip
        return {**base, **changes}

    users = [user(0), user(1, active=False), user(2, displayName="x"), user(3), user(4, emails=[])]
    assert scim_converged(range(5), users, staff={"s0", "s1", "s2", "s4"}) == 1  # s3 is not in Staff


def _answered(kind: str, latency_s: float, count: int, status: str = "200") -> list[Sent]:
    return [Sent(kind, due=10.0, sent=10.0, done=10.0 + latency_s, status=status) for _ in range(count)]


def test_the_report_judges_each_steady_minute_on_its_own() -> None:
    """The minute at Entra's peak and the minute at the goal's rate each get their row, their kinds
    table and their verdict: a fast first minute does not hide a slow second one, nor an error."""
    assert LEVELS[0] == pytest.approx(1_000 / 60) and LEVELS[-1] == 100.0
    calm = Results(_answered("GET filter", 0.02, 200), seconds=60.0)
    busy = Results([*_answered("PATCH user", 0.05, 300), *_answered("GET filter", 3.0, 10),
                    *_answered("POST user", 0.04, 1, status="412")], seconds=60.0)  # fmt: skip
    levels = [Level(LEVELS[0], calm, {"host-0": 1.0}), Level(LEVELS[1], busy, {"host-0": 6.0, "azurite": 2.0})]
    push = Push(Results(), {0: "u0"}, {"Staff": "g0"}, {"Staff": [0]})
    section = report(Mode(True), push, Convergence(done_at=12.0), Counter(), Counter(), 1.0, levels, 4.0, 99.0)
    assert section.goals[0].startswith("met: p99 <= 100 ms at 17 requests/s")
    assert section.goals[1].startswith("MISSED: p99 <= 100 ms at 100 requests/s") and "412 x1" in section.goals[1]
    text = section.markdown()
    assert "Steady traffic at 17 requests/s, each request kind" in text
    assert "Steady traffic at 100 requests/s, each request kind" in text
    assert "converged 4.0 s after the workers started again" in text
