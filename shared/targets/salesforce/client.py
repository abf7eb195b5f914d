"""One Salesforce org's REST API through ``simple-salesforce``, off the event loop.

``simple-salesforce`` is synchronous (``requests``). Every call runs on this client's own
``ThreadPoolExecutor`` of ``threads`` workers (4 unless the section says): the worker's event loop
never waits on a socket, and the org sees at most that many calls from this process at once (it
allows 25 long-running requests per org, shared with every other integration), whatever the
number of work items in flight; calls beyond wait in the pool's queue, not in Salesforce's. A pool
of its own rather than ``asyncio.to_thread``: the default executor is shared with everything else
in the process, and a slow org must not starve it, nor anything else starve the org's calls.

Authentication is OAuth 2.0 client credentials against the org's own token endpoint; the token is
kept and fetched again once when Salesforce answers ``INVALID_SESSION_ID``. The token and the
consumer secret are registered with :mod:`shared.redact`, so no log line carries them.

Every answer's ``Sforce-Limit-Info`` (``api-usage=used/limit``, the rolling 24 hour allocation)
paces the calls through the target's rate gate: past ``PACE_FROM`` of the allocation the remaining
calls are spread over the day, and past ``RESERVE`` the gate closes for an hour (for every
instance), so bulk work stops well before ``REQUEST_LIMIT_EXCEEDED``. That answer, and a licence
limit, are errors of their own (:class:`DailyLimitSpent`, :class:`LicenceExhausted`) that the
worker waits out or reports; neither is retried at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from shared import redact
from shared.clock import SYSTEM, Clock
from shared.errors import NotFound, PermanentError, RateLimited, TransientError
from shared.services.ratelimit import RateGate
from shared.settings import is_loopback_url
from shared.targets.salesforce.settings import OrgSettings

T = TypeVar("T")

API_VERSION: Final = "59.0"
DAY_S: Final = 24 * 3600.0
PACE_FROM: Final = 0.8  # share of the daily allocation after which calls are spread over the day
RESERVE: Final = 0.05  # share of it kept back: below this the gate closes
SPENT_WAIT_S: Final = 3600.0  # an allocation spent, or nearly: try again in an hour
MAX_GATE_WAIT_S: Final = 30.0  # a wait longer than this becomes a deferral of the work item
TRANSIENT_CODES: Final = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "QUERY_TIMEOUT"})


class ApiError(PermanentError):
    """Salesforce refused a request for a reason of its own: ``code`` (``DUPLICATE_USERNAME``,
    ``FIELD_INTEGRITY_EXCEPTION``, ...), its message and the fields it names."""

    def __init__(self, code: str, message: str, fields: tuple[str, ...] = (), status: int = 400):
        super().__init__(f"Salesforce refused it: {code}: {message}")
        self.code = code
        self.detail = message
        self.fields = fields
        self.status = status


class LicenceExhausted(PermanentError):
    """The org has no free user licence: creates stop until one is freed; never retried at once."""


class DailyLimitSpent(RateLimited):
    """The org's rolling 24 hour API allocation is spent (``REQUEST_LIMIT_EXCEEDED``) or nearly."""


def first_error(content: Any) -> tuple[str, str, tuple[str, ...]]:
    """(errorCode, message, fields) of a Salesforce error body (a list of errors, or one)."""
    body = content[0] if isinstance(content, list) and content else content
    if isinstance(body, Mapping):
        fields = body.get("fields") or ()
        return str(body.get("errorCode") or "UNKNOWN"), str(body.get("message") or ""), tuple(str(f) for f in fields)
    return "UNKNOWN", str(content)[:300], ()


def translate(exc: SalesforceError) -> Exception:
    """A simple-salesforce error as one of ours (see the module docs)."""
    code, message, fields = first_error(exc.content)
    if code == "REQUEST_LIMIT_EXCEEDED":
        return DailyLimitSpent(f"Salesforce: the org's daily API allocation is spent ({message})", SPENT_WAIT_S)
    if code == "LICENSE_LIMIT_EXCEEDED":
        return LicenceExhausted(f"Salesforce: no free user licence ({message}); creates stop until one is freed")
    if exc.status == 404:
        return NotFound(f"Salesforce: not found ({code}: {message})")
    if exc.status >= 500 or exc.status == 401 or code in TRANSIENT_CODES:
        return TransientError(f"Salesforce answered {exc.status} {code}: {message}")
    return ApiError(code, message, fields, exc.status)


class SalesforceClient:
    """Calls to one org, each on the client's thread pool, paced by its gate (see the module docs)."""

    def __init__(
        self,
        org: OrgSettings,
        gate: RateGate,
        *,
        clock: Clock = SYSTEM,
        threads: int = 4,
        timeout_s: float = 20.0,
        name: str = "salesforce",
        session: requests.Session | None = None,
    ):
        self.org = org
        self.gate = gate
        self.clock = clock
        self.timeout_s = timeout_s
        self.name = name
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"sf-{name}")
        self.session = session or requests.Session()
        self._sf: Salesforce | None = None
        self._lock = threading.Lock()
        self.calls = 0  # requests sent (a benchmark reads it)
        self.usage: tuple[int, int] | None = None  # (used, limit) of the daily allocation, last seen
        self.own_user_id = ""  # the integration user the token acts as (the token answer's id URL)
        redact.register(org.client_secret.reveal())

    async def call(self, fn: Callable[[Salesforce], T]) -> T:
        """``fn(sf)`` on the pool, after the gate lets it go; errors translated (module docs)."""
        await self.gate.wait(MAX_GATE_WAIT_S)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, self._run, fn)
        except SalesforceError as exc:
            error = translate(exc)
            if isinstance(error, DailyLimitSpent):
                await self.gate.close(self.clock.now() + SPENT_WAIT_S)
            raise error from exc
        except requests.RequestException as exc:
            raise TransientError(f"Salesforce could not be reached: {type(exc).__name__}") from exc
        finally:
            await self._pace()

    async def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call below ``/services/data/vXX.X/``; its JSON (None for 204)."""
        return await self.call(lambda sf: sf.restful(path, method=method, timeout=self.timeout_s, **kwargs))

    async def query(self, soql: str) -> list[dict[str, Any]]:
        """Every record of a query, following ``nextRecordsUrl`` (each page a call)."""

        def run(sf: Salesforce) -> list[dict[str, Any]]:
            page = sf.query(soql, timeout=self.timeout_s)
            records = list(page.get("records") or [])
            for _ in range(100_000):  # bounded: a page holds up to 2,000 records
                if page.get("done", True) or not page.get("nextRecordsUrl"):
                    break
                origin = sf.base_url.split("/services/", 1)[0]  # the next page's URL is a path of the instance
                answer = sf._call_salesforce("GET", origin + str(page["nextRecordsUrl"]), timeout=self.timeout_s)
                page = answer.json()
                self.calls += 1
                records += page.get("records") or []
            return records

        return await self.call(run)

    def _run(self, fn: Callable[[Salesforce], T]) -> T:
        sf = self._connection()
        self.calls += 1
        try:
            return fn(sf)
        except SalesforceExpiredSession:
            sf = self._connection(renew=True)  # INVALID_SESSION_ID: a new token, once
            self.calls += 1
            return fn(sf)
        finally:
            usage = sf.api_usage.get("api-usage")
            if usage is not None:
                self.usage = (int(usage.used), int(usage.total))

    def _connection(self, renew: bool = False) -> Salesforce:
        with self._lock:
            if self._sf is None or renew:
                token, instance_url = self._token()
                sf = Salesforce(instance_url=instance_url, session_id=token, session=self.session, version=API_VERSION)
                if instance_url.startswith("http://") and is_loopback_url(instance_url):
                    for attribute in ("base_url", "bulk2_url", "oauth2_url", "apex_url"):
                        setattr(sf, attribute, getattr(sf, attribute).replace("https://", "http://", 1))
                self._sf = sf
            return self._sf

    def _token(self) -> tuple[str, str]:
        """OAuth 2.0 client credentials: (access token, instance URL)."""
        response = self.session.post(
            f"{self.org.instance_url}/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self.org.client_id,
                "client_secret": self.org.client_secret.reveal(),
            },
            timeout=self.timeout_s,
        )
        self.calls += 1
        if response.status_code != 200:
            error = response.json().get("error", "") if "json" in response.headers.get("content-type", "") else ""
            raise TransientError(f"Salesforce token request answered {response.status_code} {error}".rstrip())
        body = response.json()
        token = str(body["access_token"])
        self.own_user_id = str(body.get("id") or "").rstrip("/").rsplit("/", 1)[-1]
        redact.register(token, runtime=True)  # a bearer token: never in a log line
        instance = str(body.get("instance_url") or self.org.instance_url).rstrip("/")
        if is_loopback_url(self.org.instance_url):
            instance = self.org.instance_url  # the sandbox answers with its own address
        return token, instance

    async def _pace(self) -> None:
        if self.usage is None:
            return
        used, limit = self.usage
        if limit <= 0:
            return
        left = limit - used
        if left <= limit * RESERVE:
            await self.gate.close(self.clock.now() + SPENT_WAIT_S)
        elif used >= limit * PACE_FROM:
            self.gate.spacing_s = max(self.gate.spacing_s, DAY_S / max(left, 1))
        else:
            self.gate.relax()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()
