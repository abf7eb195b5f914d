"""Give the Auth0 emulator an account for every in-scope user of the Graph emulator, as a finished
sync would have left it: for reconciliation tests and benchmarks that need a large, in-sync
starting point without syncing 100,000 users one by one first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.auth0 import Auth0Emulator
from sandbox.graph import GraphEmulator
from shared.core.model import Identity, SourceState
from shared.mapping.model import SyncMapping
from shared.targets.auth0.rules import Auth0Rules


def _transitive_groups(dump: dict[str, Any], relevant: frozenset[str]) -> dict[str, set[str]]:
    groups = {g["id"] for g in dump["groups"]}
    members: dict[str, list[str]] = dump["members"]
    result: dict[str, set[str]] = {}
    for gid in relevant:
        seen: set[str] = set()
        todo = [gid]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            for member in members.get(current, []):
                if member in groups:
                    todo.append(member)
                else:
                    result.setdefault(member, set()).add(gid)
    return result


def mirror(graph: GraphEmulator, auth0: Auth0Emulator, mapping: SyncMapping, target: str = "auth0") -> int:
    """Create the in-sync Auth0 side (accounts, roles) of ``mapping``'s Auth0 target; returns the
    accounts created. Links are not written: reconciliation finds these accounts by their
    deterministic id."""
    section = mapping.target(target)
    rules = Auth0Rules(section)
    dump = graph.snapshot(full=True)["dump"]
    managers = dump["managers"]
    groups_of = _transitive_groups(dump, mapping.relevant_groups)
    existing = {r["name"] for r in auth0.snapshot(dump=True)["dump"]["roles"]}
    for role in sorted(section.managed - existing):
        auth0.add_role(role)
    now = datetime.now(UTC)
    created_at = (now - timedelta(days=30)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    last_login = (now - timedelta(days=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    created = 0
    for user in dump["users"]:
        props = dict(user)
        if user["id"] in managers:
            props["manager"] = {"id": managers[user["id"]]}
        groups = frozenset(groups_of.get(user["id"], ()))
        if not user.get("accountEnabled", True) or not mapping.scope.includes(props, groups):
            continue
        identity = Identity(user["id"], SourceState.ACTIVE, props, groups, source="entra")
        payload = rules.create_payload(identity, rules.desired(identity))
        if isinstance(payload, str):  # the worker would not create it either
            continue
        payload["roles"] = sorted(section.entitlements_for(groups, props))
        payload["created_at"] = created_at
        payload["last_login"] = last_login
        auth0.add_user(payload)
        created += 1
    return created
