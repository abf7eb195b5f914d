"""``entra-sync``: the operator's command line, against the same settings the functions use.

    entra-sync reconcile --dry-run            plan and report, change nothing
    entra-sync reconcile --apply              queue the safe repairs (the circuit breaker may hold the run)
    entra-sync approve RUN                    release a run the circuit breaker held
    entra-sync runs                           recent runs and their status
    entra-sync report RUN [--format html|json|csv] [--output FILE] [--open]
    entra-sync backfill                       initial load: queue every user once
    entra-sync backfill --import-jobs         initial load: create the joiners through Auth0 import jobs
    entra-sync audit [--identity ID] [--since ISO] [--until ISO] [--limit N]
    entra-sync check                          the settings, the mapping file and its groups in Entra ID

Settings come from the environment, or from a Functions ``local.settings.json`` given with
``--settings`` (its ``Values``). Run it as ``python -m shared.cli`` or, installed, ``entra-sync``.

Exit codes: 0 done, 1 the command failed (the error says why), 2 bad usage or an environment it
cannot work in (bad arguments, settings or mapping, unreachable storage), 3 a run held by the
circuit breaker. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
import webbrowser
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TextIO

from azure.core.exceptions import AzureError, ServiceRequestError

from shared import bootstrap
from shared.core.drift import RunSummary
from shared.core.work import DEFAULT_SOURCE
from shared.errors import SyncError
from shared.mapping.load import load_mapping
from shared.mapping.model import MappingError, SyncMapping
from shared.services.backfill import CONCURRENCY, summary
from shared.services.reconcile import check_run_id
from shared.settings import Settings, SettingsError
from shared.sources.graph.client import graph_client
from shared.sources.graph.groups import mapping_group_problems
from shared.sources.graph.source import GraphSource
from shared.sources.registry import check_settings as check_source_settings
from shared.stores.keys import decode_key
from shared.targets.registry import check_settings as check_target_settings
from shared.targets.registry import target_title


class ProgressLine:
    """A one-line progress indicator on stderr (a bar when the total is known), throttled."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 0.2):
        self.stream = stream or sys.stderr  # looked up now: the one in use, not the one at import
        self.every_s = every_s
        self.last = 0.0
        self.tty = self.stream.isatty()

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and (total is None or done < total):
            return
        self.last = now
        if total:
            filled = int(30 * min(done, total) / total)
            text = f"{phase:<16} [{'#' * filled}{'.' * (30 - filled)}] {done:>7}/{total}"
        else:
            text = f"{phase:<16} {done:>7}"
        self.stream.write(("\r" + text) if self.tty else (text + "\n"))
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()


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


def _load_settings_file(path: str) -> None:
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


def _without_query(text: str) -> str:
    """Leave out query strings: a SAS token travels in one."""
    return re.sub(r"\?\S*", "", text)


async def _with_services(work: Callable[[bootstrap.App], Awaitable[int]]) -> int:
    svc = bootstrap.init()
    try:
        try:
            await svc.ensure_storage()
        except AzureError as exc:
            reason = _without_query(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            verb = "reach" if isinstance(exc, ServiceRequestError) else "use"
            where = _without_query(svc.tables.url)
            raise UsageError(f"cannot {verb} Azure Storage (AzureWebJobsStorage) at {where}: {reason}") from None
        return await work(svc)
    finally:
        await svc.aclose()


def _targets(svc: bootstrap.App, name: str | None) -> list[str]:
    if name is None:
        return list(svc.jobs)
    if name not in svc.jobs:
        named = ", ".join(svc.jobs) or "none"
        raise UsageError(f"--target {name}: the mapping names no such target (it names {named})")
    return [name]


async def cmd_reconcile(svc: bootstrap.App, args: argparse.Namespace) -> int:
    """Every target the mapping names (or the one asked for), each its own run and report."""
    held = False
    for name in _targets(svc, args.target):
        progress = ProgressLine()
        if svc.reports is not None:
            await svc.reports.ensure()
        summary, _ = await svc.reconcilers[name].run("apply" if args.apply else "dry-run", progress=progress)
        progress.done()
        _print_run(summary)
        held = held or summary.status == "held"
    return 3 if held else 0


def _print_run(summary: RunSummary) -> None:
    title = target_title(summary.target)
    print(f"run {summary.run_id} of {summary.target} ({summary.mode}): {summary.status}")
    print(f"  Entra users {summary.entra_users} (in scope {summary.entra_in_scope})")
    read = f" ({summary.read_by})" if summary.read_by else ""
    print(f"  {title} accounts {summary.accounts}{read}, managed {summary.managed_accounts}")
    print(f"  in sync {summary.in_sync} of {summary.entra_in_scope} in-scope identities")
    print(f"  drift records {sum(summary.counts.values())}, about {summary.drifted} identities:")
    for drift, count in sorted(summary.counts.items()):
        print(f"  {drift:<20} {count}")
    print(f"  identities enqueued {summary.enqueued} (one work item each), held {summary.held}")
    if summary.breaker.tripped:
        print(f"  CIRCUIT BREAKER: {summary.breaker.reason}")
        print(f"  review the report, then: entra-sync approve {summary.run_id}")
    print(f"  report: entra-sync report {summary.run_id} --open")


async def cmd_approve(svc: bootstrap.App, args: argparse.Namespace) -> int:
    """A held reconciliation run, or a mass change held on the way in (their ids look alike)."""
    ident = check_run_id(args.run)
    for job in svc.jobs.values():
        if job.guard is not None and await job.guard.episode(ident) is not None:
            queued = await job.guard.approve(ident, approver=args.by)
            print(
                f"mass change {ident} in {job.name} approved by {args.by}: {queued} held identities queued "
                "for the worker"
            )
            return 0
    run = await next(iter(svc.reconcilers.values())).summary(ident) if svc.reconcilers else None
    if run is None or run.target not in svc.reconcilers:
        raise UsageError(f"{ident}: no held run or mass change of a target the mapping names")
    queued = await svc.reconcilers[run.target].approve(ident, approver=args.by)
    print(f"run {ident} approved by {args.by}: {queued} held deprovisions queued for the worker")
    return 0


async def cmd_runs(svc: bootstrap.App, args: argparse.Namespace) -> int:
    if not svc.reconcilers:
        return 0
    runs = await next(iter(svc.reconcilers.values())).history(every_target=True)
    for run in runs[-args.limit :]:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items())) or "in sync"
        print(f"{run.run_id}  {run.target:<14} {run.mode:<8} {run.status:<9} {counts}")
    return 0


async def cmd_report(svc: bootstrap.App, args: argparse.Namespace) -> int:
    if svc.reports is None:
        raise UsageError("reports are not kept by this configuration")
    body = await svc.reports.load(check_run_id(args.run), args.format)
    if args.output or args.open:
        target = (
            Path(args.output) if args.output else Path(tempfile.gettempdir()) / f"entra-sync-{args.run}.{args.format}"
        )
        target.write_bytes(body)
        print(f"wrote {target}")
        if args.open:
            webbrowser.open(target.resolve().as_uri())
    else:
        sys.stdout.write(body.decode("utf-8"))
    return 0


async def cmd_backfill(svc: bootstrap.App, args: argparse.Namespace) -> int:
    if args.import_jobs:
        try:
            bulk = svc.import_backfill(args.target or "auth0")
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from exc
        progress = ProgressLine()
        result = await bulk.run(progress=progress)
        progress.done()
        print(f"backfill through import jobs: {result.entra_users} Entra users, {result.in_scope} in scope")
        print(f"  already linked {result.already_linked}, without email {result.without_email}")
        print(f"  import jobs {result.files}: inserted {result.inserted}, existing {result.existing}")
        print(f"  failed {result.failed}")
        for failure in result.failures[:20]:
            print(f"    failed {failure}")
        print(f"  roles assigned {result.role_assignments} in {result.role_calls} calls, links written {result.links}")
        print(f"  handed to the worker {result.enqueued} (existing accounts to match, refused rows to retry)")
        return 1 if result.failed else 0
    if args.target:
        if args.target not in svc.jobs:
            raise UsageError(
                f"--target {args.target}: the mapping names no such target (it names {', '.join(svc.jobs)})"
            )
        progress = ProgressLine()
        done = await svc.backfill(args.target, concurrency=args.concurrency).run(progress=progress)
        progress.done()
        for line in summary(done):
            print(line)
        return 1 if done.failed else 0
    queued = await svc.entra()[1].backfill()
    print(f"backfill: {queued} users queued for the worker (every target the mapping names)")
    return 0


async def cmd_audit(svc: bootstrap.App, args: argparse.Namespace) -> int:
    if args.identity:
        rows = await svc.audit.for_identity(args.identity)
    else:
        rows = await svc.audit.all()
    shown = 0
    for row in rows:
        at = str(row.get("at", ""))
        if (args.since or args.until) and not _within(at, args.since, args.until):
            continue
        identity = row.get("identity") or decode_key(str(row["PartitionKey"]))
        print(
            f"{at}  {identity:<36}  {row.get('source', ''):<12} {row.get('action', ''):<22} "
            f"{row.get('outcome', ''):<8} {row.get('detail') or row.get('diff') or row.get('error') or ''}"
        )
        shown += 1
        if shown >= args.limit:
            break
    return 0


def cmd_check() -> int:
    """The settings, then the mapping file and the settings its sources and targets need, then its
    Entra groups in Entra ID (read through Graph; storage is not needed). Exit 2 when anything is
    wrong, 1 when Graph could not answer, 0 when sound."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(exc)
        print("the mapping file and its groups are checked once the settings are valid")
        return 2
    try:
        mapping = load_mapping(settings.mapping_file)
    except MappingError as exc:
        print("settings: ok so far (the ones the mapping's sources and targets need are checked with it)")
        print(exc)
        return 2
    try:
        check_source_settings(settings, mapping.sources.values())
        check_target_settings(settings, mapping.targets.values())
    except SettingsError as exc:
        print(exc)
        return 2
    print("settings: ok")
    targets = ", ".join(f"{n} ({len(t.attributes)} attributes)" for n, t in mapping.targets.items()) or "none"
    sources = ", ".join(f"{n} ({s.kind})" for n, s in mapping.sources.items())
    print(f"mapping file {mapping.source}: ok (version {mapping.version}; sources: {sources}; targets: {targets})")
    if DEFAULT_SOURCE not in mapping.sources:
        print("groups: no Entra ID source; inbound groups are named by their displayName")
        return 0
    entra = mapping.for_source(DEFAULT_SOURCE)
    try:
        problems = asyncio.run(_mapping_group_problems(settings, entra))
    except SyncError as exc:
        print(f"error: could not read the mapping's groups from Entra ID: {exc}", file=sys.stderr)
        return 1
    if problems:
        print(f"mapping file {mapping.source}: {len(problems)} group problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 2
    groups = len(entra.relevant_groups)
    print(f"groups: {groups} of {groups} found in Entra ID" if groups else "groups: the mapping names none")
    return 0


async def _mapping_group_problems(settings: Settings, mapping: SyncMapping) -> list[str]:
    client = graph_client(settings)
    return await mapping_group_problems(GraphSource(client, mapping), mapping)


def _within(at: str, since: datetime | None, until: datetime | None) -> bool:
    """Whether an audit row's time is in [since, until]; a row whose time cannot be read is not."""
    try:
        when = iso_time(at)
    except argparse.ArgumentTypeError:
        return False
    return (since is None or when >= since) and (until is None or when <= until)


COMMANDS: dict[str, Callable[[bootstrap.App, argparse.Namespace], Awaitable[int]]] = {
    "reconcile": cmd_reconcile,
    "approve": cmd_approve,
    "runs": cmd_runs,
    "report": cmd_report,
    "backfill": cmd_backfill,
    "audit": cmd_audit,
}


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="entra-sync", description="entra-sync operator commands")
    p.add_argument("--settings", help="a local.settings.json whose Values to use (environment wins)")
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("reconcile", help="compare both sides, report drift, optionally queue repairs")
    mode = rec.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="plan and report; change nothing")
    mode.add_argument("--apply", action="store_true", help="queue the safe repairs")
    rec.add_argument("--target", help="one target the mapping names (default: every target, each its own run)")
    app = sub.add_parser("approve", help="release a run held by the circuit breaker")
    app.add_argument("run")
    app.add_argument("--by", default=os.environ.get("USER", "operator"), help="who approves (recorded in the audit)")
    runs = sub.add_parser("runs", help="recent reconciliation runs")
    runs.add_argument("--limit", type=at_least_one, default=20, help="how many of the latest runs (1 or more)")
    rep = sub.add_parser("report", help="print or save a run's report")
    rep.add_argument("run")
    rep.add_argument("--format", choices=("html", "json", "csv"), default="json")
    rep.add_argument("--output", help="write to this file instead of standard output")
    rep.add_argument("--open", action="store_true", help="write to a temporary file and open it")
    back = sub.add_parser(
        "backfill",
        help="initial load: queue every Entra user once; with --target, match, adopt and create in one target now",
    )
    back.add_argument(
        "--import-jobs",
        action="store_true",
        help="create the in-scope joiners through Auth0 import jobs (bulk) instead of one worker run each",
    )
    back.add_argument(
        "--target",
        help="one target: its existing accounts matched (and stamped), the rest created, in this run with "
        "progress; with --import-jobs, the Auth0 target (default auth0)",
    )
    back.add_argument(
        "--concurrency",
        type=at_least_one,
        default=CONCURRENCY,
        help=f"with --target: identities converged at once (default {CONCURRENCY}; the target's rate limit "
        "still applies)",
    )
    aud = sub.add_parser("audit", help="audit rows, by identity or time")
    aud.add_argument("--identity", help="an Entra object id")
    aud.add_argument("--since", type=iso_time, help="ISO 8601 time, e.g. 2026-11-22T00:00:00Z (UTC without an offset)")
    aud.add_argument("--until", type=iso_time, help="ISO 8601 time")
    aud.add_argument("--limit", type=at_least_one, default=200, help="at most this many rows (1 or more)")
    sub.add_parser("check", help="check the settings, the mapping file and that its groups exist in Entra ID")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.settings:
            _load_settings_file(args.settings)
        if args.command == "check":  # needs no storage, and reports settings problems itself
            return cmd_check()
        command = COMMANDS[args.command]
        return asyncio.run(_with_services(lambda svc: command(svc, args)))
    except (UsageError, SettingsError, MappingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
