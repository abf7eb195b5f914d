"""Entra ID Protection reads: risk detections and risky users, paced at one
request per second per tenant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Final

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_information import RequestInformation

from shared.core.work import RiskSignal
from shared.errors import RateLimited, TransientError
from shared.sources.graph.source import GraphSource

PACE_S: Final = 1.05  # Identity Protection: 1 request per second per tenant, no Retry-After


DETECTION_SELECT: Final = [
    # What a response and its message need; $select keeps the pages small.
    "id", "userId", "userPrincipalName", "userDisplayName", "riskLevel", "riskEventType", "riskState",
    "detectedDateTime", "lastUpdatedDateTime", "ipAddress",
]  # fmt: skip


RISKY_USER_SELECT: Final = ["id", "userPrincipalName", "riskLevel", "riskState", "riskLastUpdatedDateTime"]


class IdentityProtectionThrottled(TransientError):
    """Identity Protection answered 429 (it sends no Retry-After): stop, try on the next run."""


class Pacer:
    """Spaces requests at least ``interval_s`` apart (start to start), process-wide."""

    def __init__(self, interval_s: float = PACE_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            delay = self._next - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next = self.clock() + self.interval_s


def parse_when(value: Any) -> datetime | None:
    """A Graph DateTimeOffset (``Z`` or offset, up to 7 fractional digits) as aware UTC."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, sep, rest = text.partition(".")
    if sep:  # Python reads at most 6 fractional digits
        digits = "".join(ch for ch in rest if ch.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def odata_when(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RiskFeed:
    """``identityProtection`` reads through the Graph source, paced, with the SDK's retry middleware
    switched off for them (it would retry a 429 at once, three times, and Identity Protection sends
    no Retry-After)."""

    def __init__(self, source: GraphSource, pacer: Pacer):
        self.source = source
        self.client = source.client
        self.pacer = pacer

    @property
    def calls(self) -> dict[str, int]:
        return {op: n for op, n in self.source.calls.items() if op.startswith("identityProtection.")}

    async def _pages(self, op: str, info: RequestInformation) -> AsyncIterator[list[dict[str, Any]]]:
        try:
            async for page in self.source.pages(op, info, before=self.pacer.wait, sdk_retries=False):
                yield page
        except RateLimited as exc:
            raise IdentityProtectionThrottled(f"Graph {op}: 429 (Identity Protection throttled)") from exc

    def detections(self, since: datetime) -> AsyncIterator[list[dict[str, Any]]]:
        builder = self.client.identity_protection.risk_detections
        params = builder.RiskDetectionsRequestBuilderGetQueryParameters(
            filter=f"lastUpdatedDateTime ge {odata_when(since)}", select=DETECTION_SELECT
        )
        info = builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        return self._pages("identityProtection.riskDetections", info)

    def risky_users(self, since: datetime) -> AsyncIterator[list[dict[str, Any]]]:
        builder = self.client.identity_protection.risky_users
        params = builder.RiskyUsersRequestBuilderGetQueryParameters(
            filter=f"riskLastUpdatedDateTime ge {odata_when(since)}", select=RISKY_USER_SELECT
        )
        info = builder.to_get_request_information(RequestConfiguration(query_parameters=params))
        return self._pages("identityProtection.riskyUsers", info)


def signal_from_detection(d: dict[str, Any]) -> RiskSignal:
    return RiskSignal.from_dict(
        {
            "incident": "detection",
            "ref": str(d["id"]),
            "level": d.get("riskLevel"),
            "event_type": d.get("riskEventType"),
            "state": d.get("riskState"),
            "detected_at": d.get("detectedDateTime") or "",
            "ip_address": d.get("ipAddress") or "",
        }
    )
