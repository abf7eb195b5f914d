"""The sandbox as separate OS processes, for load and chaos benchmarks.

The Graph emulator, the Auth0 emulator, an optional SCIM application (scim2-server) and Azurite
each run in a process of their own, and ``hosts`` Functions-host stand-ins (sandbox/host.py, which
index function_app.py and poll every queue-triggered function's queue) share the one Azurite, as
Functions instances share a storage account; exactly one of them serves HTTP (the webhooks)::

    with Cluster(ClusterConfig(users=2_000, hosts=2)) as cluster:
        cluster.graph.control("PATCH", "/_control/users", {"id": uid, "department": "Sales"})
        cluster.kill_host(1)          # kill -9, mid-item if it was working
        cluster.restart_host(1)
        rows = cluster.auth0.entries(since=t0)   # the emulator's timestamped request log

How the pieces are reached: the emulators through their HTTP API and ``/_control/`` routes (the
request log's timestamped entries: ``GET /_control/requests/entries?since=``); a host through a
line of JSON on its stdin answered by a line on its stdout (``timer``, ``stats``, ``events``). A
child stops when its stdin closes, so nothing outlives the parent, even one killed with -9; the
parent also terminates and then kills every child it started on exit or error (all of them, even
when stopping one fails or is interrupted). ``kill -USR1 <pid>`` writes every thread's stack of a
child to its log and leaves it running, from the moment it is started (the signal waits, blocked,
until the child has said how to answer it); a child that ends early is reported with how it ended
(its exit status or the signal that killed it), since a killed process leaves nothing in its log.

A host child records, for the benchmarks, each HTTP request to a function (when it arrived and its
body: the clock of a notification starts there), each queue message it ran (function, body, start,
end, success), and the requests its storage SDK clients sent to Azurite (counted per service and
operation in the SDK's transport: one count per round trip, nothing on the wire changes).

Run as ``python -m bench.cluster <role>`` (graph, auth0, scim, host) by :class:`Cluster` only.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

from sandbox.azurite import Azurite
from sandbox.mapping import sandbox_mapping, sandbox_mapping_v2, scim_section, three_role_grants
from sandbox.stack import AUTH0_TOKEN, GRAPH_TOKEN, sandbox_env

REPO = Path(__file__).resolve().parent.parent
ROLES = ("Employee", "Sales Reader", "Sales Writer")
SCIM_TOKEN = "sandbox-scim-token-for-load"
START_TIMEOUT_S = 90.0
CALL_TIMEOUT_S = 120.0
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    """A free loopback port now (the host serving HTTP binds it again when restarted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def group_cpu_seconds(pgid: int) -> float:
    """CPU time of every live process in process group ``pgid`` (Azurite's node and its children)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


# --------------------------------------------------------------------------------------------
# The parent's side


class Remote:
    """An emulator in another process, reached over loopback HTTP."""

    def __init__(self, origin: str, base_url: str, token: str):
        self.origin = origin
        self.base_url = base_url
        self.token = token
        self.http = httpx.Client(timeout=60.0)

    def control(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """Call a ``/_control/...`` route; the decoded JSON answer (None for an empty one)."""
        response = self.http.request(method, self.origin + path, json=body, params=params or None)
        response.raise_for_status()
        return response.json() if response.content else None

    def entries(self, since: float = 0.0) -> list[list[Any]]:
        """Request log rows ``[at, method, path, route, status, write]`` logged since ``since``."""
        return list(self.control("GET", "/_control/requests/entries", since=since)["entries"])

    def counts(self) -> dict[str, int]:
        """Requests per route since the log was last cleared (never truncated)."""
        return dict(self.control("GET", "/_control/requests")["by_route"])

    def close(self) -> None:
        self.http.close()


class Child:
    """One child process running ``python -m bench.cluster <role>``; ``config`` goes as its first stdin line."""

    def __init__(self, name: str, role: str, config: dict[str, Any], logs: Path):
        self.name = name
        self.role = role
        self.config = config
        self.logs = logs
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stderr: IO[str] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Child:
        lines: queue.Queue[str | None] = queue.Queue()
        self._lines = lines
        self._stderr = (self.logs / f"{self.name}.log").open("a", encoding="utf-8")
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost,::1", "PYTHONUNBUFFERED": "1"}
        # The child inherits this thread's signal mask: SIGUSR1 stays blocked in it until it can
        # answer one with a stack dump (see child_main), instead of dying of it while importing.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.cluster", self.role],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                cwd=REPO,
                env=env,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        stdout = self.proc.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name=f"{self.name}-stdout", daemon=True).start()
        self._write(self.config, "start")
        self.info = self._read(timeout_s, "start")
        return self

    def _write(self, message: dict[str, Any], what: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # its end of the pipe is gone, or we closed ours
            raise self._ended(f"before {what}") from None

    def _read(self, timeout_s: float, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no answer to {what} within {timeout_s:.0f} s{self._tail()}") from None
        if line is None:
            raise self._ended(f"during {what}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {what} failed: {answer['error']}")
        return answer

    def _ended(self, when: str) -> RuntimeError:
        """The error for a child found gone, saying how it ended: its exit status or the signal that
        killed it (a killed process leaves nothing in its log: this is the only trace of why)."""
        assert self.proc is not None
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            how = "its stdout is closed, yet it still runs"
        else:
            how = f"exit status {code}" if code >= 0 else f"killed by {_signal_name(-code)}"
        return RuntimeError(f"{self.name}: the process ended {when} ({how}){self._tail()}")

    def _tail(self) -> str:
        try:
            text = (self.logs / f"{self.name}.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "; its log ends:\n" + "\n".join(text.splitlines()[-25:])

    def call(self, command: str, timeout_s: float = CALL_TIMEOUT_S, **args: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (one at a time per child)."""
        with self._lock:
            self._write({"cmd": command, **args}, command)
            return self._read(timeout_s, command)

    def kill(self) -> None:
        """kill -9: no goodbye, messages it held come back when their visibility ends."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def ask_to_stop(self) -> None:
        """Close its stdin: the child finishes what it runs and stops (:meth:`stop` waits for it)."""
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Close stdin (the child stops cleanly), then SIGTERM, then SIGKILL if it lingers."""
        proc = self.proc
        if proc is None:
            return
        self.ask_to_stop()
        for sig, wait in ((None, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if sig is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
            if proc.poll() is not None:
                break
        self._close()

    def _close(self) -> None:
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError, ValueError):
                    if stream is not None:
                        stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


@dataclass
class ClusterConfig:
    users: int = 1_000
    groups: int = 6
    seed: int = 7
    hosts: int = 2
    scim: bool = False
    mirror: bool = True  # the Auth0 side in sync with the tenant (accounts, roles), no links yet
    mapping_extra: str = ""  # top-level YAML of the mapping file
    # Keys for every target section, e.g. a ``guard:`` line (v1: top level, where Auth0's sections are).
    target_extra: str = ""
    log_entries: int = 400_000  # each emulator's request log (timestamped entries kept)
    visibility_timeout_s: float | None = 1.0  # a failed message's retry delay (None: host.json's)
    # A mapping of the caller's in place of the usual one, given the Graph group ids and the SCIM
    # application's base URL ("" without one), and more app settings (e.g. an inbound source's token).
    mapping_text: Callable[[list[str], str], str] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # True: host 0 serves HTTP and polls no queue (the HTTP group's instance); the others run the
    # queue functions. False: host 0 does both, as one instance of a plan without per-function scaling.
    http_apart: bool = False


@dataclass
class Cluster:
    config: ClusterConfig = field(default_factory=ClusterConfig)
    azurite: Azurite | None = field(init=False, default=None)
    graph: Remote = field(init=False)
    auth0: Remote = field(init=False)
    scim: Remote | None = field(init=False, default=None)
    env: dict[str, str] = field(init=False, default_factory=dict)
    group_ids: list[str] = field(init=False, default_factory=list)
    hosts: list[Child] = field(init=False, default_factory=list)
    emulators: dict[str, Child] = field(init=False, default_factory=dict)
    http_port: int = field(init=False, default=0)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(init=False, default=None)

    @property
    def dir(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp.name)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Cluster:
        self._tmp = tempfile.TemporaryDirectory(prefix="entra-sync-cluster-")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        c = self.config
        common = {"log_entries": c.log_entries}
        graph = self._emulator("graph", {**common, "users": c.users, "groups": c.groups, "seed": c.seed})
        self.graph = Remote(graph.info["origin"], graph.info["base_url"], GRAPH_TOKEN)
        self.group_ids = list(graph.info["group_ids"])
        grants = three_role_grants(self.group_ids)
        extra_env: dict[str, str] = {}
        if c.scim:
            scim = self._emulator("scim", {**common, "token": SCIM_TOKEN})
            self.scim = Remote(scim.info["origin"], scim.info["base_url"], SCIM_TOKEN)
            pushed = [(self.group_ids[0], "Staff"), (self.group_ids[1], "Sales")]
            others = scim_section(self.scim.base_url, pushed, extra=c.target_extra)
            text = sandbox_mapping_v2(grants, others=others, extra=c.mapping_extra)
            if c.target_extra:  # the Auth0 section's own keys go after its deprovision line
                lines = text.split("\n")
                at = next(i for i, line in enumerate(lines) if line.startswith("    deprovision:")) + 1
                lines[at:at] = ["    " + line for line in c.target_extra.splitlines()]
                text = "\n".join(lines)
            extra_env["SCIM_CRM_TOKEN"] = SCIM_TOKEN
        else:
            text = sandbox_mapping(grants, extra="\n".join(x for x in (c.target_extra, c.mapping_extra) if x))
        if c.mapping_text is not None:
            text = c.mapping_text(self.group_ids, self.scim.base_url if self.scim is not None else "")
        mapping = self.dir / "mapping.yaml"
        mapping.write_text(text, encoding="utf-8")
        mirror_spec = {"users": c.users, "groups": c.groups, "seed": c.seed} if c.mirror else None
        auth0 = self._emulator("auth0", {**common, "mapping": str(mapping), "mirror": mirror_spec})
        self.auth0 = Remote(auth0.info["origin"], auth0.info["base_url"], AUTH0_TOKEN)
        self.azurite = Azurite().start()
        self.http_port = free_port()
        self.env = {
            **sandbox_env(
                self.graph.base_url,
                self.auth0.base_url,
                self.azurite.connection_string,
                f"http://127.0.0.1:{self.http_port}",
            ),
            "SYNC_MAPPING_FILE": str(mapping),
            **extra_env,
            **c.extra_env,
        }
        for i in range(c.hosts):
            self.hosts.append(self._host_child(i))
        for host in self.hosts:
            host.start()

    def _emulator(self, role: str, config: dict[str, Any]) -> Child:
        child = Child(role, role, config, self.dir)
        self.emulators[role] = child
        return child.start()

    def _host_child(self, index: int) -> Child:
        config = {
            "env": self.env,
            "index": index,
            "serve_http": index == 0,
            # Flex Consumption's per-function scaling: the HTTP group on instances of its own.
            "run_queues": not (index == 0 and self.config.http_apart),
            "http_port": self.http_port if index == 0 else 0,
            "visibility_timeout_s": self.config.visibility_timeout_s,
        }
        return Child(f"host-{index}", "host", config, self.dir)

    @property
    def webhook_host(self) -> Child:
        """The one host serving HTTP."""
        return self.hosts[0]

    def kill_host(self, index: int) -> None:
        """kill -9 one host process."""
        self.hosts[index].kill()

    def restart_host(self, index: int) -> Child:
        """Start host ``index`` again (after :meth:`kill_host` or when it died), on the same HTTP port."""
        old = self.hosts[index]
        if old.alive:
            old.stop()
        fresh = self._host_child(index)
        self.hosts[index] = fresh
        return fresh.start()

    def run_timer(self, name: str, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """Invoke a timer function once on the webhook host (timers run on one instance)."""
        return self.webhook_host.call("timer", timeout_s=timeout_s, name=name)

    def processes(self) -> dict[str, int]:
        """Name -> pid of every process of the cluster (Azurite by its process group)."""
        out = {name: child.pid for name, child in self.emulators.items() if child.alive}
        out.update({host.name: host.pid for host in self.hosts if host.alive})
        proc = getattr(self.azurite, "_proc", None)
        if proc is not None:
            out["azurite"] = proc.pid
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per process (hosts under their names, the driver as ``driver``)."""
        out: dict[str, float] = {}
        for name, pid in self.processes().items():
            out[name] = group_cpu_seconds(pid) if name == "azurite" else cpu_seconds(pid)
        times = os.times()
        out["driver"] = times.user + times.system
        return out

    def stop(self) -> None:
        """Stop everything the cluster started: hosts, then emulators, then Azurite. Each step runs
        even when one before it fails or is interrupted (a test's timeout firing mid-stop), so a
        failed run leaves no process behind. All hosts are asked to stop at once, then awaited."""
        with contextlib.ExitStack() as steps:  # callbacks run last first
            steps.callback(self._remove_dir)
            steps.callback(self._stop_azurite)
            steps.callback(self._close_remotes)
            steps.callback(_stop_all, list(self.emulators.values()))
            steps.callback(_stop_all, list(self.hosts))

    def _close_remotes(self) -> None:
        for remote in (getattr(self, "graph", None), getattr(self, "auth0", None), self.scim):
            if remote is not None:
                remote.close()

    def _stop_azurite(self) -> None:
        azurite, self.azurite = self.azurite, None
        if azurite is not None:
            azurite.stop()

    def _remove_dir(self) -> None:
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.cleanup()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stop_all(children: list[Child]) -> None:
    """Close every child's stdin first, so they wind down together, then stop each in turn (each
    stop runs even if one before it raised)."""
    with contextlib.ExitStack() as stops:
        for child in children:
            stops.callback(child.stop)
        for child in children:
            child.ask_to_stop()


# --------------------------------------------------------------------------------------------
# The children's side


class _Protocol:
    """Lines of JSON on the real stdout; anything else the process prints goes to stderr."""

    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(json.dumps(message, default=str) + "\n")
            self.out.flush()


def _serve_commands(proto: _Protocol, handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """Answer commands until stdin closes."""
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        handler = handlers.get(message.get("cmd", ""))
        try:
            if handler is None:
                raise ValueError(f"unknown command {message.get('cmd')!r}")
            proto.send(handler(message))
        except Exception as exc:
            proto.send({"error": f"{type(exc).__name__}: {exc}"})


def _emulator_child(role: str, config: dict[str, Any], proto: _Protocol) -> None:
    emulator: Any
    extra: dict[str, Any] = {}
    if role == "graph":
        from sandbox.graph import GraphEmulator

        emulator = GraphEmulator(token=GRAPH_TOKEN)
        emulator.seed({"users": config["users"], "groups": config["groups"], "seed": config["seed"]})
        extra["group_ids"] = [g["id"] for g in emulator.snapshot(full=True)["dump"]["groups"]]
    elif role == "auth0":
        from sandbox.auth0 import Auth0Emulator

        emulator = Auth0Emulator(token=AUTH0_TOKEN)
        for name in ROLES:
            emulator.add_role(name)
        if config.get("mirror"):
            extra["mirrored"] = _mirror(emulator, config["mirror"], config["mapping"])
    elif role == "scim":
        from sandbox.scim import ScimApp

        emulator = ScimApp(token=config["token"])
    else:
        raise ValueError(f"unknown role {role!r}")
    emulator.log.resize(int(config["log_entries"]))
    emulator.start()
    try:
        proto.send({"origin": emulator.origin, "base_url": emulator.base_url, "pid": os.getpid(), **extra})
        _serve_commands(proto, {"ping": lambda m: {"ok": True}})
    finally:
        emulator.stop()


def _mirror(auth0: Any, spec: dict[str, Any], mapping_path: str) -> int:
    """The in-sync Auth0 side of the tenant ``spec`` seeds (built here from the same seed as the Graph
    emulator's, so no tenant crosses the process boundary)."""
    from sandbox.graph import GraphEmulator
    from sandbox.mirror import mirror
    from shared.mapping.load import load_mapping

    tenant = GraphEmulator(token=GRAPH_TOKEN)
    tenant.seed(spec)
    return mirror(tenant, auth0, load_mapping(mapping_path))


class _StorageCounter:
    """Requests the Azure SDK sends, per ``<service> <operation>``, counted in its transports."""

    def __init__(self, connection_string: str):
        self.ports: dict[int, str] = {}
        for part in connection_string.split(";"):
            key, _, value = part.partition("=")
            if key.endswith("Endpoint") and value.startswith("http"):
                port = urlsplit(value).port
                if port is not None:
                    self.ports[port] = key.removesuffix("Endpoint").lower()
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def count(self, method: str, url: str) -> None:
        parts = urlsplit(url)
        service = self.ports.get(parts.port or 0)
        if service is None:
            return
        op = method.upper()
        if service == "queue" and "/messages" in parts.path:
            op = {"POST": "send", "GET": "receive", "DELETE": "delete", "PUT": "update"}.get(op, op)
            if op == "receive" and "peekonly=true" in parts.query.lower():
                op = "peek"
        elif service == "queue" and "comp=metadata" in parts.query:
            op = "properties"
        elif service == "table" and parts.path.endswith("$batch"):
            op = "batch"
        with self.lock:
            self.counts[f"{service} {op}"] += 1

    def install(self) -> None:
        from azure.core.pipeline.transport import AioHttpTransport, RequestsTransport

        counter = self
        async_send = AioHttpTransport.send
        sync_send = RequestsTransport.send

        async def counted_async(self: Any, request: Any, **kwargs: Any) -> Any:
            counter.count(request.method, request.url)
            return await async_send(self, request, **kwargs)

        def counted_sync(self: Any, request: Any, **kwargs: Any) -> Any:
            counter.count(request.method, request.url)
            return sync_send(self, request, **kwargs)

        setattr(AioHttpTransport, "send", counted_async)  # noqa: B010 - patching a method in place
        setattr(RequestsTransport, "send", counted_sync)  # noqa: B010

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


def _host_child(config: dict[str, Any], proto: _Protocol) -> None:
    env: dict[str, str] = config["env"]
    os.environ.update(env)
    counter = _StorageCounter(env["AzureWebJobsStorage"])
    counter.install()
    import function_app
    from sandbox.host import FunctionsHost
    from shared import bootstrap

    # Tuples of atoms, which the collector stops tracking: a run that never drains them (benchmark 8's
    # endpoint host) would otherwise grow every full collection by one object per request.
    events: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    def on_http(function: str, body: bytes, at: float) -> None:
        with lock:
            events.append(("http", function, at, body))

    def on_message(function: str, body: bytes, started: float, finished: float, ok: bool) -> None:
        with lock:
            events.append(("message", function, started, finished, ok, body))

    host = FunctionsHost(
        function_app.app,
        storage_connection=env["AzureWebJobsStorage"],
        app_settings=env,
        visibility_timeout_s=config["visibility_timeout_s"],
        http_port=int(config["http_port"]),
        serve_http=bool(config["serve_http"]),
        run_queues=bool(config.get("run_queues", True)),
        on_stop=lambda: bootstrap.app().aclose(),
    )
    host.on_http = on_http
    host.on_message = on_message
    host.poll_backoff = True  # idle queues polled like the storage extension, up to maxPollingInterval

    def drain(message: dict[str, Any]) -> dict[str, Any]:
        with lock:
            taken = list(events)
            events.clear()
        return {"events": [[*event[:-1], event[-1].decode("utf-8", errors="replace")] for event in taken]}

    def stats(message: dict[str, Any]) -> dict[str, Any]:
        return {"host": host.stats(raw=bool(message.get("raw"))), "storage": counter.snapshot()}

    def timer(message: dict[str, Any]) -> dict[str, Any]:
        result = host.run_timer(str(message["name"]))
        return {"ok": True, "result": result if isinstance(result, str | int | float | type(None)) else str(result)}

    host.start()
    try:
        proto.send(
            {
                "pid": os.getpid(),
                "base_url": host.base_url if host.serve_http else "",
                "queues": host.queue_names(),
                "functions": sorted(host.functions),
            }
        )
        _serve_commands(proto, {"ping": lambda m: {"ok": True}, "events": drain, "stats": stats, "timer": timer})
    finally:
        host.stop()


def _stop_on_signal(signum: int, frame: object) -> None:
    """SIGTERM: stop through the ``finally`` blocks, saying so in the log (``os.write``: a signal
    handler may run in the middle of a buffered write to stderr)."""
    os.write(2, f"{_signal_name(signum)}: stopping\n".encode())
    sys.exit(128 + signum)


def child_main(role: str) -> int:
    # A SIGUSR1 (someone asking for stacks) dumps them instead of ending the process: default
    # action of SIGUSR1 is to terminate silently. The parent starts us with it blocked, so one sent
    # while this interpreter was still importing waits here and is answered now.
    faulthandler.enable(all_threads=True)  # a crash leaves its stacks in the log, not nothing
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    proto = _Protocol()
    signal.signal(signal.SIGTERM, _stop_on_signal)
    import logging

    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "httpx", "entra_sync", "sandbox"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        config = json.loads(sys.stdin.readline())
        if role == "host":
            _host_child(config, proto)
        else:
            _emulator_child(role, config, proto)
    except SystemExit:
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):
            proto.send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1]))
