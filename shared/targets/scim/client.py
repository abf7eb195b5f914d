"""The SCIM client: scim2-client over httpx2, with the bearer token, a timeout, and the answers
that mean "wait" turned into the error tree before scim2-client reads them.

scim2-client validates requests and responses against the RFC models (a 2xx that is not a valid
SCIM resource raises), and raises the server's SCIM errors as scim2-models exceptions. What it
does not know is time: a 429 or a 503 carries ``Retry-After``, which this layer reads and raises as
:class:`~shared.errors.RateLimited` (the worker re-schedules the share for then) or
:class:`~shared.errors.TransientError`.
"""

from __future__ import annotations

import json
from typing import Any, Final

import httpx2
from scim2_client.engines.httpx2 import AsyncSCIMClient
from scim2_models import EnterpriseUser, Group, ResourceType, ScimProvider, User

from shared.errors import RateLimited, TransientError, unreachable
from shared.services.ratelimit import RateGate, retry_after
from shared.settings import Secret

USER: Final = User[EnterpriseUser]
SCIM_JSON: Final = "application/scim+json"  # RFC 7644 section 8.1: the media type of every SCIM body
DEFAULT_RETRY_AFTER_S: Final = 30.0  # a 429 without a readable Retry-After
# A closed rate gate is not waited out inside a request: the target fences a write before it sends
# it, and a wait here would come after the fence. The share goes back to the queue instead.
MAX_INLINE_WAIT_S: Final = 0.0


def provider() -> ScimProvider:
    """The resources entra-sync writes: the core User with the enterprise extension, and Group."""
    return ScimProvider(
        models=[User, EnterpriseUser, Group],
        resource_types=[ResourceType.from_resource(USER), ResourceType.from_resource(Group)],
    )


class ScimClient(AsyncSCIMClient):
    """scim2-client's httpx2 engine, with waits and outages raised before validation. Every request
    passes the application's rate ``gate`` first: after a 429 no request of any identity goes out
    (from any instance) before its ``Retry-After`` has passed."""

    def __init__(self, client: httpx2.AsyncClient, name: str, gate: RateGate | None = None):
        super().__init__(client, provider=provider())
        self.name = name
        self.gate = gate or RateGate(name=name)

    def _request_kwargs(self, method: str, req: Any) -> dict[str, Any]:
        """scim2-client hands a body to httpx as ``json=``, which labels it ``application/json``;
        RFC 7644 asks for ``application/scim+json`` (some servers refuse anything else), so the
        body goes encoded here, labelled so, with any headers of the request kept."""
        kwargs: dict[str, Any] = super()._request_kwargs(method, req)
        if "json" in kwargs:
            body = json.dumps(kwargs.pop("json"), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            kwargs["content"] = body.encode()
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Content-Type": SCIM_JSON}
        return kwargs

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx2.Response:
        await self.gate.wait(MAX_INLINE_WAIT_S)
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx2.TimeoutException as exc:
            raise TransientError(f"{self.name}: {method} timed out") from exc
        except httpx2.TransportError as exc:
            raise TransientError(unreachable(self.name, method, exc, "the section's url")) from exc
        status = response.status_code
        now = self.gate.clock.now()
        if status == 429:
            wait = retry_after(response.headers.get("retry-after"), now)
            wait = DEFAULT_RETRY_AFTER_S if wait is None else wait
            await self.gate.throttled(now + wait)  # no other call to this application before then
            raise RateLimited(f"{self.name}: rate limited (429)", wait)
        if status in {500, 502, 503, 504}:
            wait = retry_after(response.headers.get("retry-after"), now)
            raise TransientError(f"{self.name}: {method} answered {status}", wait)
        return response


def http_client(base_url: str, token: Secret, timeout_s: float) -> httpx2.AsyncClient:
    """One connection pool per SCIM target; the token rides in a header, never in a URL or a log."""
    return httpx2.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        headers={"Authorization": f"Bearer {token.reveal()}", "Accept": SCIM_JSON},
        timeout=httpx2.Timeout(timeout_s),
        follow_redirects=False,
    )
