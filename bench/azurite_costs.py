"""What one Azurite operation costs as a table or a queue grows: why the sandbox's full runs slow
down where Azure's storage would not.

    python -m bench.azurite_costs [--rows 1000,10000,40000,80000] [--messages 100,5000,15000,30000]

Azurite keeps tables and queues in LokiJS collections. A table query with a filter (a RowKey range
within a partition) walks every row of the table; a point read uses the RowKey index. Every get,
peek, delete and update of a queue message first walks every message of the account (to drop the
expired ones), and a get sorts the visible ones. Azure Table Storage serves a RowKey range within a
partition from its index, and a queue's cost does not grow with its depth.

Each figure is the mean wall time of a few calls from one client on loopback, Azurite otherwise
idle. Sizes are bounded (at most 200,000 rows or messages), and so is every step's time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from sandbox.azurite import Azurite

MAX_SIZE: Final = 200_000
CALLS: Final = 20  # calls timed per figure
STEP_LIMIT_S: Final = 300.0  # filling one size may take this long at most


def mean_ms(call: Callable[[int], object], times: int = CALLS) -> float:
    started = time.perf_counter()
    for i in range(times):
        call(i)
    return (time.perf_counter() - started) / times * 1000


def table_costs(connection: str, sizes: Sequence[int]) -> Iterator[tuple[int, float, float]]:
    """(rows in the table, point read ms, range query ms) at each size, one partition."""
    table = TableServiceClient.from_connection_string(connection).create_table("costs")
    rows = 0
    for size in sizes:
        deadline = time.monotonic() + STEP_LIMIT_S
        while rows < size and time.monotonic() < deadline:
            batch = [
                ("upsert", {"PartitionKey": "p", "RowKey": f"r|{rows + i:07d}|g", "doc": "{}"}) for i in range(100)
            ]
            table.submit_transaction(batch)
            rows += 100

        def point(i: int) -> object:
            return table.get_entity("p", f"r|{i:07d}|g")

        def range_query(i: int) -> object:
            bounds = {"low": f"r|{i:07d}|", "high": f"r|{i:07d}|~"}
            return list(
                table.query_entities("PartitionKey eq 'p' and RowKey ge @low and RowKey lt @high", parameters=bounds)
            )

        yield rows, mean_ms(point), mean_ms(range_query)


def queue_costs(connection: str, sizes: Sequence[int]) -> Iterator[tuple[int, float, float, float]]:
    """(messages in the queue, receive of 8 ms, delete ms, send ms) at each depth."""
    queue = QueueServiceClient.from_connection_string(connection).create_queue("costs")
    depth = 0
    with ThreadPoolExecutor(8) as pool:
        for size in sizes:
            deadline = time.monotonic() + STEP_LIMIT_S
            while depth < size and time.monotonic() < deadline:
                chunk = min(size - depth, 1_000)
                list(pool.map(lambda _: queue.send_message("x" * 300), range(chunk)))
                depth += chunk
            received: list[Any] = []
            receive_ms = mean_ms(
                lambda _, into=received: into.extend(
                    queue.receive_messages(messages_per_page=8, max_messages=8, visibility_timeout=600)
                ),
                4,
            )
            taken = received[:CALLS]
            delete_ms = mean_ms(lambda i, todo=taken: queue.delete_message(todo[i]), len(taken)) if taken else 0.0
            depth -= len(taken)
            send_ms = mean_ms(lambda _: queue.send_message("y"))
            depth += CALLS
            yield size, receive_ms, delete_ms, send_ms


def sizes(text: str) -> list[int]:
    out = sorted({int(s) for s in text.split(",") if s.strip()})
    if not out or out[0] < 1 or out[-1] > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"sizes are 1..{MAX_SIZE:,}, comma-separated")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rows", type=sizes, default=sizes("1000,10000,40000,80000"))
    parser.add_argument("--messages", type=sizes, default=sizes("100,5000,15000,30000"))
    args = parser.parse_args(argv)
    with Azurite() as azurite:
        print("| rows in the table | point read | RowKey range query (1 row) |\n|---|---|---|", flush=True)
        for rows, point, ranged in table_costs(azurite.connection_string, args.rows):
            print(f"| {rows:,} | {point:.1f} ms | {ranged:.1f} ms |", flush=True)
        print("\n| messages in the queue | receive (8) | delete | send |\n|---|---|---|---|", flush=True)
        for depth, receive, delete, send in queue_costs(azurite.connection_string, args.messages):
            print(f"| {depth:,} | {receive:.1f} ms | {delete:.1f} ms | {send:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
