"""The product's own SDK wiring (shared/*/client*.py) reaches the sandbox exactly as it would reach Azure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp.helpers
import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables.aio import TableServiceClient
from kiota_http.middleware import ParametersNameDecodingHandler, RedirectHandler, RetryHandler
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from sandbox.auth0 import Auth0Emulator
from sandbox.azurite import Azurite
from sandbox.graph import GraphEmulator
from sandbox.server import RateLimit
from shared.settings import Settings
from shared.sources.graph.client import graph_client, middleware
from shared.stores.clients import SDK_HTTP_LOGGER, environment_proxy, queue_service, table_service
from shared.targets.auth0.client import auth0_client
from tests.support import sandbox_env


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphEmulator]:
    with GraphEmulator() as emulator:
        emulator.seed({"users": 30, "groups": 3, "seed": 5})
        yield emulator  # type: ignore[misc]


@pytest.fixture(scope="module")
def auth0() -> Iterator[Auth0Emulator]:
    with Auth0Emulator() as emulator:
        emulator.seed({"count": 12, "seed": 5})
        yield emulator  # type: ignore[misc]


def settings_for(azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator, **extra: str) -> Settings:
    return Settings.from_env(
        sandbox_env(
            storage=azurite.connection_string, graph_base_url=graph.base_url, auth0_base_url=auth0.base_url, **extra
        )
    )


def test_graph_client_reads_users_with_select_and_the_token(
    azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator
) -> None:
    settings = settings_for(azurite, graph, auth0)

    async def read() -> Any:
        client = graph_client(settings)
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=["id", "accountEnabled"], top=10)
        config = UsersRequestBuilder.UsersRequestBuilderGetRequestConfiguration(query_parameters=query)
        return await client.users.get(request_configuration=config)

    page = asyncio.run(read())
    assert len(page.value) == 10
    assert all(u.account_enabled is not None for u in page.value)
    assert page.odata_next_link.startswith(graph.base_url)


def test_graph_client_with_a_wrong_token_is_refused(
    azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator
) -> None:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    settings = settings_for(azurite, graph, auth0, GRAPH_TOKEN="not-the-token")
    with pytest.raises(ODataError) as info:
        asyncio.run(graph_client(settings).users.get())
    assert info.value.response_status_code == 401


def test_auth0_client_reads_users_with_the_static_token(
    azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator
) -> None:
    settings = settings_for(azurite, graph, auth0)

    async def read() -> Any:
        assert settings.auth0 is not None
        client = auth0_client(settings.auth0)
        return await client.users.list(per_page=5, page=0, include_totals=True)

    pager = asyncio.run(read())
    assert len(pager.items) == 5
    assert pager.response.total == 12


def test_storage_clients_reach_azurite(
    azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator, run_id: str
) -> None:
    settings = settings_for(azurite, graph, auth0)

    async def roundtrip() -> list[str]:
        tables: TableServiceClient = table_service(settings)
        async with tables:
            await tables.create_table(f"c{run_id}")
            names = [t.name async for t in tables.list_tables()]
        queues = queue_service(settings)
        async with queues:
            await queues.create_queue(f"q-{run_id}")
            names += [q.name async for q in queues.list_queues()]
        return names

    names = asyncio.run(roundtrip())
    assert f"c{run_id}" in names
    assert f"q-{run_id}" in names


# -- cheaper clients (issue 13): what they no longer do per request, and what they still protect ---


def test_environment_proxy_is_the_one_aiohttp_would_use(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert environment_proxy("https://acct.table.core.windows.net") == {}
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert environment_proxy("https://acct.table.core.windows.net") == {"https": "http://proxy.internal:3128"}
    assert environment_proxy("http://127.0.0.1:10002/devstoreaccount1") == {}  # no HTTP_PROXY
    monkeypatch.setenv("NO_PROXY", ".core.windows.net")
    assert environment_proxy("https://acct.table.core.windows.net") == {}


def test_storage_clients_look_nothing_up_in_the_environment_per_request(
    azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(azurite, graph, auth0)
    lookups: list[str] = []
    real = aiohttp.helpers.get_env_proxy_for_url

    def counted(url: Any) -> Any:
        lookups.append(str(url))
        return real(url)

    monkeypatch.setattr("aiohttp.client.get_env_proxy_for_url", counted)  # what ClientSession calls

    async def requests() -> None:
        async with table_service(settings) as tables, queue_service(settings) as queues:
            table = tables.get_table_client(f"p{run_id}")
            await table.create_table()
            await table.upsert_entity({"PartitionKey": "p", "RowKey": "r"})
            await table.get_entity("p", "r")
            await queues.create_queue(f"p-{run_id}")
            await queues.get_queue_client(f"p-{run_id}").send_message("x")

    asyncio.run(requests())
    assert lookups == []


def test_storage_clients_still_honour_a_proxy_set_in_the_environment(
    azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy on a closed port: a client that uses it cannot reach Azurite.
    settings = settings_for(azurite, graph, auth0)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)

    async def list_tables() -> list[str]:
        async with table_service(settings) as tables:
            return [t.name async for t in tables.list_tables()]

    with pytest.raises(ServiceRequestError):
        asyncio.run(list_tables())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # read when the client is built
    assert isinstance(asyncio.run(list_tables()), list)


def test_storage_requests_write_no_info_record_per_request(
    azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(azurite, graph, auth0)
    sdk_http_log = logging.getLogger(SDK_HTTP_LOGGER)
    previous = sdk_http_log.level
    sdk_http_log.setLevel(logging.NOTSET)

    async def requests() -> None:
        async with table_service(settings) as tables:
            _ = [t.name async for t in tables.list_tables()]

    try:
        with caplog.at_level(logging.INFO):  # as the Functions Python worker logs
            asyncio.run(requests())
        assert not [r for r in caplog.records if r.name == SDK_HTTP_LOGGER]
        assert sdk_http_log.getEffectiveLevel() == logging.WARNING
    finally:
        sdk_http_log.setLevel(previous)


def test_graph_requests_go_through_redirect_retry_and_parameter_names_only() -> None:
    assert [type(m) for m in middleware()] == [RedirectHandler, RetryHandler, ParametersNameDecodingHandler]


def test_graph_client_retries_a_throttled_read_after_retry_after(
    azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator
) -> None:
    settings = settings_for(azurite, graph, auth0)
    user_id = graph.snapshot(full=True)["dump"]["users"][0]["id"]

    async def twice() -> list[Any]:
        client = graph_client(settings)
        return [await client.users.by_user_id(user_id).get() for _ in range(2)]

    graph.limits.configure({"users.get": RateLimit(burst=1, per_second=1.0)})
    try:
        assert [u.id for u in asyncio.run(twice())] == [user_id, user_id]
    finally:
        graph.limits.configure({})


def test_graph_token_is_not_sent_to_another_host(azurite: Azurite, graph: GraphEmulator, auth0: Auth0Emulator) -> None:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    settings = settings_for(azurite, graph, auth0)
    elsewhere = graph.base_url.replace("127.0.0.1", "localhost") + "/users"  # same server, another host name
    with pytest.raises(ODataError) as info:
        asyncio.run(graph_client(settings).users.with_url(elsewhere).get())
    assert info.value.response_status_code == 401
