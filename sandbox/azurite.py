"""Start and stop Azurite (Azure Storage emulator) from the repository's own ``node_modules``.

Azurite listens on free loopback ports (it accepts port 0 and prints the port it took), keeps
everything in memory, and is stopped with its whole process group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Azurite's well-known development account. Public by design: documented by Microsoft and
# accepted only by the emulator, never by a real storage account.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://[^:]+:(\d+)")


class AzuriteUnavailable(RuntimeError):
    """Node or the repository's Azurite install is missing, or Azurite did not start."""


@dataclass(frozen=True)
class AzuriteEndpoints:
    host: str
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        base = f"http://{self.host}"
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{DEV_ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{DEV_ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{DEV_ACCOUNT};"
        )


def azurite_executable() -> Path:
    """The repository-local Azurite launcher, or a clear error saying how to install it."""
    if shutil.which("node") is None:
        raise AzuriteUnavailable(
            "Node.js is not on PATH: Azurite (the Azure Storage emulator the tests use) needs Node 20 or later."
        )
    exe = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if not exe.exists():
        raise AzuriteUnavailable(
            f"Azurite is not installed in {REPO_ROOT / 'node_modules'}: run `npm ci` in the repository "
            "(`make install` does it)."
        )
    return exe


class Azurite:
    """One Azurite process with blob, queue and table services on free ports."""

    def __init__(self, host: str = "127.0.0.1", start_timeout_s: float = 60.0, memory_limit_mb: int = 512):
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._proc: subprocess.Popen[str] | None = None
        self._output: deque[str] = deque(maxlen=200)
        self.endpoints: AzuriteEndpoints | None = None

    @property
    def output(self) -> list[str]:
        """The last lines Azurite printed (at most 200)."""
        return list(self._output)

    @property
    def connection_string(self) -> str:
        if self.endpoints is None:
            raise RuntimeError("Azurite is not running")
        return self.endpoints.connection_string

    def start(self) -> Azurite:
        exe = azurite_executable()
        args = [
            str(exe),
            "--blobHost", self.host, "--blobPort", "0",
            "--queueHost", self.host, "--queuePort", "0",
            "--tableHost", self.host, "--tablePort", "0",
            "--inMemoryPersistence", "--extentMemoryLimit", str(self.memory_limit_mb),
            "--disableTelemetry", "--skipApiVersionCheck", "--loose",
            # No access log: Node writes to a pipe synchronously, so a line per request blocks
            # Azurite's whole event loop whenever the reader of its output falls behind (a busy
            # benchmark process: every request then hung for minutes, host after host).
            "--silent",
        ]  # fmt: skip
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, repository-local executable
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own process group, so stop() takes node's children too
            cwd=REPO_ROOT,
        )
        ports: dict[str, int] = {}
        ready = threading.Event()

        def pump() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for line in self._proc.stdout:
                self._output.append(line.rstrip())
                m = _LISTENING.search(line)
                if m:
                    ports[m.group(1)] = int(m.group(2))
                    if len(ports) == 3:
                        ready.set()
            ready.set()  # process ended: wake the waiter, which sees the missing ports

        threading.Thread(target=pump, name="azurite-output", daemon=True).start()
        ready.wait(self.start_timeout_s)
        if len(ports) != 3:
            output = "\n".join(self._output)
            self.stop()
            raise AzuriteUnavailable(
                f"Azurite did not start within {self.start_timeout_s:.0f} s. Its output:\n{output}"
            )
        self.endpoints = AzuriteEndpoints(self.host, ports["Blob"], ports["Queue"], ports["Table"])
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        self.endpoints = None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
