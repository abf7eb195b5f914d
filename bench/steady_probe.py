"""Benchmark 1's steady state alone, at chosen rates for a chosen time: where the full run's 8 s
steps judge a rate flat or growing, this holds each rate longer and prints the queue depth sampled
every half second and each process's cores, so two commits can be compared at saturation.

    python -m bench.steady_probe [--rates 45,55] [--seconds 24]

The cluster is benchmark 1's (8,000 users, two host stand-ins, Azurite and the emulators); first
contact links 20 changes a second for 20 s, then benchmark 1's first pass and warm-up. Every offer is
bounded in time and every wait for empty queues in time.
"""

from __future__ import annotations

import argparse
import time

from bench import load
from bench.cluster import Cluster, ClusterConfig
from bench.common import UNGUARDED


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rates", default="45,55", help="changes a second, comma-separated")
    parser.add_argument("--seconds", type=float, default=24.0, help="how long each rate is offered")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    mode = load.Mode(False)
    config = ClusterConfig(users=8_000, hosts=load.HOSTS, target_extra=UNGUARDED, visibility_timeout_s=None)
    with Cluster(config) as cluster:
        load.start(cluster)
        depth = load.Depth(cluster.env["AzureWebJobsStorage"])
        try:
            tenant = load.Tenant(cluster, seed=3)
            load.offer(tenant, depth, load.FIRST_CONTACT, False, 20.0, 20.0, drain_limit_s=60)
            load.first_pass(cluster, tenant, depth, mode)
            load.offer(tenant, depth, load.STEADY, True, 10.0, mode.warmup_s)
            depth.wait_empty(60)
            for rate in rates:
                before = cluster.cpu()
                started = time.perf_counter()
                step = load.offer(tenant, depth, load.STEADY, True, rate, args.seconds)
                wall = time.perf_counter() - started
                cores = {k: round((v - before.get(k, 0.0)) / wall, 2) for k, v in cluster.cpu().items()}
                tenant.settled(step.changes)
                mean = sum(step.depths) / max(len(step.depths), 1)
                print(f"offered {rate:.0f}/s for {args.seconds:.0f} s: achieved {step.achieved:.0f}/s, depth mean "
                      f"{mean:.0f}, end {step.depths[-1] if step.depths else 0}, samples {step.depths}; drained "
                      f"{step.drain_s:.1f} s after; Azurite's longest stall {step.slowest_sample_s:.1f} s; "
                      f"cores {cores} (all {sum(cores.values()):.2f})",
                      flush=True)  # fmt: skip
                depth.wait_empty(60)
        finally:
            depth.close()


if __name__ == "__main__":
    main()
