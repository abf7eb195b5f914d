"""What the commands share: usage errors, argument types, the settings file, the services, output
(text or ``--json``) and progress."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO

from azure.core.exceptions import AzureError, ServiceRequestError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from shared import bootstrap


class Progress:
    """Progress of long work on stderr (rich): per phase its count, and where the total is known a
    bar, the share done, the time spent and the time left. On a terminal it redraws in place; in a
    pipe or a CI log it writes a line per phase at most every ``every_s`` seconds and when the phase
    ends, with the same figures."""

    def __init__(
        self,
        stream: TextIO | None = None,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        terminal: bool | None = None,  # None: as the stream says
    ):
        self.console = Console(file=stream or sys.stderr, highlight=False, force_terminal=terminal)
        self.every_s = every_s
        self.clock = clock
        self.live: RichProgress | None = None
        if self.console.is_terminal:
            self.live = RichProgress(
                TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=self.console,
            )  # fmt: skip
            self.live.start()
        self.tasks: dict[str, TaskID] = {}
        self.started: dict[str, float] = {}
        self.shown: dict[str, float] = {}

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if self.live is not None:
            if phase not in self.tasks:
                self.tasks[phase] = self.live.add_task(phase, total=total)
            self.live.update(self.tasks[phase], completed=done, total=total)
            return
        now = self.clock()
        started = self.started.setdefault(phase, now)
        finished = total is not None and done >= total
        if not finished and now - self.shown.get(phase, -math.inf) < self.every_s:
            return
        self.shown[phase] = now
        self.console.print(f"{phase}: {line(done, total, now - started)}", soft_wrap=True)

    def done(self) -> None:
        if self.live is not None:
            self.live.stop()


def line(done: int, total: int | None, spent_s: float) -> str:
    """``1,200 of 10,000 (12%), 0:00:14 spent, about 0:01:43 left``; without a total, the count."""
    spent = timedelta(seconds=round(spent_s))
    if not total:
        return f"{done:,}, {spent} spent"
    text = f"{done:,} of {total:,} ({done / total:.0%}), {spent} spent"
    if 0 < done < total:
        text += f", about {timedelta(seconds=round(spent_s * (total - done) / done))} left"
    return text


def emit_json(data: Any) -> int:
    """A read command's ``--json`` answer on standard output (times and other values as text)."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
    return 0


def write_output(path: Path, body: bytes) -> None:
    """What ``--output`` names, its folders made as needed; a path that cannot be written is a
    one-line usage error naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    except OSError as exc:
        raise UsageError(f"--output {path}: cannot be written ({exc.strerror or type(exc).__name__})") from None


class UsageError(Exception):
    """Bad arguments or an environment the CLI cannot work in: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def iso_time(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-22T00:00:00Z``, ``2026-11-22T01:00+01:00``, ``2026-11-22``);
    without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time such as 2026-11-22T00:00:00Z") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def load_settings_file(path: str) -> None:
    where = f"--settings {path}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{where}: not a JSON file ({exc})") from None
    values = data.get("Values", data) if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise UsageError(f"{where}: expected a JSON object with 'Values'")
    for key, value in values.items():
        os.environ.setdefault(str(key), str(value))


def without_query(text: str) -> str:
    """Leave out query strings: a SAS token travels in one."""
    return re.sub(r"\?\S*", "", text)


async def with_services(work: Callable[[bootstrap.App], Awaitable[int]]) -> int:
    svc = bootstrap.init()
    try:
        try:
            await svc.ensure_storage()
        except AzureError as exc:
            reason = without_query(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            verb = "reach" if isinstance(exc, ServiceRequestError) else "use"
            where = without_query(svc.tables.url)
            raise UsageError(f"cannot {verb} Azure Storage (AzureWebJobsStorage) at {where}: {reason}") from None
        return await work(svc)
    finally:
        await svc.aclose()


def targets(svc: bootstrap.App, name: str | None) -> list[str]:
    if name is None:
        return list(svc.jobs)
    if name not in svc.jobs:
        named = ", ".join(svc.jobs) or "none"
        raise UsageError(f"--target {name}: the mapping names no such target (it names {named})")
    return [name]
