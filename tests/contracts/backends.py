"""What the contract suites share: running a scenario against one implementation, and fresh
Azurite tables and queues for the Azure-backed ones.

Each port's contract is a class (``<port>_contract.py``) that every implementation subclasses in
its own file (``memory/``, ``azurite/``, ``emulator/``), giving the suite one fixture: an *opener*,
an async context manager that builds the implementation inside the scenario's event loop (the Azure
SDK's clients belong to one loop) and cleans up after it. Only the Azurite and emulator subclasses
ask for the session's Azurite or start an emulator, so the memory ones run without them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.queue.aio import QueueServiceClient

from sandbox.azurite import Azurite

T = TypeVar("T")

Opener = Callable[[], AbstractAsyncContextManager[T]]


def run(opener: Opener[T], body: Callable[[T], Awaitable[Any]]) -> None:
    """Open the implementation, run ``body`` with it, close it: one event loop."""

    async def scenario() -> None:
        async with opener() as subject:
            await body(subject)

    asyncio.run(scenario())


def in_memory(make: Callable[[], T]) -> Opener[T]:
    """An opener of ``make()``: a new implementation for each scenario, with nothing to close."""

    @asynccontextmanager
    async def opener() -> AsyncIterator[T]:
        yield make()

    return opener


def on_fresh_table(azurite: Azurite, make: Callable[[TableClient], T]) -> Opener[T]:
    """An opener of ``make(table)`` over a new Azurite table, deleted afterwards."""

    @asynccontextmanager
    async def opener() -> AsyncIterator[T]:
        async with fresh_table(azurite) as table:
            yield make(table)

    return opener


def fresh_name(prefix: str) -> str:
    """A table or queue name no other test uses (letters and digits: valid for both)."""
    return f"{prefix}{uuid.uuid4().hex[:16]}"


@asynccontextmanager
async def fresh_table(azurite: Azurite) -> AsyncIterator[TableClient]:
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        name = fresh_name("contract")
        table = await service.create_table(name)
        try:
            async with table:
                yield table
        finally:
            await service.delete_table(name)


@asynccontextmanager
async def fresh_queues(azurite: Azurite, *suffixes: str) -> AsyncIterator[tuple[QueueServiceClient, str]]:
    """A queue service and a new queue name, with the queues ``name + suffix`` created (and deleted
    at the end) for each suffix ("" for the queue itself)."""
    name = fresh_name("contract")
    async with QueueServiceClient.from_connection_string(azurite.connection_string) as service:
        for suffix in suffixes:
            await service.create_queue(name + suffix)
        try:
            yield service, name
        finally:
            for suffix in suffixes:
                await service.delete_queue(name + suffix)


async def close_all(clients: Iterable[object]) -> None:
    """Close each client that can be closed (``close`` or ``aclose``, awaited when it is a coroutine):
    what a kind built for a target, as listed in ``BuildContext.closers``."""
    for client in clients:
        close = getattr(client, "close", None) or getattr(client, "aclose", None)
        if close is not None:
            result = close()
            if hasattr(result, "__await__"):
                await result
