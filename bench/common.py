"""What every benchmark shares: the sandbox world, the mapping, figures and their tables."""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.storage.queue import TextBase64DecodePolicy

from sandbox.mapping import sandbox_mapping, sandbox_mapping_v2, three_role_grants
from sandbox.stack import Stack, empty_storage
from shared import bootstrap, names
from shared.bootstrap import App
from shared.core.work import WorkItem, user_item
from shared.settings import Settings

REPO = Path(__file__).resolve().parent.parent
ROLES = ("Employee", "Sales Reader", "Sales Writer")
# For load benchmarks: a steady synthetic mix (a fifth of it leavers) is no mass event to hold.
UNGUARDED = "guard: {max_deprovisions: 1000000, max_attribute_changes: 1000000, min_changes_for_share: 1000000}"


@dataclass
class Sandbox:
    """Azurite and both emulators on loopback, a seeded tenant, its mapping file and app settings."""

    users: int
    groups: int = 6
    seed: int = 7
    mapping_extra: str = ""
    # More target sections (a version 2 file, Auth0 first) given the group ids, and their settings.
    others: Callable[[list[str]], str] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    stack: Stack = field(init=False)
    env: dict[str, str] = field(init=False)
    group_ids: list[str] = field(init=False)
    _tmp: tempfile.TemporaryDirectory[str] = field(init=False)

    def __enter__(self) -> Sandbox:
        self._tmp = tempfile.TemporaryDirectory(prefix="entra-sync-bench-")
        self.stack = Stack().start()
        try:
            self.stack.seed(self.users, self.groups, self.seed)
            for role in ROLES:
                self.stack.auth0.add_role(role)
            dump = self.stack.graph.snapshot(full=True)["dump"]
            self.group_ids = [g["id"] for g in dump["groups"]]
            path = Path(self._tmp.name) / "mapping.yaml"
            grants = three_role_grants(self.group_ids)
            if self.others is None:
                path.write_text(sandbox_mapping(grants, extra=self.mapping_extra))
            else:
                others = self.others(self.group_ids)
                path.write_text(sandbox_mapping_v2(grants, others=others, extra=self.mapping_extra))
            self.env = {**self.stack.env(), "SYNC_MAPPING_FILE": str(path), **self.extra_env}
        except BaseException:
            self.stack.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.stop()
        self._tmp.cleanup()

    @property
    def graph(self) -> Any:
        return self.stack.graph

    @property
    def auth0(self) -> Any:
        return self.stack.auth0

    def services(self, **overrides: Any) -> App:
        return bootstrap.init(Settings.from_env(self.env), **overrides)

    def members(self) -> list[dict[str, Any]]:
        """Enabled Member users, in a stable order."""
        dump = self.graph.snapshot(full=True)["dump"]
        return [u for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"]


async def prime(svc: App) -> None:
    """Storage ready and empty, delta cursors at "now" (as after a finished backfill)."""
    await empty_storage(svc)
    for resource in ("users", "groups"):
        await svc.state.put("delta", resource, {"link": await svc.source.latest_delta_link(resource)})


# -- figures ------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.0f} ms" if value >= 0.01 else f"{value * 1000:.1f} ms"


def pcts(samples: Sequence[float]) -> list[str]:
    return [str(len(samples)), *(ms(percentile(samples, p)) for p in (50, 95, 99)), ms(max(samples, default=math.nan))]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Report:
    """One benchmark's section of BENCHMARKS.md."""

    title: str
    inputs: list[str] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)
    goals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        if self.inputs:
            out += ["Inputs: " + "; ".join(self.inputs) + ".", ""]
        for caption, table in self.tables:
            if caption:
                out += [f"**{caption}**", ""]
            out += [table.markdown(), ""]
        if self.goals:
            out += ["Goals:", "", *(f"- {g}" for g in self.goals), ""]
        if self.notes:
            out += [*(f"- {n}" for n in self.notes), ""]
        out.append(f"_Benchmark wall time {self.seconds:.0f} s._")
        return "\n".join(out) + "\n"


def verdict(ok: bool, text: str) -> str:
    return f"{'met' if ok else 'MISSED'}: {text}"


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "ram": ram,
        "python": sys.version.split()[0],
        "os": platform.platform(),
    }


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            [shutil.which("git") or "git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "shared", "functions", "host.json", "function_app.py")
    return commit + (" (plus uncommitted changes to the product code)" if dirty else "")


def lines(items: Iterable[str]) -> str:
    return "\n".join(items)


async def take_queued(svc: App, limit: int = 10_000) -> list[WorkItem]:
    """Remove and return the work items waiting on the lane and the work queue (at most ``limit``)."""
    items: list[WorkItem] = []
    for queue in (names.LANE_QUEUE, names.WORK_QUEUE):
        items += await _take(svc, queue, limit - len(items))
    return items


async def _take(svc: App, queue: str, limit: int) -> list[WorkItem]:
    client = svc.queues.get_queue_client(queue, message_decode_policy=TextBase64DecodePolicy())
    items: list[WorkItem] = []
    async with client:
        while len(items) < limit:
            batch = [
                m async for m in client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=30)
            ]
            if not batch:
                break
            for m in batch:
                items.append(WorkItem.from_json(m.content))
                await client.delete_message(m)
    return items


Count = Callable[[str, list[WorkItem], bool], Awaitable[None]]


async def run_items(svc: App, items: Sequence[WorkItem], follow: bool) -> None:
    """Each item through the worker's dispatcher; with ``follow``, the user items they fan out to."""
    for item in items:
        await svc.dispatcher.run(item)
    if follow:
        for item in await take_queued(svc):
            await svc.dispatcher.run(item)


async def lifecycle(box: Sandbox, svc: App, people: Sequence[dict[str, Any]], count: Count, tag: str = "") -> None:
    """The five lifecycle events, each handed to ``count`` (event, items, follow the fan-out): a
    joiner added to the first group, a mover (one attribute), a group change (``people[1]`` joins
    the second group, the groups delta primed first so earlier changes are not this one's), a
    leaver, and a replay of the mover. ``people``: mover, changer, leaver; ``tag`` tells runs apart."""
    mover, changer, leaver = people
    staff, sales = box.group_ids[0], box.group_ids[1]
    hire = box.graph.create_user(
        displayName=f"Bench Joiner{tag}", givenName="Bench", surname="Joiner",
        mail=f"bench.joiner{tag}@sandbox.example", userPrincipalName=f"bench.joiner{tag}@sandbox.onmicrosoft.com",
        department="Research", accountEnabled=True,
    )  # fmt: skip
    box.graph.add_member(staff, hire["id"])
    await count("joiner", [user_item(hire["id"], "notification")], False)
    box.graph.update_user(mover["id"], department=f"Moved Department{tag}")
    await count("mover (one attribute)", [user_item(mover["id"], "notification")], False)
    await svc.state.put("delta", "groups", {"link": await svc.source.latest_delta_link("groups")})
    box.graph.add_member(sales, changer["id"])
    await count("group change", [WorkItem("group", sales, "notification")], True)
    box.graph.update_user(leaver["id"], accountEnabled=False)
    await count("leaver", [user_item(leaver["id"], "notification")], False)
    await count("no-op replay", [user_item(mover["id"], "notification")], False)
