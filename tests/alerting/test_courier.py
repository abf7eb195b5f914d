"""The Graph sendMail courier (a joiner's welcome, issue 24's Courier port) against the Graph
emulator: what the courier contract on main asks of a mail channel (its subclass belongs there
once both branches meet: see the report), checked here directly."""

from __future__ import annotations

import asyncio

import pytest

from sandbox.graph.emulator import GraphEmulator
from shared.alerting.channels import GraphCourier
from shared.errors import TransientError
from shared.settings import Settings
from shared.sources.graph.client import graph_client
from tests.support import sandbox_env


def test_a_message_reaches_its_one_recipient_and_a_refused_one_nobody() -> None:
    with GraphEmulator() as graph:
        settings = Settings.from_env(sandbox_env(storage="UseDevelopmentStorage=true", graph_base_url=graph.base_url))
        courier = GraphCourier("entra-sync@contoso.example", graph_client(settings))

        async def scenario() -> None:
            await courier.deliver("welcome:auth0|1", "ada@example.com", "Your new account", "Choose a password: x")
            graph.outbox.allowed = frozenset({"another@contoso.example"})  # the access policy leaves it out
            with pytest.raises(TransientError, match=r"welcome courier \(Graph sendMail\) answered 403"):
                await courier.deliver("welcome:auth0|2", "grace@example.com", "Your new account", "text")

        asyncio.run(scenario())
        sent = graph.outbox.listed()
    assert [(m["to"], m["subject"], m["body"], m["contentType"]) for m in sent] == [
        (["ada@example.com"], "Your new account", "Choose a password: x", "text")
    ]
