"""The Microsoft Graph client (``msgraph-sdk``) from settings: Azure or the sandbox.

msgraph-sdk's default HTTP client runs every request through eight middleware handlers, the kiota
ones each opening an OpenTelemetry span. entra-sync keeps the three that do something for it and
drops the rest (see :func:`middleware`).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken
from azure.identity.aio import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware import BaseMiddleware, ParametersNameDecodingHandler, RedirectHandler, RetryHandler
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from shared import redact
from shared.credentials import azure_credential
from shared.settings import GraphAuth, Settings

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def middleware() -> list[BaseMiddleware]:
    """The kiota handlers every Graph request goes through, in order.

    Kept: ``RedirectHandler`` (follows a redirect, and drops the Authorization header when it
    leads to another host), ``RetryHandler`` (429, 503 and 504 retried up to 3 times honouring
    ``Retry-After``: the worker counts on it before it re-schedules a throttled item) and
    ``ParametersNameDecodingHandler`` (sends ``$select`` rather than the URI template's ``%24select``).
    Dropped: ``UrlReplaceHandler`` (rewrites ``/users/me-token-to-replace`` to ``/me``, a path
    entra-sync never asks for), ``UserAgentHandler`` and ``GraphTelemetryHandler`` (SDK version
    headers and a client request id; Graph answers with its own ``request-id``), and the headers and
    body inspection handlers (they do something only when a request asks for it; none does).
    """
    return [RedirectHandler(), RetryHandler(), ParametersNameDecodingHandler()]


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
    # The managed identity in Azure; the operator's sign-in for the CLI elsewhere.
    return RedactedTokens(azure_credential(settings.client_id, settings.env))


def graph_client(settings: Settings) -> GraphServiceClient:
    """A Graph client bound to ``GRAPH_BASE_URL``.

    The token is attached only for the configured host (``allowed_hosts``), so a next/delta link
    that pointed elsewhere would never receive it.
    """
    host = urlsplit(settings.graph_base_url).hostname or ""
    auth = AzureIdentityAuthenticationProvider(graph_credential(settings), scopes=[GRAPH_SCOPE], allowed_hosts=[host])
    # The SDK's own client (timeouts, HTTP/2), with the shorter middleware chain.
    http = KiotaClientFactory.create_with_custom_middleware(middleware(), KiotaClientFactory.get_default_client())
    adapter = GraphRequestAdapter(auth, http)
    # No trailing slash: the SDK's default ends in "/" and would yield "//users" paths.
    adapter.base_url = settings.graph_base_url.rstrip("/")
    return GraphServiceClient(request_adapter=adapter)
