"""One reconciliation measurement in its own process (so CPU time and peak RSS are its own).

    python -m bench.scale_child dry-run|apply|floor     (settings from the environment)

Prints one JSON line: wall and CPU seconds, peak RSS, and what the run found.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

from shared import bootstrap
from shared.services.reconcile import BASE_FIELDS, LIST_LIMIT


async def reconcile(mode: str) -> dict[str, Any]:
    svc = bootstrap.init()
    try:
        await svc.ensure_storage()
        await svc.reports.ensure()
        summary, records = await svc.reconciler.run(mode)
        return {
            "entra_users": summary.entra_users,
            "in_scope": summary.entra_in_scope,
            "auth0_users": summary.auth0_users,
            "auth0_read": summary.auth0_read,
            "counts": summary.counts,
            "enqueued": summary.enqueued,
            "drifted": sorted({r.entra_id for r in records if r.entra_id}),
            "phases": summary.timings,
        }
    finally:
        await svc.aclose()


async def read_floor() -> dict[str, Any]:
    """Page both sides with the reconciler's own adapter calls, and nothing else."""
    svc = bootstrap.init()
    try:
        await svc.ensure_storage()
        rec = svc.reconciler
        links = [link async for link in svc.links.all()]
        role_ids = await svc.target.role_ids(sorted(svc.mapping.managed_roles))
        holders = [await svc.target.role_members(rid) for rid in role_ids.values()]
        groups = await svc.source.relevant_memberships()
        total = await svc.target.count_users()
        fields = sorted({*BASE_FIELDS, *(p.split(".", 1)[0] for p in rec.paths)})
        users = svc.target.export_users(fields) if total > LIST_LIMIT else svc.target.list_users(fields)
        accounts = 0
        async for _user in users:
            accounts += 1
        entra = 0
        async for page in svc.source.list_users():
            entra += len(page)
        return {"links": len(links), "role_holders": sum(map(len, holders)), "grouped": len(groups),
                "auth0_users": accounts, "entra_users": entra}  # fmt: skip
    finally:
        await svc.aclose()


def peak_rss_mb() -> float:
    """This process's own peak resident set. ``ru_maxrss`` would not do: Linux carries it over from
    before exec, so a child started by a parent that holds a 100,000-user sandbox reports the
    parent's size. ``VmHWM`` belongs to the new address space."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    mode = sys.argv[1]
    wall = time.perf_counter()
    found = asyncio.run(read_floor() if mode == "floor" else reconcile(mode))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    found.update(
        wall_s=time.perf_counter() - wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=peak_rss_mb(),
    )
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
