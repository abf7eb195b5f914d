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


def test_a_step_that_grew_while_azurite_stalled_is_offered_once_more() -> None:
    """Azurite's queue GC stops it answering for 2-3 s every 60 s; a step that grows across such a
    stall says nothing about the product. It is offered again, once: the second offer decides."""
    from bench.load import STALL_S, Offer, offer_again

    def step(depths: list[int], stall_s: float, drain_s: float = 1.0, again: bool = False) -> Offer:
        return Offer(40.0, [object()] * 400, depths, drain_s, 10.0, stall_s, again)  # type: ignore[list-item]

    grew = [5, 6, 130, 120, 110]
    assert offer_again(step(grew, STALL_S + 1.6))
    assert not offer_again(step(grew, STALL_S + 1.6, again=True))  # only once
    assert not offer_again(step(grew, 0.2))  # grew with Azurite answering: the product's verdict
    assert not offer_again(step([5, 6, 4, 5, 6], STALL_S + 1.6))  # flat despite the stall
    assert offer_again(step([5, 6, 4, 5, 6], STALL_S + 0.5, drain_s=5.0))  # a stall in the drain counts too
