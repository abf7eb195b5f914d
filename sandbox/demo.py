"""The main job on the sandbox: start it, seed a tenant, and show what entra-sync sees through its
own settings and SDK wiring."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from sandbox.stack import Stack
from shared import clients
from shared.settings import Settings


def _line(label: str, value: Any) -> None:
    print(f"  {label:<34} {value}")


async def _read_through_product(settings: Settings) -> dict[str, Any]:
    """Read both sides with the product's own clients, as the functions will."""
    from msgraph.generated.users.users_request_builder import UsersRequestBuilder

    graph = clients.graph_client(settings)
    query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        select=["id", "displayName", "userPrincipalName", "accountEnabled", "userType", "department"], top=5
    )
    config = UsersRequestBuilder.UsersRequestBuilderGetRequestConfiguration(query_parameters=query)
    t0 = time.perf_counter()
    page = await graph.users.get(request_configuration=config)
    graph_ms = (time.perf_counter() - t0) * 1000
    auth0 = clients.auth0_client(settings)
    t0 = time.perf_counter()
    pager = await auth0.users.list(per_page=5, page=0, include_totals=True)
    auth0_ms = (time.perf_counter() - t0) * 1000
    tables = clients.table_service(settings)
    async with tables:
        t0 = time.perf_counter()
        table_count = len([t async for t in tables.list_tables()])
        storage_ms = (time.perf_counter() - t0) * 1000
    return {
        "graph_users": (page.value if page else None) or [],
        "graph_ms": graph_ms,
        "auth0_total": int(pager.response.total or 0),
        "auth0_ms": auth0_ms,
        "tables": table_count,
        "storage_ms": storage_ms,
    }


def run_demo(users: int, groups: int, seed: int) -> int:
    print("entra-sync demo: sandbox tenant (emulated Entra ID and Auth0) with Azurite\n")
    with Stack() as stack:
        print("Started")
        for name, seconds in stack.timings.items():
            _line(name, f"{seconds * 1000:.0f} ms")
        summary = stack.seed(users, groups, seed)
        dump = stack.graph.snapshot(full=True)["dump"]
        people = dump["users"]
        print(f"\nSeeded tenant (seed {seed})")
        _line("users", summary["users"])
        _line(
            "  enabled / disabled",
            f"{sum(u['accountEnabled'] for u in people)} / {sum(not u['accountEnabled'] for u in people)}",
        )
        types = Counter(u.get("userType", "Member") for u in people)
        _line("  members / guests", f"{types['Member']} / {types['Guest']}")
        _line("groups", summary["groups"])
        _line("memberships", summary["memberships"])
        _line("users with a manager", len(dump["managers"]))
        departments = Counter(u.get("department") for u in people)
        _line("departments", ", ".join(f"{d} {n}" for d, n in departments.most_common(4)) + ", ...")

        settings = Settings.from_env(stack.env())
        result = asyncio.run(_read_through_product(settings))
        print("\nRead through entra-sync's own settings and SDK clients")
        _line("Graph: first users (msgraph-sdk)", f"{result['graph_ms']:.0f} ms")
        for u in result["graph_users"]:
            state = "enabled" if u.account_enabled else "disabled"
            print(f"    {u.display_name:<28} {u.user_principal_name:<44} {u.user_type:<7} {state}")
        _line("Auth0: users (auth0-python)", f"{result['auth0_total']} ({result['auth0_ms']:.0f} ms)")
        _line("Table Storage: tables (Azurite)", f"{result['tables']} ({result['storage_ms']:.0f} ms)")
        print("\nRequests served")
        for name, emulator in (("Graph", stack.graph), ("Auth0", stack.auth0)):
            _line(name, ", ".join(f"{route} {n}" for route, n in sorted(emulator.log.counts().items())))
    print("\nSandbox stopped.")
    return 0
