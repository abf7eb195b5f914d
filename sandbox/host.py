"""A small stand-in for the Azure Functions host, for the demo, end-to-end tests and benchmarks.

Azure Functions Core Tools cannot be installed here, so this module drives the functions of a v2
(decorator) Python app the way the host and the Python worker would:

* **Indexing.** ``app.get_functions()`` is called once per app object (a second call fails on
  duplicate names); already indexed functions can be passed with :meth:`FunctionsHost.from_functions`.
  Bindings are read from each function's raw binding JSON (``type``, ``route``, ``methods``,
  ``authLevel``, ``queueName``, ``connection``, ``schedule``, ``name``). ``%NAME%`` in a queue name
  or schedule is resolved from the app settings (the environment), as the host does. Bindings this
  shim cannot serve (anything besides an HTTP, queue or timer trigger and the HTTP ``$return``
  output) are refused at start-up rather than silently ignored.
* **One event loop.** All invocations run on one asyncio loop in a background thread, like the
  Python worker: ``async def`` functions run on that loop (so SDK clients the app caches stay bound
  to it) and plain functions run in a thread pool (the worker's default pool size).
* **HTTP triggers.** An HTTP/1.1 server (aiohttp's) on 127.0.0.1, on the invocations' own loop
  (as the host hands requests to the worker's loop; a thread per connection would compete with the
  loop for the GIL), serves ``/{routePrefix}/{route}`` (``extensions.http.routePrefix``, default
  ``api``; the route defaults to the function name; route templates support ``{name}``,
  ``{name?}``, ``{name:int}``-style constraints and ``{*rest}``).
  ``authLevel`` ``function``/``admin`` needs the key in ``?code=`` or ``x-functions-key`` when a
  ``function_key`` is configured (401 otherwise); without a key nothing is enforced, which is what
  Core Tools does locally. A known route called with a method it does not accept answers 405 by
  default (the real host answers 404 there: azure-functions-host issue #10098; pass
  ``method_not_allowed_status=404`` to mimic it). An exception in the function answers 500 with an
  empty body. A returned ``str`` is a 200 ``text/plain`` answer; the ``Content-Type`` of an
  ``HttpResponse`` without one is built from ``mimetype``/``charset`` as the worker does.
* **Queue triggers** (the WebJobs storage extension's ``QueueListener``/``QueueProcessor``):
  messages are fetched in batches of ``batchSize``; a new batch is fetched whenever the number of
  messages in flight drops to ``newBatchThreshold`` or below, so at most ``batchSize +
  newBatchThreshold`` run at once per function. Message text is base64-decoded (the extension's
  default ``messageEncoding``; ``"none"`` passes the text through as UTF-8); a message that does not
  decode goes straight to the poison queue, as the extension does. On success the message is
  deleted; on failure it is made visible again after ``visibilityTimeout`` and its dequeue count
  grows with the next receive; when a failed attempt had ``dequeueCount >= maxDequeueCount`` (or a
  received message already exceeds it) the original message text is copied to ``<queue>-poison``
  (created on demand) and the message is deleted. Trigger queues are created if missing.
* **Timer triggers** are not scheduled: :meth:`FunctionsHost.run_timer` invokes one with
  ``TimerRequest(past_due=...)``; :meth:`FunctionsHost.schedule` exposes its NCRONTAB expression.

Simplifications (documented, deliberate): one storage connection string serves every ``connection``
name; queues are polled at a fixed ``polling_interval_s`` (no exponential back-off up to
``maxPollingInterval`` unless ``poll_backoff`` is set); messages are received invisible for
``functionTimeout`` plus a minute instead of 10 minutes renewed while running; ``functionTimeout`` is
not enforced on running functions; dynamic concurrency, retry policies, output and input bindings are
not supported.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import inspect
import itertools
import json
import logging
import math
import os
import re
import socket
import statistics
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient

log = logging.getLogger("sandbox.host")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOST_JSON = REPO_ROOT / "host.json"

T = TypeVar("T")

# The Azure load balancer gives an HTTP-triggered function at most 230 s to answer.
HTTP_ANSWER_LIMIT_S = 230.0
HTTP_BODY_LIMIT = 100 * 1024 * 1024  # the host's maxRequestLength: 100 MB
# Longest visibility timeout Azure Storage accepts (7 days).
MAX_VISIBILITY_S = 7 * 24 * 3600
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_SETTING_REF = re.compile(r"%([^%]+)%")
_SUPPORTED_TRIGGERS = ("httpTrigger", "queueTrigger", "timerTrigger")
_INSTANCES = itertools.count(1)


class HostConfigurationError(ValueError):
    """host.json or the app's bindings ask for something this shim cannot serve faithfully."""


# --------------------------------------------------------------------------------------------
# host.json


def parse_timespan(value: Any, *, int_unit_s: float = 1.0) -> float:
    """A host.json TimeSpan (``"[d.]hh:mm:ss[.fff]"``) in seconds; numbers are taken in ``int_unit_s``."""
    if isinstance(value, bool):
        raise HostConfigurationError(f"not a time span: {value!r}")
    if isinstance(value, int | float):
        return float(value) * int_unit_s
    m = re.fullmatch(r"\s*(-)?(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)\s*", str(value))
    if not m:
        raise HostConfigurationError(f"not a time span: {value!r}")
    sign, days, hours, minutes, seconds = m.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return -total if sign else total


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` of host.json, with the storage extension's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout_s: float = 0.0
    max_polling_interval_s: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueueOptions:
        batch_size = int(data.get("batchSize", 16))
        if not 1 <= batch_size <= 32:
            raise HostConfigurationError(f"extensions.queues.batchSize must be 1..32, not {batch_size}")
        # The extension's default is (number of processors) * batchSize / 2.
        default_threshold = max(1, (os.cpu_count() or 1) * batch_size // 2)
        threshold = int(data.get("newBatchThreshold", default_threshold))
        if threshold < 0:
            raise HostConfigurationError("extensions.queues.newBatchThreshold must not be negative")
        max_dequeue = int(data.get("maxDequeueCount", 5))
        if max_dequeue < 1:
            raise HostConfigurationError("extensions.queues.maxDequeueCount must be at least 1")
        encoding = str(data.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise HostConfigurationError(f"extensions.queues.messageEncoding must be base64 or none, not {encoding}")
        return cls(
            batch_size=batch_size,
            new_batch_threshold=threshold,
            max_dequeue_count=max_dequeue,
            visibility_timeout_s=parse_timespan(data.get("visibilityTimeout", 0)),
            # Version 1 host.json gave maxPollingInterval in milliseconds.
            max_polling_interval_s=parse_timespan(data.get("maxPollingInterval", "00:01:00"), int_unit_s=0.001),
            message_encoding=encoding,
        )


@dataclass(frozen=True)
class HostOptions:
    route_prefix: str = "api"
    function_timeout_s: float | None = 30 * 60.0
    queues: QueueOptions = field(default_factory=QueueOptions)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostOptions:
        extensions = data.get("extensions") or {}
        http = extensions.get("http") or {}
        timeout = data.get("functionTimeout")
        timeout_s = parse_timespan(timeout) if timeout is not None else 30 * 60.0
        return cls(
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
            function_timeout_s=None if timeout_s < 0 else timeout_s,
            queues=QueueOptions.from_json(extensions.get("queues") or {}),
        )

    @classmethod
    def load(cls, host_json: Path | Mapping[str, Any] | None) -> HostOptions:
        if host_json is None:
            host_json = DEFAULT_HOST_JSON
        if isinstance(host_json, Path):
            data: Mapping[str, Any] = json.loads(host_json.read_text(encoding="utf-8"))
        else:
            data = host_json
        return cls.from_json(data)


# --------------------------------------------------------------------------------------------
# Indexed functions


@dataclass(frozen=True)
class FunctionInfo:
    """What the host knows about one indexed function."""

    name: str
    trigger_type: str  # httpTrigger | queueTrigger | timerTrigger
    binding_name: str  # the parameter the trigger value is passed as
    bindings: tuple[Mapping[str, Any], ...]
    user_function: Callable[..., Any]
    is_async: bool
    wants_context: bool
    route: str | None = None
    methods: tuple[str, ...] | None = None  # None: every method
    auth_level: str | None = None
    queue_name: str | None = None
    connection: str | None = None
    schedule: str | None = None


def _resolve_settings(value: str, settings: Mapping[str, str], what: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in settings:
            raise HostConfigurationError(f"{what} refers to app setting %{name}%, which is not set")
        return settings[name]

    return _SETTING_REF.sub(sub, value)


def _describe(function: Any, settings: Mapping[str, str]) -> FunctionInfo:
    name = str(function.get_function_name())
    bindings = tuple(json.loads(raw) for raw in function.get_raw_bindings())
    triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
    if len(triggers) != 1:
        raise HostConfigurationError(f"function {name} has {len(triggers)} triggers, expected one")
    trigger = triggers[0]
    kind = str(trigger["type"])
    if kind not in _SUPPORTED_TRIGGERS:
        raise HostConfigurationError(f"function {name}: trigger type {kind} is not served by this host")
    for binding in bindings:
        if binding is trigger:
            continue
        if binding.get("type") == "http" and kind == "httpTrigger":
            continue
        raise HostConfigurationError(
            f"function {name}: binding {binding.get('name')!r} of type {binding.get('type')!r} is not "
            "supported by the sandbox host"
        )
    user_function = function.get_user_function()
    try:
        parameters = inspect.signature(user_function).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    info: dict[str, Any] = {
        "name": name,
        "trigger_type": kind,
        "binding_name": str(trigger["name"]),
        "bindings": bindings,
        "user_function": user_function,
        "is_async": inspect.iscoroutinefunction(user_function),
        "wants_context": "context" in parameters,
    }
    if kind == "httpTrigger":
        methods = trigger.get("methods")
        info["route"] = str(trigger.get("route") or name).strip("/")
        info["methods"] = tuple(str(m).upper() for m in methods) if methods else None
        info["auth_level"] = str(trigger.get("authLevel") or "function").lower()
    elif kind == "queueTrigger":
        queue = _resolve_settings(str(trigger["queueName"]), settings, f"function {name} queueName").lower()
        if not _QUEUE_NAME.match(queue):
            raise HostConfigurationError(f"function {name}: {queue!r} is not a valid queue name")
        info["queue_name"] = queue
        info["connection"] = trigger.get("connection") or "AzureWebJobsStorage"
    else:
        info["schedule"] = _resolve_settings(str(trigger["schedule"]), settings, f"function {name} schedule")
    return FunctionInfo(**info)


# get_functions() may run only once per app object: remember what each app indexed to.
_INDEXED: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
_INDEX_LOCK = threading.Lock()


def index_app(app: Any) -> list[Any]:
    """``app.get_functions()``, called at most once per app object."""
    with _INDEX_LOCK:
        try:
            return _INDEXED[app]
        except KeyError:
            pass
        except TypeError:
            return list(app.get_functions())
        functions = list(app.get_functions())
        _INDEXED[app] = functions
        return functions


# --------------------------------------------------------------------------------------------
# HTTP routing

_ROUTE_TOKEN = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}


@dataclass(frozen=True)
class _Route:
    function: FunctionInfo
    pattern: re.Pattern[str]
    precedence: tuple[int, int, int]


def _param_regex(token: str) -> tuple[str, str, bool, bool]:
    """(name, regex, optional, catch_all) for the inside of one ``{...}`` route token."""
    catch_all = token.startswith("*")
    token = token.lstrip("*")
    optional = token.endswith("?")
    token = token.rstrip("?")
    if "=" in token:  # a default value makes the parameter optional
        token, _default = token.split("=", 1)
        optional = True
    name, *constraints = token.split(":")
    regex = ".*" if catch_all else "[^/]+"
    for constraint in constraints:
        known = _CONSTRAINTS.get(constraint.split("(")[0].lower())
        if known is not None and not catch_all:
            regex = known
    if not name.isidentifier():
        raise HostConfigurationError(f"route parameter {name!r} is not supported by the sandbox host")
    return name, regex, optional, catch_all


def compile_route(template: str) -> tuple[re.Pattern[str], tuple[int, int, int]]:
    """A regex for an ASP.NET-style route template and its precedence (literal routes first)."""
    parts: list[str] = []
    literals = params = catch_alls = 0
    for i, segment in enumerate(s for s in template.strip("/").split("/") if s != ""):
        sep = "/" if i else ""
        whole = _ROUTE_TOKEN.fullmatch(segment)
        if whole:
            name, regex, optional, catch_all = _param_regex(whole.group(1))
            params += 1
            catch_alls += int(catch_all)
            inner = f"{sep}(?P<{name}>{regex})"
            parts.append(f"(?:{inner})?" if optional or catch_all else inner)
            continue
        pieces: list[str] = []
        last = 0
        for m in _ROUTE_TOKEN.finditer(segment):
            pieces.append(re.escape(segment[last : m.start()]))
            name, regex, _optional, _catch_all = _param_regex(m.group(1))
            pieces.append(f"(?P<{name}>{regex})")
            params += 1
            last = m.end()
        pieces.append(re.escape(segment[last:]))
        literals += int(last == 0)
        parts.append(sep + "".join(pieces))
    pattern = re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE)
    return pattern, (catch_alls, -literals, params)


@dataclass
class HttpResult:
    """The answer to one HTTP invocation, as the client would receive it."""

    status_code: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float
    function: str | None = None

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


# --------------------------------------------------------------------------------------------
# Statistics


@dataclass
class _FunctionStats:
    invocations: int = 0
    succeeded: int = 0
    failed: int = 0
    poisoned: int = 0
    run_time_s: list[float] = field(default_factory=list)
    queue_wait_s: list[float] = field(default_factory=list)
    answer_time_s: list[float] = field(default_factory=list)


def _summary(samples: list[float]) -> dict[str, float | int]:
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]

    return {
        "count": len(ordered),
        "mean": statistics.fmean(ordered),
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "max": ordered[-1],
    }


class _Context(func.Context):
    """The ``context`` argument the worker passes to functions that declare one."""

    def __init__(self, invocation_id: str, function_name: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return str(REPO_ROOT)

    @property
    def trace_context(self) -> Any:
        return None  # the sandbox has no distributed tracing

    @property
    def retry_context(self) -> Any:
        return None  # no retry policy is configured

    @property
    def thread_local_storage(self) -> Any:
        return self._local


# --------------------------------------------------------------------------------------------
# The host


class FunctionsHost:
    """Runs an indexed v2 Function App's HTTP, queue and timer functions like the Functions host.

    Usage::

        with FunctionsHost(function_app.app, storage_connection=azurite.connection_string,
                           visibility_timeout_s=0.2, function_key="k") as host:
            httpx.get(f"{host.base_url}/health", headers={"x-functions-key": "k"})
            host.run_timer("delta_sync")
            assert host.wait_idle(10)
            print(host.stats())
    """

    def __init__(
        self,
        app: Any,
        *,
        storage_connection: str,
        host_json: Path | Mapping[str, Any] | None = None,
        visibility_timeout_s: float | None = None,
        polling_interval_s: float = 0.05,
        http_port: int = 0,
        function_key: str | None = None,
        method_not_allowed_status: int = 405,
        app_settings: Mapping[str, str] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        serve_http: bool = True,
        run_queues: bool = True,
    ) -> None:
        self._init(
            index_app(app),
            storage_connection=storage_connection,
            host_json=host_json,
            visibility_timeout_s=visibility_timeout_s,
            polling_interval_s=polling_interval_s,
            http_port=http_port,
            function_key=function_key,
            method_not_allowed_status=method_not_allowed_status,
            app_settings=app_settings,
            on_stop=on_stop,
            serve_http=serve_http,
            run_queues=run_queues,
        )

    @classmethod
    def from_functions(cls, functions: Iterable[Any], **kwargs: Any) -> FunctionsHost:
        """A host for functions that were already indexed (``app.get_functions()`` runs only once)."""
        host = cls.__new__(cls)
        host._init(list(functions), **kwargs)
        return host

    def _init(
        self,
        functions: list[Any],
        *,
        storage_connection: str,
        host_json: Path | Mapping[str, Any] | None = None,
        visibility_timeout_s: float | None = None,
        polling_interval_s: float = 0.05,
        http_port: int = 0,
        function_key: str | None = None,
        method_not_allowed_status: int = 405,
        app_settings: Mapping[str, str] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        serve_http: bool = True,
        run_queues: bool = True,
    ) -> None:
        self.options = HostOptions.load(host_json)
        # False: queues and timers only, as a Functions instance the load balancer sends no HTTP to.
        self.serve_http = serve_http
        # False: no queue is polled, as an instance of Flex Consumption's HTTP group (per-function
        # scaling: HTTP triggers share instances of their own, each queue trigger scales apart).
        self.run_queues = run_queues
        # Observers for benchmarks, called on the thread that saw it (keep them cheap):
        # ``on_http(function, body, received_epoch)`` before an HTTP function runs, and
        # ``on_message(function, body, started_epoch, finished_epoch, ok)`` after a queue function ran.
        self.on_http: Callable[[str, bytes, float], None] | None = None
        self.on_message: Callable[[str, bytes, float, float, bool], None] | None = None
        # True: an idle queue is polled as the storage extension does, the wait doubling from 100 ms
        # after each empty receive up to ``maxPollingInterval`` and back to none after a message;
        # False (default): every ``polling_interval_s``.
        self.poll_backoff = False
        self.storage_connection = storage_connection
        self.visibility_timeout_s = (
            self.options.queues.visibility_timeout_s if visibility_timeout_s is None else float(visibility_timeout_s)
        )
        if self.visibility_timeout_s < 0:
            raise HostConfigurationError("visibility timeout must not be negative")
        self.polling_interval_s = polling_interval_s
        self.function_key = function_key
        self.method_not_allowed_status = method_not_allowed_status
        self._http_port = http_port
        self._on_stop = on_stop
        settings = dict(os.environ if app_settings is None else app_settings)

        self.functions: dict[str, FunctionInfo] = {}
        for function in functions:
            info = _describe(function, settings)
            if info.name in self.functions:
                raise HostConfigurationError(f"two functions are named {info.name}")
            self.functions[info.name] = info
        self._routes = sorted(
            (
                _Route(info, *compile_route(info.route or info.name))
                for info in self.functions.values()
                if info.trigger_type == "httpTrigger"
            ),
            key=lambda r: r.precedence,
        )
        self._fetch_visibility_s = int(
            min(MAX_VISIBILITY_S, (self.options.function_timeout_s or MAX_VISIBILITY_S - 60) + 60)
        )

        self._lock = threading.Lock()
        self._stats: dict[str, _FunctionStats] = {name: _FunctionStats() for name in self.functions}
        self._unrouted_requests = 0
        self._http_inflight = 0
        self._active_invocations = 0
        # Loop-thread state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._clients: dict[str, QueueClient] = {}
        self._listeners: list[asyncio.Task[None]] = []
        self._message_tasks: set[asyncio.Task[None]] = set()
        self._releases: set[asyncio.Task[None]] = set()
        self._running = 0
        self._fetching = 0
        self._started = False
        self._stopped = False
        self.instance_id = next(_INSTANCES)

    # ---------------------------------------------------------------- public API

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/api`` (no trailing slash; no prefix segment if routePrefix is empty)."""
        if self._bound_port is None:
            raise RuntimeError("the host is not started")
        port = self._bound_port
        prefix = f"/{self.options.route_prefix}" if self.options.route_prefix else ""
        return f"http://127.0.0.1:{port}{prefix}"

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the host is not started")
        return self._bound_port

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop every invocation runs on."""
        if self._loop is None:
            raise RuntimeError("the host is not started")
        return self._loop

    def schedule(self, name: str) -> str:
        """The NCRONTAB expression of a timer function (``%SETTING%`` resolved)."""
        info = self._function(name, "timerTrigger")
        assert info.schedule is not None
        return info.schedule

    def queue_names(self) -> list[str]:
        """The queues the app's queue-triggered functions listen to."""
        return sorted({i.queue_name for i in self.functions.values() if i.queue_name})

    def start(self) -> FunctionsHost:
        if self._started:
            raise RuntimeError("the host was already started (a stopped host cannot be restarted)")
        self._started = True
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run_loop() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        # The Python worker runs sync functions in a ThreadPoolExecutor of the default size.
        self._executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix=f"functions-sync-{self.instance_id}")
        self._loop_thread = threading.Thread(
            target=run_loop, name=f"functions-host-loop-{self.instance_id}", daemon=True
        )
        self._loop_thread.start()
        ready.wait(10)
        try:
            self.run_coroutine(self._start_listeners(), timeout_s=30)
            if self.serve_http:
                self.run_coroutine(self._start_http(), timeout_s=30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop serving: HTTP first, then queue polling; wait up to ``grace_s`` for running functions,
        cancel the rest (their messages are made visible again), close clients, join threads."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        loop = self._loop
        if self._runner is not None and loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(grace_s + 5)
            except Exception:
                log.exception("sandbox host: the HTTP server did not close cleanly")
        if loop is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(grace_s), loop)
            try:
                fut.result(grace_s + 15)
            except Exception:
                log.exception("sandbox host: shutdown did not complete cleanly")
            loop.call_soon_threadsafe(loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join(10)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> FunctionsHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_coroutine(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = 60.0) -> T:
        """Run a coroutine on the host's loop (where the app's async clients live) and wait for it."""
        loop = self._loop
        if loop is None or not loop.is_running():
            coro.close()
            raise RuntimeError("the host is not running")
        if threading.current_thread() is self._loop_thread:
            coro.close()
            raise RuntimeError("run_coroutine would deadlock when called from the host's own loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    def run_timer(self, name: str, past_due: bool = False, timeout_s: float | None = None) -> Any:
        """Invoke a timer function now with ``TimerRequest(past_due=...)``; its exception propagates."""
        info = self._function(name, "timerTrigger")
        request = TimerRequest(past_due=past_due)
        return self.run_coroutine(self._invoke(info, request), timeout_s or self.options.function_timeout_s)

    def invoke_http(
        self,
        name_or_route: str,
        method: str = "GET",
        body: bytes | str = b"",
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        route_params: Mapping[str, str] | None = None,
    ) -> HttpResult:
        """Call an HTTP function without the socket, with the same routing and key checks.

        ``name_or_route`` is a function name (then ``route_params`` are passed as given) or a path
        below the route prefix such as ``"items/42"`` (then it is routed like a request).
        """
        data = body.encode("utf-8") if isinstance(body, str) else body
        hdrs = dict(headers or {})
        query = dict(params or {})
        info = self.functions.get(name_or_route)
        if info is not None and info.trigger_type == "httpTrigger":
            started = time.perf_counter()
            url = self._url_for(info.route or info.name, query)
            serving = self._serve_async(info, method.upper(), url, hdrs, query, dict(route_params or {}), data, started)
            result = self.run_coroutine(serving, timeout_s=None)
            self._record_answer(info.name, result.elapsed_s)
            return result
        path = "/" + name_or_route.lstrip("/")
        prefix = f"/{self.options.route_prefix}" if self.options.route_prefix else ""
        result = self._dispatch(method.upper(), prefix + path, query, hdrs, data)
        if result.function is not None:
            self._record_answer(result.function, result.elapsed_s)
        return result

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """True once the listened queues are empty (invisible messages count) and nothing runs or
        waits to be released; False if that did not happen within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                if self.run_coroutine(self._is_idle(), timeout_s=max(remaining, 0.5)):
                    return True
            except TimeoutError:
                return False
            time.sleep(min(self.polling_interval_s, max(0.0, deadline - time.monotonic())))

    def stats(self, raw: bool = False) -> dict[str, Any]:
        """Per function: invocations, succeeded, failed, poisoned, and timing summaries in seconds
        (``run_time_s``; ``queue_wait_s`` = start - insertion time, whole-second resolution like the
        service's timestamps; ``answer_time_s`` for HTTP, including 401/405 answers).
        ``raw=True`` adds the samples."""
        with self._lock:
            out: dict[str, Any] = {}
            for name, s in self._stats.items():
                entry: dict[str, Any] = {
                    "trigger": self.functions[name].trigger_type,
                    "invocations": s.invocations,
                    "succeeded": s.succeeded,
                    "failed": s.failed,
                    "poisoned": s.poisoned,
                    "run_time_s": _summary(s.run_time_s),
                    "queue_wait_s": _summary(s.queue_wait_s),
                    "answer_time_s": _summary(s.answer_time_s),
                }
                if raw:
                    entry["samples"] = {
                        "run_time_s": list(s.run_time_s),
                        "queue_wait_s": list(s.queue_wait_s),
                        "answer_time_s": list(s.answer_time_s),
                    }
                out[name] = entry
            out["_host"] = {"unrouted_requests": self._unrouted_requests}
            return out

    # ---------------------------------------------------------------- invocation

    def _function(self, name: str, trigger_type: str) -> FunctionInfo:
        info = self.functions.get(name)
        if info is None or info.trigger_type != trigger_type:
            known = sorted(n for n, i in self.functions.items() if i.trigger_type == trigger_type)
            raise KeyError(f"no {trigger_type} function named {name!r} (known: {', '.join(known) or 'none'})")
        return info

    async def _call(self, info: FunctionInfo, trigger_value: Any) -> Any:
        kwargs: dict[str, Any] = {info.binding_name: trigger_value}
        if info.wants_context:
            kwargs["context"] = _Context(str(uuid.uuid4()), info.name)
        if info.is_async:
            return await info.user_function(**kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(info.user_function, **kwargs))

    async def _invoke(self, info: FunctionInfo, trigger_value: Any, queue_wait_s: float | None = None) -> Any:
        """Call the function, recording counts and timings; exceptions propagate."""
        started = time.perf_counter()
        with self._lock:
            self._active_invocations += 1
            self._stats[info.name].invocations += 1
            if queue_wait_s is not None:
                self._stats[info.name].queue_wait_s.append(queue_wait_s)
        ok = False
        try:
            result = await self._call(info, trigger_value)
            ok = True
            return result
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._active_invocations -= 1
                s = self._stats[info.name]
                s.run_time_s.append(elapsed)
                if ok:
                    s.succeeded += 1
                else:
                    s.failed += 1

    # ---------------------------------------------------------------- HTTP

    async def _start_http(self) -> None:
        """Serve HTTP on the host's own loop (aiohttp's server), as the Functions host hands requests
        to the worker's one event loop: no thread per connection competing with the loop for the GIL."""
        app = web.Application(client_max_size=HTTP_BODY_LIMIT)
        app.router.add_route("*", "/{tail:.*}", self._handle_http)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self._http_port))  # port 0: one the system picks, read back below
            await web.SockSite(runner, sock, backlog=1024).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(sock.getsockname()[1])

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413)
        split = urlsplit(request.raw_path)
        query = _query_dict(split.query)
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        url = f"http://127.0.0.1:{self.port}{request.raw_path}"
        result = await self._dispatch_async(request.method, split.path, query, headers, body, url, started)
        response = web.Response(status=result.status_code, body=result.body)
        for key, value in result.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                response.headers[key] = value
        if result.function is not None:
            self._record_answer(result.function, time.perf_counter() - started)
        return response

    def _url_for(self, path: str, query: Mapping[str, str]) -> str:
        prefix = f"/{self.options.route_prefix}" if self.options.route_prefix else ""
        base = f"http://127.0.0.1:{self.port}" if self._bound_port is not None else "http://localhost"
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{base}{prefix}/{path.lstrip('/')}" + (f"?{qs}" if qs else "")

    def _record_answer(self, name: str, elapsed_s: float) -> None:
        with self._lock:
            self._stats[name].answer_time_s.append(elapsed_s)

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> HttpResult:
        """:meth:`_dispatch_async` from a thread other than the loop's (:meth:`invoke_http`)."""
        return self.run_coroutine(self._dispatch_async(method, path, query, headers, body), timeout_s=None)

    async def _dispatch_async(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        url: str | None = None,
        started: float | None = None,
    ) -> HttpResult:
        """Route one request (path includes the route prefix) and answer it, on the host's loop."""
        started = time.perf_counter() if started is None else started
        prefix = f"/{self.options.route_prefix}" if self.options.route_prefix else ""
        decoded = path
        rest: str | None = None
        if not prefix:
            rest = decoded.lstrip("/")
        elif decoded.lower() == prefix.lower() or decoded.lower().startswith(prefix.lower() + "/"):
            rest = decoded[len(prefix) :].lstrip("/")
        method_mismatch: FunctionInfo | None = None
        if rest is not None:
            for route in self._routes:
                m = route.pattern.match(rest)
                if m is None:
                    continue
                info = route.function
                if info.methods is not None and method not in info.methods:
                    method_mismatch = method_mismatch or info
                    continue
                route_params = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                full_url = url or self._url_for(rest, query)
                return await self._serve_async(info, method, full_url, headers, query, route_params, body, started)
        if method_mismatch is not None:
            allow = ", ".join(method_mismatch.methods or ())
            return self._answer(self.method_not_allowed_status, b"", started, method_mismatch.name, {"Allow": allow})
        with self._lock:
            self._unrouted_requests += 1
        return self._answer(404, b"", started, None)

    @staticmethod
    def _answer(
        status: int, body: bytes, started: float, function: str | None, headers: dict[str, str] | None = None
    ) -> HttpResult:
        return HttpResult(status, dict(headers or {}), body, time.perf_counter() - started, function)

    def _authorized(self, info: FunctionInfo, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        if info.auth_level == "anonymous" or self.function_key is None:
            return True
        lowered = {k.lower(): v for k, v in headers.items()}
        supplied = lowered.get("x-functions-key") or query.get("code")
        return supplied is not None and supplied == self.function_key

    async def _serve_async(
        self,
        info: FunctionInfo,
        method: str,
        url: str,
        headers: dict[str, str],
        query: dict[str, str],
        route_params: dict[str, str],
        body: bytes,
        started: float,
    ) -> HttpResult:
        if not self._authorized(info, headers, query):
            return self._answer(401, b"", started, info.name)
        if self.on_http is not None:
            self.on_http(info.name, body, time.time())
        request = func.HttpRequest(
            method=method, url=url, headers=headers, params=query, route_params=route_params, body=body
        )
        with self._lock:
            self._http_inflight += 1
        try:
            timeout = min(HTTP_ANSWER_LIMIT_S, self.options.function_timeout_s or HTTP_ANSWER_LIMIT_S)
            response = await asyncio.wait_for(self._invoke(info, request), timeout)
        except Exception:
            log.exception("sandbox host: HTTP function %s failed", info.name)
            return self._answer(500, b"", started, info.name)
        finally:
            with self._lock:
                self._http_inflight -= 1
        return self._convert_response(info, response, started)

    def _convert_response(self, info: FunctionInfo, response: Any, started: float) -> HttpResult:
        if isinstance(response, func.HttpResponse):
            headers = dict(response.headers.items())
            if not any(k.lower() == "content-type" for k in headers):
                mimetype = response.mimetype or "text/plain"
                headers["Content-Type"] = (
                    f"{mimetype}; charset={response.charset}" if mimetype.startswith("text/") else mimetype
                )
            return self._answer(int(response.status_code), response.get_body() or b"", started, info.name, headers)
        if isinstance(response, str | bytes):
            data = response.encode("utf-8") if isinstance(response, str) else response
            return self._answer(200, data, started, info.name, {"Content-Type": "text/plain; charset=utf-8"})
        if response is None:
            return self._answer(204, b"", started, info.name)
        log.error("sandbox host: HTTP function %s returned %s", info.name, type(response).__name__)
        return self._answer(500, b"", started, info.name)

    # ---------------------------------------------------------------- queues

    async def _client(self, queue: str) -> QueueClient:
        client = self._clients.get(queue)
        if client is None:
            # No encode/decode policy: the host decodes the message text itself, and copies the
            # original text to the poison queue unchanged.
            client = QueueClient.from_connection_string(self.storage_connection, queue)
            self._clients[queue] = client
            with contextlib.suppress(ResourceExistsError):  # the host creates trigger queues
                await client.create_queue()
        return client

    async def _start_listeners(self) -> None:
        if not self.run_queues:
            return
        for info in self.functions.values():
            if info.trigger_type == "queueTrigger":
                assert info.queue_name is not None
                client = await self._client(info.queue_name)
                task = asyncio.create_task(self._listen(info, client), name=f"listen-{info.name}")
                self._listeners.append(task)

    async def _listen(self, info: FunctionInfo, client: QueueClient) -> None:
        options = self.options.queues
        running: set[asyncio.Task[None]] = set()
        idle_wait = self.polling_interval_s
        while True:
            if len(running) > options.new_batch_threshold:
                await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
                continue
            self._fetching += 1
            messages: list[StorageQueueMessage] = []
            try:
                async for message in client.receive_messages(
                    max_messages=options.batch_size,
                    messages_per_page=options.batch_size,
                    visibility_timeout=self._fetch_visibility_s,
                ):
                    messages.append(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sandbox host: receiving from %s failed: %s", info.queue_name, exc)
            finally:
                for message in messages:
                    self._running += 1
                    task = asyncio.create_task(self._process(info, client, message))
                    running.add(task)
                    self._message_tasks.add(task)
                    task.add_done_callback(running.discard)
                    task.add_done_callback(self._message_tasks.discard)
                self._fetching -= 1
            if messages:
                idle_wait = self.polling_interval_s
            else:
                await asyncio.sleep(idle_wait)
                if self.poll_backoff:
                    idle_wait = min(max(idle_wait * 2, 0.1), max(options.max_polling_interval_s, 0.1))

    def _decode(self, text: Any) -> bytes:
        raw = "" if text is None else str(text)
        if self.options.queues.message_encoding == "none":
            return raw.encode("utf-8")
        return base64.b64decode(raw, validate=True)

    async def _process(self, info: FunctionInfo, client: QueueClient, message: StorageQueueMessage) -> None:
        max_dequeue = self.options.queues.max_dequeue_count
        try:
            if message.dequeue_count is not None and message.dequeue_count > max_dequeue:
                await self._poison(info, client, message)
                return
            try:
                body = self._decode(message.content)
            except (binascii.Error, ValueError):
                log.warning("sandbox host: message %s on %s is not base64: poisoned", message.id, info.queue_name)
                await self._poison(info, client, message)
                return
            inserted = message.inserted_on
            wait_s = (datetime.now(UTC) - inserted).total_seconds() if inserted is not None else None
            trigger = QueueMessage(  # type: ignore[no-untyped-call]
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                insertion_time=message.inserted_on,
                expiration_time=message.expires_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            began = time.time()
            try:
                await self._invoke(info, trigger, queue_wait_s=wait_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.on_message is not None:
                    self.on_message(info.name, body, began, time.time(), False)
                log.warning(
                    "sandbox host: %s failed on message %s (dequeue count %s)",
                    info.name,
                    message.id,
                    message.dequeue_count,
                    exc_info=True,
                )
                if (message.dequeue_count or 0) >= max_dequeue:
                    await self._poison(info, client, message)
                else:
                    task = asyncio.create_task(self._release(client, message, self.visibility_timeout_s))
                    self._releases.add(task)
                    task.add_done_callback(self._releases.discard)
            else:
                if self.on_message is not None:
                    self.on_message(info.name, body, began, time.time(), True)
                await self._delete(client, message)
        except asyncio.CancelledError:
            # Shutting down mid-run: let the message be picked up again right away.
            try:
                await client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
            except Exception as exc:
                log.debug("sandbox host: could not release %s on stop: %s", message.id, exc)
            raise
        except Exception:
            log.exception("sandbox host: handling message %s on %s failed", message.id, info.queue_name)
        finally:
            self._running -= 1

    async def _release(self, client: QueueClient, message: StorageQueueMessage, delay_s: float) -> None:
        """Make a failed message visible again after ``delay_s`` (sub-second part waited here, since
        the service counts visibility in whole seconds)."""
        deadline = time.monotonic() + delay_s
        whole = int(delay_s)
        if delay_s > whole:
            try:
                await asyncio.sleep(delay_s - whole)
            except asyncio.CancelledError:  # stopping: hand the remaining delay to the service
                whole = math.ceil(max(0.0, deadline - time.monotonic()))
        try:
            await client.update_message(message.id, message.pop_receipt, visibility_timeout=whole)
        except HttpResponseError as exc:
            log.debug("sandbox host: releasing %s failed: %s", message.id, exc)

    async def _delete(self, client: QueueClient, message: StorageQueueMessage) -> None:
        try:
            await client.delete_message(message.id, message.pop_receipt)
        except HttpResponseError as exc:  # pop receipt mismatch or gone: someone else owns it now
            log.debug("sandbox host: deleting %s failed: %s", message.id, exc)

    async def _poison(self, info: FunctionInfo, client: QueueClient, message: StorageQueueMessage) -> None:
        assert info.queue_name is not None
        poison_name = f"{info.queue_name}-poison"
        log.warning(
            "sandbox host: message %s reached maxDequeueCount of %d: moving it to %s",
            message.id,
            self.options.queues.max_dequeue_count,
            poison_name,
        )
        poison = await self._client(poison_name)
        await poison.send_message(message.content)
        await self._delete(client, message)
        with self._lock:
            self._stats[info.name].poisoned += 1

    async def _is_idle(self) -> bool:
        def busy() -> bool:
            with self._lock:
                inflight = self._http_inflight + self._active_invocations
            return bool(self._running or self._fetching or self._releases or inflight)

        if busy():
            return False
        for queue in self.queue_names() if self.run_queues else ():  # the queues this instance listens to
            properties = await self._clients[queue].get_queue_properties()
            if properties.approximate_message_count:
                return False
        return not busy()

    async def _shutdown(self, grace_s: float) -> None:
        for task in self._listeners:
            task.cancel()
        await asyncio.gather(*self._listeners, return_exceptions=True)
        pending = set(self._message_tasks)
        if pending:
            _done, still_running = await asyncio.wait(pending, timeout=grace_s)
            for task in still_running:
                task.cancel()
            if still_running:
                await asyncio.wait(still_running, timeout=5)
        releases = set(self._releases)
        for task in releases:
            task.cancel()
        if releases:
            await asyncio.wait(releases, timeout=5)
        if self._on_stop is not None:
            try:
                await asyncio.wait_for(self._on_stop(), 10)
            except Exception:
                log.exception("sandbox host: on_stop failed")
        for client in self._clients.values():
            try:
                await client.close()
            except Exception as exc:
                log.debug("sandbox host: closing a queue client failed: %s", exc)
        self._clients.clear()
        current = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not current]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others, timeout=5)


def _query_dict(query: str) -> dict[str, str]:
    """The query as the host hands it to the worker: one string per name, repeats joined by commas."""
    out: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        out[key] = f"{out[key]},{value}" if key in out else value
    return out
