"""Builds the real SDK clients from :class:`~shared.settings.Settings`.

This is the only place that knows how each SDK is pointed at its service: Microsoft Graph
(``msgraph-sdk``), the Auth0 Management API (``auth0-python``), and Table and Queue Storage
(``azure-data-tables``, ``azure-storage-queue``). The same code serves Azure (managed identity,
client credentials, Key Vault-resolved secrets) and the sandbox (loopback URLs, static tokens,
Azurite), so tests exercise the production wiring.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from auth0.management.client import AsyncAuth0
from auth0.management.token_provider import AsyncTokenProvider
from azure.core.credentials import AccessToken
from azure.data.tables.aio import TableServiceClient
from azure.identity.aio import ClientSecretCredential, ManagedIdentityCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from shared import redact
from shared.auth0_target import RateGate
from shared.settings import Auth0Auth, GraphAuth, Settings

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Shorter than the lease's fence margin (shared.storage.LEASE_FENCE_MARGIN_S): a write that starts
# while the identity's lease is safely held cannot still be under way when the lease could pass on.
AUTH0_TIMEOUT_S = 20.0


class StaticTokenCredential:
    """An async ``TokenCredential`` that hands out one fixed bearer token (sandbox only)."""

    def __init__(self, token: str, lifetime_s: int = 3600):
        self._token = token
        self._lifetime_s = lifetime_s

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._lifetime_s)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class RedactedTokens:
    """Wraps an async ``TokenCredential`` so every access token it hands out is registered as a
    secret (see :mod:`shared.redact`) before any SDK can log it."""

    def __init__(self, credential: Any):
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        token: AccessToken = await self._credential.get_token(*scopes, **kwargs)
        redact.register(token.token, runtime=True)
        return token

    async def close(self) -> None:
        await self._credential.close()

    async def __aenter__(self) -> RedactedTokens:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def graph_credential(settings: Settings) -> Any:
    if settings.graph_auth is GraphAuth.STATIC_TOKEN:
        assert settings.graph_token is not None
        return StaticTokenCredential(settings.graph_token.reveal())
    if settings.graph_auth is GraphAuth.CLIENT_SECRET:
        assert settings.tenant_id and settings.client_id and settings.client_secret
        secret = settings.client_secret.reveal()
        return RedactedTokens(ClientSecretCredential(settings.tenant_id, settings.client_id, secret))
    return RedactedTokens(
        ManagedIdentityCredential(client_id=settings.client_id) if settings.client_id else ManagedIdentityCredential()
    )


def graph_client(settings: Settings) -> GraphServiceClient:
    """A Graph client bound to ``GRAPH_BASE_URL``.

    The token is attached only for the configured host (``allowed_hosts``), so a next/delta link
    that pointed elsewhere would never receive it.
    """
    host = urlsplit(settings.graph_base_url).hostname or ""
    auth = AzureIdentityAuthenticationProvider(graph_credential(settings), scopes=[GRAPH_SCOPE], allowed_hosts=[host])
    adapter = GraphRequestAdapter(auth)
    # No trailing slash: the SDK's default ends in "/" and would yield "//users" paths.
    adapter.base_url = settings.graph_base_url.rstrip("/")
    return GraphServiceClient(request_adapter=adapter)


def auth0_client(settings: Settings, *, max_retries: int = 0, gate: RateGate | None = None) -> AsyncAuth0:
    """An Auth0 Management API client.

    Retries default to none: the SDK would retry POSTs after a 5xx (a possible duplicate create) and
    409s. The worker decides what is transient and when to try again. With a ``gate``, every answer's
    rate-limit headers reach it, so the process paces itself before it meets a 429.
    """
    http = None
    if gate is not None:

        async def observe(response: httpx.Response) -> None:
            gate.observe(response.headers)

        http = httpx.AsyncClient(timeout=AUTH0_TIMEOUT_S, follow_redirects=True, event_hooks={"response": [observe]})
    if settings.auth0_auth is Auth0Auth.STATIC_TOKEN:
        assert settings.auth0_token is not None
        return AsyncAuth0(
            base_url=settings.auth0_base_url,
            token=settings.auth0_token.reveal(),
            timeout=AUTH0_TIMEOUT_S,
            max_retries=max_retries,
            httpx_client=http,
        )
    assert settings.auth0_domain and settings.auth0_client_id and settings.auth0_client_secret
    provider = AsyncTokenProvider(
        domain=settings.auth0_domain,
        client_id=settings.auth0_client_id,
        client_secret=settings.auth0_client_secret.reveal(),
    )

    async def token() -> str:
        value = str(await provider.get_token())
        redact.register(value, runtime=True)  # a bearer token: never in a log line
        return value

    return AsyncAuth0(
        base_url=settings.auth0_base_url,
        token=_no_sync_token,
        async_token=token,
        timeout=AUTH0_TIMEOUT_S,
        max_retries=max_retries,
        httpx_client=http,
    )


def _no_sync_token() -> str:
    raise RuntimeError("the Auth0 client is async-only; its token comes from the async token provider")


def _storage_credential(settings: Settings) -> Any:
    client_id = settings.storage.client_id
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def table_service(settings: Settings) -> TableServiceClient:
    storage = settings.storage
    if storage.connection_string is not None:
        return TableServiceClient.from_connection_string(storage.connection_string.reveal())
    assert storage.table_service_uri is not None
    return TableServiceClient(endpoint=storage.table_service_uri, credential=_storage_credential(settings))


def blob_service(settings: Settings) -> BlobServiceClient:
    storage = settings.storage
    if storage.connection_string is not None:
        return BlobServiceClient.from_connection_string(storage.connection_string.reveal())
    if storage.blob_service_uri is None:
        raise ValueError("no blob endpoint: set AzureWebJobsStorage__blobServiceUri or __accountName")
    return BlobServiceClient(account_url=storage.blob_service_uri, credential=_storage_credential(settings))


def queue_service(settings: Settings) -> QueueServiceClient:
    storage = settings.storage
    if storage.connection_string is not None:
        return QueueServiceClient.from_connection_string(storage.connection_string.reveal())
    assert storage.queue_service_uri is not None
    return QueueServiceClient(account_url=storage.queue_service_uri, credential=_storage_credential(settings))
