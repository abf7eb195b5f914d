"""The process cluster the load benchmark runs on: it starts, survives a host killed with -9, runs a
tiny load round whose changes are read as converged from the Auth0 emulator's own write log, and
leaves no process behind, even when stopping it is interrupted part-way.

Its hosts answer ``kill -USR1`` (what anyone on the machine sends for a stack dump) with their
stacks in their logs and keep running, even while they are still importing: that signal's default
action ends a process silently, and a watcher that sent it to every ``bench.cluster host`` process
on the machine once made this test fail with "the process ended during start" and an empty log."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from bench.cluster import Child, Cluster, ClusterConfig
from bench.load import Depth, Observed, Tenant, offer, start

pytestmark = pytest.mark.timeout(240)

DUMP = "most recent call first"  # faulthandler's heading of each thread's stack


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


def _log(cluster: Cluster, child: Child) -> str:
    return (cluster.dir / f"{child.name}.log").read_text(encoding="utf-8", errors="replace")


def _restart_asking_for_stacks(cluster: Cluster, index: int) -> Child:
    """Restart host ``index`` and send it SIGUSR1 as soon as its process exists (while it imports)."""
    old = cluster.hosts[index]
    sent = threading.Event()

    def ask() -> None:
        for _ in range(3000):  # at most about 30 s
            child = cluster.hosts[index]
            if child is not old and child.proc is not None:
                os.kill(child.pid, signal.SIGUSR1)
                sent.set()
                return
            time.sleep(0.01)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    fresh = cluster.restart_host(index)
    asker.join(35)
    assert sent.is_set()
    return fresh


def _interrupt_after_stopping(child: Child) -> None:
    """Make stopping ``child`` raise once it is stopped, as a test's timeout firing mid-stop does."""
    stop = child.stop

    def stop_then_interrupted(timeout_s: float = 20.0) -> None:
        stop(timeout_s)
        raise TimeoutError("interrupted")

    child.stop = stop_then_interrupted  # type: ignore[method-assign]


def _load_round(cluster: Cluster) -> dict[str, int]:
    """The checks on a running cluster; the pid of each of its processes at the end."""
    pids = cluster.processes()
    assert set(pids) == {"graph", "auth0", "azurite", "host-0", "host-1"}
    assert len(set(pids.values())) == len(pids)  # each piece in its own process

    webhook = cluster.webhook_host
    os.kill(webhook.pid, signal.SIGUSR1)  # a stack dump, asked of a running host
    assert webhook.call("ping") == {"ok": True}
    assert DUMP in _log(cluster, webhook)

    cluster.kill_host(1)
    with pytest.raises(RuntimeError, match=r"host-1: the process ended before ping \(killed by SIGKILL\)"):
        cluster.hosts[1].call("ping")
    restarted = _restart_asking_for_stacks(cluster, 1)
    assert restarted.pid != pids["host-1"]
    assert restarted.call("ping") == {"ok": True}
    assert DUMP in _log(cluster, restarted)

    start(cluster)
    depth = Depth(cluster.env["AzureWebJobsStorage"])
    try:
        since = time.time()
        run = offer(Tenant(cluster, seed=1), depth, (("mover", 0.5), ("leaver", 0.5)), False, 4.0, 1.0)
        assert run.changes
        observed = Observed()
        for _ in range(180):  # at most about 90 s: a leaver took over 30 s beside another cluster and busy loops
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
    return cluster.processes()


def test_a_load_round_converges_and_the_cluster_cleans_up() -> None:
    cluster = Cluster(ClusterConfig(users=40, hosts=2)).start()
    try:
        pids = _load_round(cluster)
    except BaseException:
        cluster.stop()
        raise
    _interrupt_after_stopping(cluster.webhook_host)  # emulators and Azurite are stopped after the hosts
    with pytest.raises(TimeoutError, match="interrupted"):
        cluster.stop()
    for name, pid in pids.items():
        assert _gone(pid), f"{name} (pid {pid}) outlived the cluster"
