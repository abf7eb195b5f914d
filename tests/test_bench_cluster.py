"""The process cluster the load benchmark runs on: it starts, survives a host killed with -9, runs a
tiny load round whose changes are read as converged from the Auth0 emulator's own write log, and
leaves no process behind."""

from __future__ import annotations

import os
import time

import pytest

from bench.cluster import Cluster, ClusterConfig
from bench.load import Depth, Observed, Tenant, offer, start

pytestmark = pytest.mark.timeout(120)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie still answers signal 0 until its parent reaps it
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_load_round_converges_and_the_cluster_cleans_up() -> None:
    with Cluster(ClusterConfig(users=40, hosts=2)) as cluster:
        pids = cluster.processes()
        assert set(pids) == {"graph", "auth0", "azurite", "host-0", "host-1"}
        assert len(set(pids.values())) == len(pids)  # each piece in its own process
        cluster.kill_host(1)
        assert cluster.restart_host(1).pid != pids["host-1"]
        start(cluster)
        depth = Depth(cluster.env["AzureWebJobsStorage"])
        try:
            since = time.time()
            run = offer(Tenant(cluster, seed=1), depth, (("mover", 0.5), ("leaver", 0.5)), False, 4.0, 1.0)
            assert run.changes
            observed = Observed()
            for _ in range(60):  # at most about 30 s
                observed.gather(cluster, since)
                observed.resolve(run.changes, cluster.group_ids[1], scim=False)
                if all(c.converged for c in run.changes):
                    break
                time.sleep(0.5)
        finally:
            depth.close()
        for change in run.changes:
            assert change.notified >= change.at, change  # the webhook received its notification
            assert change.converged >= change.at, change  # and its writes are in the Auth0 log
        assert any(key.startswith("table ") for key in cluster.webhook_host.call("stats")["storage"])
        pids = cluster.processes()
    for name, pid in pids.items():
        assert _gone(pid), f"{name} (pid {pid}) outlived the cluster"
