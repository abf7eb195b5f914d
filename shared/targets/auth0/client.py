"""The Auth0 Management API client (``auth0-python``) from settings."""

from __future__ import annotations

import httpx
from auth0.management.client import AsyncAuth0
from auth0.management.token_provider import AsyncTokenProvider

from shared import redact
from shared.services.ratelimit import RateGate
from shared.settings import Auth0Auth, Auth0Settings
from shared.targets.auth0.ratelimit import observe

# Shorter than the lease's fence margin (shared.stores.leases.LEASE_FENCE_MARGIN_S): a write that starts
# while the identity's lease is safely held cannot still be under way when the lease could pass on.
AUTH0_TIMEOUT_S = 20.0


def auth0_client(settings: Auth0Settings, *, max_retries: int = 0, gate: RateGate | None = None) -> AsyncAuth0:
    """An Auth0 Management API client.

    Retries default to none: the SDK would retry POSTs after a 5xx (a possible duplicate create) and
    409s. The worker decides what is transient and when to try again. With a ``gate``, every answer's
    rate-limit headers reach it, so the process paces itself before it meets a 429.
    """
    http = None
    if gate is not None:

        async def pace(response: httpx.Response) -> None:
            await observe(gate, response.headers)

        http = httpx.AsyncClient(timeout=AUTH0_TIMEOUT_S, follow_redirects=True, event_hooks={"response": [pace]})
    if settings.auth is Auth0Auth.STATIC_TOKEN:
        assert settings.token is not None
        return AsyncAuth0(
            base_url=settings.base_url,
            token=settings.token.reveal(),
            timeout=AUTH0_TIMEOUT_S,
            max_retries=max_retries,
            httpx_client=http,
        )
    assert settings.domain and settings.client_id and settings.client_secret
    provider = AsyncTokenProvider(
        domain=settings.domain,
        client_id=settings.client_id,
        client_secret=settings.client_secret.reveal(),
    )

    async def token() -> str:
        value = str(await provider.get_token())
        redact.register(value, runtime=True)  # a bearer token: never in a log line
        return value

    return AsyncAuth0(
        base_url=settings.base_url,
        token=_no_sync_token,
        async_token=token,
        timeout=AUTH0_TIMEOUT_S,
        max_retries=max_retries,
        httpx_client=http,
    )


def _no_sync_token() -> str:
    raise RuntimeError("the Auth0 client is async-only; its token comes from the async token provider")
