"""The Microsoft Graph client (``msgraph-sdk``) from settings: Azure or the sandbox."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken
from azure.identity.aio import ClientSecretCredential, ManagedIdentityCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from shared import redact
from shared.settings import GraphAuth, Settings

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


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
