"""``doctor``: the deployment checked from outside (:mod:`shared.services.doctor`), each finding on
a line, each missing piece followed by its fix. Exit 2 when something is missing, 1 when something
could not be asked, 0 when all is in place."""

from __future__ import annotations

import asyncio
import json

from shared import bootstrap
from shared.services.doctor import Finding, diagnose, exit_code
from shared.sources.graph.client import graph_client

MARKS = {"ok": "ok", "missing": "MISSING", "unknown": "UNKNOWN", "skipped": "skipped"}


def cmd_doctor(as_json: bool = False) -> int:
    return asyncio.run(_doctor(as_json))


async def _doctor(as_json: bool) -> int:
    app = bootstrap.init()  # no storage is created: a missing queue or table is a finding
    try:
        findings = await diagnose(app, graph_client(app.settings), app.clock.now())
    finally:
        await app.aclose()
    if as_json:
        print(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        for finding in findings:
            print(line(finding))
    return exit_code(findings)


def line(finding: Finding) -> str:
    text = f"{MARKS[finding.state]:<8} {finding.check}: {finding.detail}"
    return text + (f"\n{'':<8}   fix: {finding.fix}" if finding.fix else "")
