"""The propagation benchmark's pool of users: who the driver may change next."""

from __future__ import annotations

from typing import Any

from bench.load import STEADY, Change, Tenant

STAFF, SALES = "g-staff", "g-sales"


class FakeGraph:
    """The Graph emulator's control routes as the driver uses them: a snapshot, and writes recorded."""

    def __init__(self, users: list[str]):
        self.users = dict.fromkeys(users, True)
        self.writes: list[tuple[str, str, Any]] = []

    def control(self, method: str, path: str, body: Any = None) -> Any:
        if path == "/_control/snapshot/full":
            users = [{"id": u, "accountEnabled": on, "userType": "Member"} for u, on in self.users.items()]
            return {"dump": {"users": users, "members": {STAFF: [], SALES: []}}}
        self.writes.append((method, path, body))
        if path == "/_control/users" and body.get("accountEnabled") is False:
            self.users[body["id"]] = False
        return {}


class FakeCluster:
    def __init__(self, users: list[str]):
        self.graph = FakeGraph(users)
        self.group_ids = [STAFF, SALES, "g-other"]


def test_no_change_lands_on_a_user_a_leaver_disabled() -> None:
    """A mover's user who then left in the same batch went back to the pool, so later changes (later
    "leavers" too) landed on a disabled account, which the product rightly skips."""
    cluster = FakeCluster([f"u{i}" for i in range(6)])
    tenant = Tenant(cluster, seed=5)  # type: ignore[arg-type]
    tenant.linked = list(tenant.fresh)
    disabled: set[str] = set()
    for _batch in range(40):
        batch: list[Change] = []
        for _ in range(5):
            change = tenant.plan(STEADY, steady=True)
            if change is None:
                continue
            assert change.user not in disabled, f"a {change.kind} on {change.user}, whom a leaver disabled"
            tenant.apply(change)
            batch.append(change)
        disabled |= {c.user for c in batch if c.kind == "leaver"}
        tenant.settled(batch)
        assert not disabled & set(tenant.linked)
        if not tenant.linked:
            break
    assert disabled, "the mix made no leaver: the test proved nothing"
    assert all(not cluster.graph.users[u] for u in disabled)
