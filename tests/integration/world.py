"""A small, complete world for integration tests: Graph and Auth0 emulators, Azurite, a mapping
file tied to the seeded tenant's groups, and the product's services built from real settings."""

from __future__ import annotations

import base64
import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx
from azure.functions.queue import QueueMessage
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from sandbox.auth0 import Auth0Emulator
from sandbox.azurite import Azurite
from sandbox.graph import GraphEmulator
from sandbox.mapping import sandbox_mapping, sandbox_mapping_v2, three_role_grants
from sandbox.stack import empty_storage
from shared import bootstrap, names
from shared.bootstrap import App
from shared.core.work import WorkItem
from shared.settings import Settings
from tests.support import sandbox_env

ROLES = ("Employee", "Sales Reader", "Sales Writer", "Billing Admin")


@dataclass
class World:
    azurite: Azurite
    tmp_path: Path
    users: int = 40
    groups: int = 6
    seed: int = 11
    mapping_extra: str = ""
    deprovision: str = "{action: block, hard_delete: delete}"
    scope: str = "{user_types: [Member]}"
    # A version 2 file when set: these target sections (YAML under ``targets``, GROUPn for the
    # seeded groups' ids) beside the Auth0 one.
    other_targets: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # more app settings (a SCIM target's token)
    graph: GraphEmulator = field(init=False)
    auth0: Auth0Emulator = field(init=False)
    settings: Settings = field(init=False)
    env: dict[str, str] = field(init=False)  # the app settings ``settings`` was read from
    group_ids: list[str] = field(init=False)
    svc: App = field(init=False)

    def start(self, notification_base: str = "http://127.0.0.1:9/api") -> World:
        self.graph = GraphEmulator().start()  # type: ignore[assignment]
        self.auth0 = Auth0Emulator().start()  # type: ignore[assignment]
        self.graph.seed({"users": self.users, "groups": self.groups, "seed": self.seed})
        for role in ROLES:
            self.auth0.add_role(role)
        dump = self.graph.snapshot(full=True)["dump"]
        self.group_ids = [g["id"] for g in dump["groups"]]
        path = self.tmp_path / "mapping.yaml"
        scope = self.scope.replace("GROUP0", self.group_ids[0])
        grants = three_role_grants(self.group_ids)
        if self.other_targets is None:
            text = sandbox_mapping(grants, scope=scope, deprovision=self.deprovision, extra=self.mapping_extra)
        else:
            others = self.other_targets
            for index, gid in reversed(list(enumerate(self.group_ids))):  # GROUP10 before GROUP1
                others = others.replace(f"GROUP{index}", gid)
            text = sandbox_mapping_v2(
                grants, scope=scope, deprovision=self.deprovision, others=others, extra=self.mapping_extra
            )
        path.write_text(text)
        self.configure(notification_base, path)
        return self

    def configure(self, notification_base: str, mapping_path: Path | None = None) -> None:
        env = self.environment(
            GRAPH_NOTIFICATION_URL=f"{notification_base}/graph_webhook",
            GRAPH_LIFECYCLE_URL=f"{notification_base}/graph_lifecycle",
            SYNC_MAPPING_FILE=str(mapping_path or self.tmp_path / "mapping.yaml"),
        )
        self.env = env
        self.settings = Settings.from_env(env)

    def environment(self, **extra: str) -> dict[str, str]:
        """App settings for this world (its emulators, Azurite, its mapping file), as the CLI reads them."""
        extra.setdefault("SYNC_MAPPING_FILE", str(self.tmp_path / "mapping.yaml"))
        extra = {**self.extra_env, **extra}
        return sandbox_env(
            storage=self.azurite.connection_string,
            graph_base_url=self.graph.base_url,
            auth0_base_url=self.auth0.base_url,
            **extra,
        )

    def stop(self) -> None:
        self.graph.stop()
        self.auth0.stop()

    # -- tenant helpers --------------------------------------------------------------------------

    def users_in(self, group_index: int) -> list[str]:
        dump = self.graph.snapshot(full=True)["dump"]
        gid = self.group_ids[group_index]
        return [m for m in dump["members"][gid] if any(u["id"] == m for u in dump["users"])]

    def user(self, user_id: str) -> dict[str, Any]:
        dump = self.graph.snapshot(full=True)["dump"]
        return next(u for u in dump["users"] if u["id"] == user_id)

    def transitive_users(self, group_id: str) -> set[str]:
        dump = self.graph.snapshot(full=True)["dump"]
        groups = {g["id"] for g in dump["groups"]}
        seen: set[str] = set()
        users: set[str] = set()
        todo = [group_id]
        while todo:
            gid = todo.pop()
            if gid in seen:
                continue
            seen.add(gid)
            for member in dump["members"].get(gid, []):
                if member in groups:
                    todo.append(member)
                else:
                    users.add(member)
        return users

    def member_user(self, *, enabled: bool = True, skip: int = 0) -> dict[str, Any]:
        """A Member user (enabled or not) in group 0 and not, even through nesting, in groups 1 and 2."""
        dump = self.graph.snapshot(full=True)["dump"]
        in_0 = self.transitive_users(self.group_ids[0])
        excluded = self.transitive_users(self.group_ids[1]) | self.transitive_users(self.group_ids[2])
        found = [
            u for u in dump["users"]
            if u.get("userType") == "Member" and u["accountEnabled"] is enabled
            and u["id"] in in_0 and u["id"] not in excluded
        ]  # fmt: skip
        if len(found) <= skip:
            raise AssertionError("the seeded tenant has no such user")
        return dict(found[skip])

    def account(self, entra_id: str) -> dict[str, Any] | None:
        return self.auth0.get_user(f"auth0|{entra_id}")

    def grant_role_by_hand(self, user_id: str, role_name: str) -> None:
        """What an Auth0 admin would do: assign a role through the Management API."""
        headers = {"Authorization": f"Bearer {self.auth0.static_token}"}
        roles = httpx.get(f"{self.auth0.base_url}/roles", headers=headers, params={"per_page": 100}).json()
        role_id = next(r["id"] for r in roles if r["name"] == role_name)
        answer = httpx.post(f"{self.auth0.base_url}/users/{user_id}/roles", headers=headers, json={"roles": [role_id]})
        answer.raise_for_status()

    def auth0_writes(self) -> dict[str, int]:
        """Write calls the Auth0 emulator served, per route."""
        return dict(Counter(e.route for e in self.auth0.log.entries() if e.write))

    def auth0_calls(self) -> dict[str, int]:
        """Every Management API call the Auth0 emulator served since its log was cleared, per route."""
        return dict(Counter(e.route for e in self.auth0.log.entries() if e.route.startswith("mgmt.")))


@contextlib.contextmanager
def for_the_cli(world: World, monkeypatch: Any) -> Iterator[World]:
    """``world`` started, with its settings in the environment as an operator's shell has them (the
    CLI reads them there), and stopped after."""
    world.start()
    try:
        for name, value in world.environment().items():
            monkeypatch.setenv(name, value)
        yield world
    finally:
        world.stop()


async def open_services(world: World, keep_storage: bool = False, **overrides: Any) -> App:
    """Fresh services in the running event loop, with empty product tables and queues (unless
    ``keep_storage``: what an earlier scenario left is still there)."""
    svc = bootstrap.init(world.settings, **overrides)
    if keep_storage:
        await svc.ensure_storage()
    else:
        await empty_storage(svc)
    return svc


def message(item: WorkItem | str, dequeue_count: int = 1) -> QueueMessage:
    body = item.to_json() if isinstance(item, WorkItem) else item
    return QueueMessage(id="m-1", body=body.encode(), dequeue_count=dequeue_count)


async def run_worker(indexed: dict[str, Any], item: WorkItem | str, dequeue_count: int = 1) -> None:
    """The item through the function its queue triggers (``sync_lane`` or ``sync_worker``)."""
    lane = isinstance(item, WorkItem) and item.in_lane
    await indexed["sync_lane" if lane else "sync_worker"].get_user_function()(message(item, dequeue_count))


async def queued(svc: App, queue: str = "", take: bool = True) -> list[WorkItem]:
    """The work items waiting on a queue (both the lane and the work queue, the lane's first, when
    none is named): removed from it when ``take``, else peeked (at most 32 a queue)."""
    if not queue:
        return [*await queued(svc, names.LANE_QUEUE, take), *await queued(svc, names.WORK_QUEUE, take)]
    client: QueueClient = svc.queues.get_queue_client(queue, message_decode_policy=TextBase64DecodePolicy())
    items: list[WorkItem] = []
    async with client:
        if not take:
            return [WorkItem.from_json(m.content) for m in await client.peek_messages(max_messages=32)]
        while True:
            batch = [
                m async for m in client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=5)
            ]
            if not batch:
                return items
            for m in batch:
                items.append(WorkItem.from_json(m.content))
                await client.delete_message(m)


async def waiting(svc: App, *queues: str) -> int:
    """Messages on the queues (visible or not): the lane and the work queue when none is named,
    their poison queues when ``poison`` is the one name."""
    if queues == ("poison",):
        queues = (names.LANE_POISON_QUEUE, names.WORK_POISON_QUEUE)
    total = 0
    for queue in queues or (names.LANE_QUEUE, names.WORK_QUEUE):
        async with svc.queues.get_queue_client(queue) as client:
            total += int((await client.get_queue_properties()).approximate_message_count or 0)
    return total


async def drain(indexed: dict[str, Any], svc: App, rounds: int = 5) -> int:
    """Run the worker on everything queued (and what that queues), a bounded number of rounds."""
    done = 0
    for _ in range(rounds):
        items = await queued(svc)
        if not items:
            return done
        for item in items:
            await run_worker(indexed, item)
            done += 1
    return done


def http_request(body: Any = None, params: dict[str, str] | None = None, content_type: str = "application/json",
                 raw: bytes | None = None) -> func.HttpRequest:  # fmt: skip
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return func.HttpRequest(
        method="POST", url="/api/x", headers={"content-type": content_type}, params=params or {}, body=data
    )


async def audit_rows(svc: App) -> list[dict[str, Any]]:
    return await svc.audit.all()


@contextlib.asynccontextmanager
async def services_for(world: World, keep_storage: bool = False, **overrides: Any):  # type: ignore[no-untyped-def]
    svc = await open_services(world, keep_storage, **overrides)
    try:
        yield svc
    finally:
        await svc.aclose()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
