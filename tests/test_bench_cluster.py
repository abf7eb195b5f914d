"""The process cluster the load benchmarks run on: it starts, converges a change read from the
Auth0 emulator's own write log, survives a host killed with -9, and leaves no process behind."""

from __future__ import annotations

import os
import time

import pytest

from bench.cluster import Cluster, ClusterConfig

pytestmark = pytest.mark.timeout(120)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers signal 0 until its parent reaps it.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_cluster_converges_a_change_and_cleans_up() -> None:
    with Cluster(ClusterConfig(users=40, hosts=2)) as cluster:
        pids = cluster.processes()
        assert set(pids) == {"graph", "auth0", "azurite", "host-0", "host-1"}
        assert len(set(pids.values())) == len(pids)  # each piece in its own process
        cluster.run_timer("subscriptions_renew")
        users = cluster.graph.control("GET", "/_control/snapshot/full")["dump"]["users"]
        mover = next(u for u in users if u["accountEnabled"] and u.get("userType") == "Member")
        cluster.kill_host(1)
        restarted = cluster.restart_host(1)
        assert restarted.pid != pids["host-1"]
        started = time.time()
        cluster.graph.control("PATCH", "/_control/users", {"id": mover["id"], "department": "Moved by the test"})
        patched = []
        for _ in range(300):  # at most 30 s
            rows = cluster.auth0.entries(since=started)
            patched = [r for r in rows if r[1] == "PATCH" and mover["id"] in r[2] and r[5]]
            if patched:
                break
            time.sleep(0.1)
        assert patched, "the mover's PATCH never reached the Auth0 emulator's write log"
        events = cluster.webhook_host.call("events")["events"]
        assert any(e[0] == "http" and e[1] == "graph_webhook" and mover["id"] in e[-1] for e in events)
        storage = cluster.webhook_host.call("stats")["storage"]
        assert any(key.startswith("table ") for key in storage)
        pids = cluster.processes()
    for name, pid in pids.items():
        assert _gone(pid), f"{name} (pid {pid}) outlived the cluster"
