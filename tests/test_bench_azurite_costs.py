"""The Azurite cost probe (bench/azurite_costs.py) on small sizes: a figure per size asked for, each
measured on a table or queue that holds that many rows or messages."""

from __future__ import annotations

import uuid

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from bench import azurite_costs
from sandbox.azurite import Azurite

pytestmark = pytest.mark.azurite


def test_each_size_gets_its_figures_on_a_store_that_holds_that_many(azurite: Azurite, monkeypatch) -> None:
    name = "costs" + uuid.uuid4().hex[:8]
    real_table = TableServiceClient.create_table
    real_queue = QueueServiceClient.create_queue
    monkeypatch.setattr(TableServiceClient, "create_table", lambda self, _: real_table(self, name))
    monkeypatch.setattr(QueueServiceClient, "create_queue", lambda self, _: real_queue(self, name))
    tables = list(azurite_costs.table_costs(azurite.connection_string, [200, 500]))
    assert [rows for rows, *_ in tables] == [200, 500]
    assert all(point > 0 and ranged > 0 for _, point, ranged in tables)
    table = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(name)
    assert sum(1 for _ in table.list_entities(select=["RowKey"])) == 500
    queues = list(azurite_costs.queue_costs(azurite.connection_string, [30, 60]))
    assert [depth for depth, *_ in queues] == [30, 60]
    assert all(receive > 0 and delete > 0 and send > 0 for _, receive, delete, send in queues)
    queue = QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client(name)
    # each size deletes 20 of the messages it received and sends 20: the queue holds the last size
    assert queue.get_queue_properties().approximate_message_count == 60


def test_sizes_are_bounded() -> None:
    assert azurite_costs.sizes("300, 100") == [100, 300]
    for bad in ("0", "", f"{azurite_costs.MAX_SIZE + 1}"):
        with pytest.raises(Exception, match="sizes are"):
            azurite_costs.sizes(bad)
