"""The HTTP ground both emulators stand on.

A small threaded HTTP/1.1 server on 127.0.0.1 with:

* a route table (method + regex -> handler, each route with a stable *name* used by the request
  log, rate limits and fault rules);
* a request log with counts per route (benchmarks count API calls with it);
* token-bucket rate limits configurable per route-name glob, answered with a vendor-shaped 429;
* seeded fault injection (5xx answers, slow answers, dropped connections);
* control endpoints under ``/_control`` (reset, seed, snapshot, request log, limits, faults) that
  are never logged, limited or faulted.

Vendor specifics (error body shapes, rate-limit headers, authentication) are hooks that the
Graph and Auth0 emulators override.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("sandbox")

JSON = "application/json"


@dataclass
class Request:
    method: str
    path: str  # path as sent (still percent-encoded), without the query; route params are decoded
    raw_path: str  # path and query as sent
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # named groups of the route pattern
    route: str = ""

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter, or ``default``."""
        values = self.query.get(name)
        return values[0] if values else default

    def control_body(self) -> dict[str, Any]:
        """A control endpoint's JSON object body ({} when there is none); anything else is a
        ValueError, which the control route answers with a 400."""
        body = self.json() if self.body else {}
        if not isinstance(body, dict):
            raise ValueError("the control body must be a JSON object")
        return body

    def json(self) -> Any:
        if not self.body:
            raise HttpError(400, "empty_body", "A JSON body is required.")
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(400, "invalid_body", f"The body is not valid JSON: {exc}") from exc


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        return cls(status, body, {"Content-Type": JSON, **(headers or {})})

    @classmethod
    def empty(cls, status: int = 204, headers: dict[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})


class HttpError(Exception):
    """Raised by handlers; the emulator renders it in its vendor's error shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    handler: Handler
    write: bool


# --------------------------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRequest:
    at: float
    method: str
    path: str
    route: str
    status: int
    write: bool


class RequestLog:
    """Every request that reached a vendor route: counts per route forever, entries bounded."""

    def __init__(self, max_entries: int = 50_000):
        self._lock = threading.Lock()
        self._entries: deque[LoggedRequest] = deque(maxlen=max_entries)
        self._counts: Counter[str] = Counter()
        self._writes = 0

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)
            self._counts[entry.route] += 1
            if entry.write:
                self._writes += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counts.clear()
            self._writes = 0

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def resize(self, max_entries: int) -> None:
        """Keep up to ``max_entries`` entries from now on (the newest ones stay)."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        with self._lock:
            self._entries = deque(self._entries, maxlen=max_entries)

    @property
    def max_entries(self) -> int:
        with self._lock:
            return self._entries.maxlen or 0

    def since(self, at: float) -> list[LoggedRequest]:
        """The entries logged at or after ``at`` (epoch seconds), oldest first."""
        with self._lock:
            return [e for e in self._entries if e.at >= at]

    def entries(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._entries)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    @property
    def writes(self) -> int:
        """Requests to routes that change state (vendor routes only)."""
        with self._lock:
            return self._writes

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._counts.values()),
                "writes": self._writes,
                "by_route": dict(sorted(self._counts.items())),
                "recent": [e.__dict__ for e in list(self._entries)[-200:]],
            }


# --------------------------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------------------------


@dataclass
class RateLimit:
    """A token bucket: ``burst`` requests at once, refilled at ``per_second``."""

    burst: int
    per_second: float
    retry_after: bool = True  # Identity Protection sends no Retry-After; Graph routes set False there


@dataclass
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_epoch: int  # when the bucket is full again, epoch seconds (Auth0's x-ratelimit-reset)
    retry_after_s: float  # until one request is allowed again
    send_retry_after: bool


class TokenBucket:
    """One rule's bucket. ``clock`` (epoch seconds) is injectable, so a test can pace callers against
    the very bucket the emulators serve on a simulated clock."""

    def __init__(self, spec: RateLimit, clock: Callable[[], float] = time.time):
        self.spec = spec
        self.clock = clock
        self.tokens = float(spec.burst)
        self.stamp = clock()

    def take(self) -> RateDecision:
        now = self.clock()
        rate = self.spec.per_second
        self.tokens = min(float(self.spec.burst), self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = now
        allowed = self.tokens >= 1.0
        if allowed:
            self.tokens -= 1.0
        to_full = (self.spec.burst - self.tokens) / rate if rate > 0 else 3600.0
        to_one = 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / rate if rate > 0 else 3600.0
        return RateDecision(
            allowed=allowed,
            limit=self.spec.burst,
            remaining=int(self.tokens),
            reset_epoch=int(now + to_full + 0.999),
            retry_after_s=to_one,
            send_retry_after=self.spec.retry_after,
        )


class RateLimiter:
    """Route-name globs mapped to buckets; the first matching glob's bucket applies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[tuple[str, TokenBucket]] = []

    def configure(self, limits: dict[str, RateLimit]) -> None:
        with self._lock:
            self._rules = [(glob, TokenBucket(spec)) for glob, spec in limits.items()]

    def rules(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {glob: bucket.spec.__dict__.copy() for glob, bucket in self._rules}

    def check(self, route: str) -> RateDecision | None:
        with self._lock:
            for glob, bucket in self._rules:
                if fnmatch.fnmatchcase(route, glob):
                    return bucket.take()
        return None


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------


@dataclass
class FaultRule:
    """Applies to routes matching ``route`` (a glob) with probability ``rate``.

    kind ``error``: answer ``status`` (default 503) instead of handling the request, with a
    ``Retry-After: <retry_after_s>`` header when that is set.
    kind ``delay``: wait ``delay_s`` and then handle the request normally.
    kind ``drop``: wait ``delay_s`` and close the connection without an answer (a timeout).
    ``count`` limits how many times the rule fires (``None``: unlimited).
    """

    route: str
    kind: str = "error"
    rate: float = 1.0
    status: int = 503
    delay_s: float = 0.0
    count: int | None = None
    retry_after_s: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in {"error", "delay", "drop"}:
            raise ValueError(f"unknown fault kind {self.kind!r} (error, delay, drop)")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within 0..1, got {self.rate}")


class FaultInjector:
    """Seeded, so a run with the same seed and the same request order fails the same way."""

    def __init__(self, seed: int = 0):
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._random = random.Random(seed)

    def configure(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        with self._lock:
            self._rules = list(rules)
            if seed is not None:
                self._random = random.Random(seed)

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.__dict__.copy() for r in self._rules]

    def pick(self, route: str) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.count is not None and rule.count <= 0:
                    continue
                if not fnmatch.fnmatchcase(route, rule.route):
                    continue
                if self._random.random() < rule.rate:
                    if rule.count is not None:
                        rule.count -= 1
                    return rule
        return None

    def chance(self, rate: float) -> bool:
        """A seeded coin for emulator-internal faults (for example dropped notifications)."""
        with self._lock:
            return self._random.random() < rate


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


class _DropConnection(Exception):
    pass


class Emulator:
    """Base class: subclasses register routes and implement the vendor hooks.

    Start in-process with ``start()`` (port 0 picks a free port) and stop with ``stop()``, or use
    it as a context manager.
    """

    #: Prefix of every vendor route, e.g. ``/v1.0`` for Graph, ``/api/v2`` for Auth0.
    api_prefix = ""
    name = "emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, fault_seed: int = 0):
        if host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError("the sandbox only listens on loopback")
        self.host = host
        self._port = port
        self._routes: list[Route] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.RLock()  # guards the emulator's state
        self.log = RequestLog()
        self.limits = RateLimiter()
        self.faults = FaultInjector(fault_seed)
        self._register_control_routes()

    # -- routing -------------------------------------------------------------------------------

    def add_route(self, method: str, pattern: str, name: str, handler: Handler, write: bool | None = None) -> None:
        """``pattern`` is a regex over the percent-encoded path (``^`` and ``$`` are implied).

        Named groups become ``request.params``, percent-decoded, so ``[^/]+`` captures an id that
        holds an encoded ``/``.
        """
        compiled = re.compile("^" + pattern + "$")
        is_write = method not in {"GET", "HEAD"} if write is None else write
        self._routes.append(Route(method, compiled, name, handler, is_write))

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        path_known = False
        for route in self._routes:
            m = route.pattern.match(path)
            if m:
                path_known = True
                if route.method == method:
                    return route, {k: unquote(v) for k, v in m.groupdict().items()}, True
        return None, {}, path_known

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{self.name} emulator is not running")
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Where SDKs point: origin plus the API prefix."""
        return self.origin + self.api_prefix

    def start(self) -> Self:
        emulator: Emulator = self

        class _Handler(_RequestHandler):
            owner = emulator

        httpd = ThreadingHTTPServer((self.host, self._port), _Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.name}-http", daemon=True
        )
        self._thread.start()
        self.on_start()
        return self

    def stop(self) -> None:
        self.on_stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def on_start(self) -> None:
        """Hook: start background workers (e.g. notification delivery)."""

    def on_stop(self) -> None:
        """Hook: stop background workers."""

    # -- vendor hooks --------------------------------------------------------------------------

    def authenticate(self, request: Request) -> None:
        """Raise ``HttpError(401, ...)`` when the request may not call the vendor API."""

    def error_response(self, error: HttpError) -> Response:
        return Response.json({"error": error.code, "message": error.message}, error.status, error.headers)

    def rate_limited_response(self, route: str, decision: RateDecision) -> Response:
        headers = self.rate_limit_headers(decision)
        return self.error_response(HttpError(429, "too_many_requests", "Too many requests.", headers))

    def rate_limit_headers(self, decision: RateDecision) -> dict[str, str]:
        headers: dict[str, str] = {}
        if not decision.allowed and decision.send_retry_after:
            headers["Retry-After"] = str(max(1, int(decision.retry_after_s + 0.999)))
        return headers

    # -- state hooks (control endpoints) -------------------------------------------------------

    def reset(self) -> None:
        """Forget all state."""

    def seed(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Replace state with seeded data; returns a summary."""
        raise HttpError(400, "not_supported", f"{self.name} cannot be seeded")

    def snapshot(self) -> dict[str, Any]:
        return {}

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/_control/"):
            return self._dispatch_control(request)
        route, params, path_known = self._match(request.method, request.path)
        if route is None:
            status, code = (405, "method_not_allowed") if path_known else (404, "not_found")
            err = HttpError(status, code, f"No route for {request.method} {request.path}")
            resp = self.error_response(err)
            self.log.add(LoggedRequest(time.time(), request.method, request.path, "<unrouted>", status, False))
            return resp
        request.params = params
        request.route = route.name
        try:
            resp = self._dispatch_vendor(route, request)
        except _DropConnection:
            self.log.add(LoggedRequest(time.time(), request.method, request.path, route.name, 0, route.write))
            raise
        self.log.add(LoggedRequest(time.time(), request.method, request.path, route.name, resp.status, route.write))
        return resp

    def _dispatch_vendor(self, route: Route, request: Request) -> Response:
        try:
            self.authenticate(request)
            decision = self.limits.check(route.name)
            if decision is not None and not decision.allowed:
                return self.rate_limited_response(route.name, decision)
            fault = self.faults.pick(route.name)
            if fault is not None:
                if fault.kind in {"delay", "drop"} and fault.delay_s > 0:
                    time.sleep(fault.delay_s)
                if fault.kind == "drop":
                    raise _DropConnection()
                if fault.kind == "error":
                    told = {} if fault.retry_after_s is None else {"Retry-After": str(fault.retry_after_s)}
                    return self.error_response(HttpError(fault.status, "injected_fault", "Injected fault.", told))
            resp = route.handler(request)
            if decision is not None:
                resp.headers.update(self.rate_limit_headers(decision))
            return resp
        except HttpError as err:
            return self.error_response(err)

    # -- control endpoints ---------------------------------------------------------------------

    def _register_control_routes(self) -> None:
        self._control: dict[tuple[str, str], Handler] = {
            ("POST", "/_control/reset"): self._control_reset,
            ("POST", "/_control/seed"): lambda r: Response.json(self.seed(r.json() if r.body else {})),
            ("GET", "/_control/snapshot"): lambda r: Response.json(self.snapshot()),
            ("GET", "/_control/requests"): lambda r: Response.json(self.log.summary()),
            ("DELETE", "/_control/requests"): self._control_clear_log,
            ("GET", "/_control/requests/entries"): self._control_log_entries,
            ("PUT", "/_control/requests/size"): self._control_log_size,
            ("GET", "/_control/limits"): lambda r: Response.json(self.limits.rules()),
            ("PUT", "/_control/limits"): self._control_limits,
            ("GET", "/_control/faults"): lambda r: Response.json(self.faults.rules()),
            ("PUT", "/_control/faults"): self._control_faults,
        }

    def add_control_route(self, method: str, path: str, handler: Handler) -> None:
        self._control[(method, path)] = handler

    def _dispatch_control(self, request: Request) -> Response:
        handler = self._control.get((request.method, request.path))
        if handler is None:
            return Response.json({"error": "not_found", "message": f"no control route {request.path}"}, 404)
        try:
            return handler(request)
        except HttpError as err:
            return Response.json({"error": err.code, "message": err.message}, err.status)
        except (TypeError, ValueError, KeyError) as exc:
            return Response.json({"error": "bad_control_request", "message": str(exc)}, 400)

    def _control_reset(self, request: Request) -> Response:
        with self.lock:
            self.reset()
        self.log.clear()
        self.limits.configure({})
        self.faults.configure([])
        return Response.empty()

    def _control_clear_log(self, request: Request) -> Response:
        self.log.clear()
        return Response.empty()

    def _control_log_entries(self, request: Request) -> Response:
        """The timestamped entries since ``?since=`` (epoch seconds, default all), as rows
        ``[at, method, path, route, status, write]``, with how many the log may hold."""
        since = float(request.arg("since") or 0.0)
        rows = [[e.at, e.method, e.path, e.route, e.status, e.write] for e in self.log.since(since)]
        return Response.json({"max_entries": self.log.max_entries, "entries": rows})

    def _control_log_size(self, request: Request) -> Response:
        self.log.resize(int(request.json()["max_entries"]))
        return Response.json({"max_entries": self.log.max_entries})

    def _control_limits(self, request: Request) -> Response:
        body = request.json()
        self.limits.configure({glob: RateLimit(**spec) for glob, spec in body.items()})
        return Response.json(self.limits.rules())

    def _control_faults(self, request: Request) -> Response:
        body = request.json()
        self.faults.configure([FaultRule(**rule) for rule in body.get("rules", [])], body.get("seed"))
        return Response.json(self.faults.rules())


class _RequestHandler(BaseHTTPRequestHandler):
    owner: Emulator
    protocol_version = "HTTP/1.1"  # keep-alive: SDK clients reuse connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server_version = "entra-sync-sandbox"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.owner.name, format % args)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=split.path,
            raw_path=self.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            response = self.owner.dispatch(request)
        except _DropConnection:
            self.close_connection = True
            return
        except Exception as exc:  # an emulator bug must show as a 500, not a hung client
            log.exception("%s: unhandled error on %s %s", self.owner.name, self.command, self.path)
            response = self.owner.error_response(HttpError(500, "emulator_error", repr(exc)))
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _handle
