"""Table, Queue and Blob Storage clients from settings (a connection string, or an Entra
credential: the managed identity in Azure, the operator's sign-in elsewhere; see
:mod:`shared.credentials`).

The SDKs' aiohttp transport, left to its defaults (``use_env_settings=True``), looks up the proxy
for the URL and the ``~/.netrc`` credentials on a worker thread for every request: two thread hops
and an environment scan per storage call, tens of times per work item. The environment cannot
change under a running Functions worker, so it is read once here: the clients are built with
``use_env_settings=False`` and, where ``HTTP(S)_PROXY`` applies to the endpoint (``NO_PROXY``
honoured, as the SDK would), with that proxy given explicitly. Storage authenticates with its own
key or token, never with ``.netrc``.

azure-core's ``HttpLoggingPolicy`` also writes every request and every response, headers and all, as
an INFO record, and the Functions Python worker logs at INFO: two records per storage call, each
formatted, masked (:mod:`shared.redact`) and shipped to Application Insights. Its logger is set to
WARNING here unless a level was set for it explicitly; warnings and errors still pass.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables.aio import TableServiceClient
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared.credentials import azure_credential
from shared.settings import Settings

C = TypeVar("C")

SDK_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
AZURITE_KEEPALIVE_S = 4.0  # Azurite's Node server closes idle connections after 5 s


def _storage_credential(settings: Settings) -> Any:
    return azure_credential(settings.storage.client_id, settings.env)


def environment_proxy(url: str) -> dict[str, str]:
    """The proxy the environment names for ``url`` (``{scheme: proxy}``), or none: what aiohttp's
    ``trust_env`` would find for each request, found once."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return {}
    return {parts.scheme: proxy}


class _KeepAliveTransport(AioHttpTransport):  # type: ignore[misc]
    """The SDK's aiohttp transport with idle connections let go after ``keepalive_s``: shorter than
    the server keeps them. Azurite (Node) closes an idle connection after 5 s while aiohttp keeps it
    15 s, so a request after a pause took a connection already closed ("Server disconnected", "Can
    not write request body"), and the SDK's three connect retries could each take another."""

    def __init__(self, keepalive_s: float, **kwargs: Any):
        super().__init__(**kwargs)
        self._keepalive_s = keepalive_s

    async def open(self) -> None:
        if getattr(self, "session", None) is None and self._session_owner:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(keepalive_timeout=self._keepalive_s),
                trust_env=False, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            )  # fmt: skip
        await super().open()


def _built_once(build: Callable[..., C]) -> C:
    """``build(**options)`` without per-request environment lookups; with the environment's proxy,
    if one applies to the client's endpoint (an unopened client holds no connection to close); and,
    for a loopback endpoint (Azurite), idle connections let go before Azurite closes them."""
    sdk_http_log = logging.getLogger(SDK_HTTP_LOGGER)
    if sdk_http_log.level == logging.NOTSET:  # a level set on purpose wins
        sdk_http_log.setLevel(logging.WARNING)
    client = build(use_env_settings=False)
    url = client.url  # type: ignore[attr-defined]
    options: dict[str, Any] = {"use_env_settings": False}
    if proxy := environment_proxy(url):
        options["proxies"] = proxy
    if urlsplit(url).hostname in LOOPBACK:
        options["transport"] = _KeepAliveTransport(AZURITE_KEEPALIVE_S, use_env_settings=False)
    return build(**options) if len(options) > 1 else client


def table_service(settings: Settings) -> TableServiceClient:
    storage = settings.storage
    if storage.connection_string is not None:
        connection = storage.connection_string.reveal()
        return _built_once(lambda **o: TableServiceClient.from_connection_string(connection, **o))
    endpoint, credential = storage.table_service_uri, _storage_credential(settings)
    assert endpoint is not None
    return _built_once(lambda **o: TableServiceClient(endpoint=endpoint, credential=credential, **o))


def blob_service(settings: Settings) -> BlobServiceClient:
    storage = settings.storage
    if storage.connection_string is not None:
        connection = storage.connection_string.reveal()
        return _built_once(lambda **o: BlobServiceClient.from_connection_string(connection, **o))
    if storage.blob_service_uri is None:
        raise ValueError("no blob endpoint: set AzureWebJobsStorage__blobServiceUri or __accountName")
    endpoint, credential = storage.blob_service_uri, _storage_credential(settings)
    return _built_once(lambda **o: BlobServiceClient(account_url=endpoint, credential=credential, **o))


def queue_service(settings: Settings) -> QueueServiceClient:
    storage = settings.storage
    if storage.connection_string is not None:
        connection = storage.connection_string.reveal()
        return _built_once(lambda **o: QueueServiceClient.from_connection_string(connection, **o))
    endpoint, credential = storage.queue_service_uri, _storage_credential(settings)
    assert endpoint is not None
    return _built_once(lambda **o: QueueServiceClient(account_url=endpoint, credential=credential, **o))
