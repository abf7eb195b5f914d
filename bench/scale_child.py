"""One reconciliation measurement in its own process (so CPU time and peak RSS are its own).

    python -m bench.scale_child dry-run|apply|floor|preview     (settings from the environment;
                                                               preview: PREVIEW_MAPPING_FILE)

Prints one JSON line: wall and CPU seconds, peak RSS, and what the run found.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from typing import Any

from shared import bootstrap
from shared.mapping.load import load_mapping
from shared.services.preview import preview_target


async def reconcile(mode: str) -> dict[str, Any]:
    svc = bootstrap.init()
    try:
        await svc.ensure_storage()
        if svc.reports is not None:
            await svc.reports.ensure()
        summary, records = await svc.reconcilers["auth0"].run(mode)
        return {
            "entra_users": summary.entra_users,
            "in_scope": summary.entra_in_scope,
            "auth0_users": summary.accounts,
            "auth0_read": summary.read_by,
            "counts": summary.counts,
            "enqueued": summary.enqueued,
            "drifted": sorted({r.identity for r in records if r.identity}),
            "phases": summary.timings,
        }
    finally:
        await svc.aclose()


async def read_floor() -> dict[str, Any]:
    """Page both sides with the reconciler's own port calls (links, every account, every identity),
    and nothing else: no matching, planning or report."""
    svc = bootstrap.init()
    try:
        await svc.ensure_storage()
        job = svc.jobs["auth0"]
        links = [link async for link in job.links.all()]
        accounts = holders = 0
        async for account in job.target.accounts():
            accounts += 1
            holders += bool(account.entitlements)
        entra = 0
        async for page in svc.source.identities():
            entra += len(page)
        return {"links": len(links), "role_holders": holders, "auth0_users": accounts, "entra_users": entra}
    finally:
        await svc.aclose()


async def preview() -> dict[str, Any]:
    """``entra-sync preview``'s work for the file PREVIEW_MAPPING_FILE, against the Auth0 target."""
    svc = bootstrap.init()
    after = bootstrap.build(svc.settings, load_mapping(os.environ["PREVIEW_MAPPING_FILE"]))
    try:
        await svc.ensure_storage()
        seen = await preview_target(after.reconcilers["auth0"])
        return {
            "identities": seen.identities, "changed": seen.changed, "created": seen.created,
            "deprovisioned": seen.deprovisioned, "fields": dict(seen.fields), "guard": seen.guard,
        }  # fmt: skip
    finally:
        await after.aclose()
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
    work = {"floor": read_floor, "preview": preview}.get(mode)
    found = asyncio.run(work() if work is not None else reconcile(mode))
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
