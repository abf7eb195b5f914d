"""``entra-sync``: the operator's command line, against the same settings the functions use.

    entra-sync status                         queues, timers, runs, what is held, subscriptions, targets' health
    entra-sync sync-one WHO [--dry-run]       one person now: scope, match, each target's plan, then applied
    entra-sync preview --mapping FILE         what a mapping change would do, before it is deployed
    entra-sync audit [--identity ID|UPN] [--target T] [--action A] [--outcome O] [--since ISO] [--format csv]
    entra-sync pause|resume [--target T]      stop or start calling a target, for every instance
    entra-sync poison list|show|replay|drop   what was given up on
    entra-sync reconcile --dry-run|--apply    the nightly comparison, now (the circuit breaker may hold a run)
    entra-sync approve RUN                    release a held run or mass change
    entra-sync runs                           recent runs and their status
    entra-sync report RUN|--latest [--format html|json|csv] [--output FILE] [--open]
    entra-sync backfill [--target T | --import-jobs]   initial load
    entra-sync check                          settings, the mapping file, its groups, each target asked
    entra-sync doctor                         a deployment from outside: Graph permissions, Auth0 scopes, tokens,
                                              subscriptions, storage; each missing piece with its fix
    entra-sync events --since ISO [--until ISO] [--post]   the event feed replayed from the audit trail

Settings come from the environment, or from a Functions ``local.settings.json`` given with
``--settings`` (its ``Values``). Run it as ``python -m shared.cli`` or, installed, ``entra-sync``.

Exit codes: 0 done, 1 the command failed or (status, sync-one) something needs a person, 2 bad usage
or an environment it cannot work in (bad arguments, settings or mapping, unreachable storage), 3 a
run or change held for approval. Errors are one line on stderr. Read commands take ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable

from azure.core.exceptions import AzureError

from shared import __version__, bootstrap
from shared.cli.audit import cmd_audit
from shared.cli.backfill import cmd_backfill
from shared.cli.check import cmd_check
from shared.cli.common import (
    Progress,
    UsageError,
    _Parser,
    at_least_one,
    iso_time,
    load_settings_file,
    with_services,
    without_query,
)
from shared.cli.doctor import cmd_doctor
from shared.cli.events import cmd_events
from shared.cli.operate import cmd_pause, cmd_resume, cmd_status
from shared.cli.poison import cmd_poison
from shared.cli.preview import cmd_preview
from shared.cli.runs import cmd_approve, cmd_reconcile, cmd_report, cmd_runs
from shared.cli.sync_one import cmd_sync_one
from shared.errors import SyncError
from shared.mapping.model import MappingError
from shared.services.backfill import CONCURRENCY
from shared.settings import SettingsError

__all__ = ["Progress", "UsageError", "cmd_check", "main", "parser"]


COMMANDS: dict[str, Callable[[bootstrap.App, argparse.Namespace], Awaitable[int]]] = {
    "reconcile": cmd_reconcile,
    "approve": cmd_approve,
    "runs": cmd_runs,
    "report": cmd_report,
    "backfill": cmd_backfill,
    "audit": cmd_audit,
    "status": cmd_status,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "poison": cmd_poison,
    "sync-one": cmd_sync_one,
    "preview": cmd_preview,
    "events": cmd_events,
}


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="entra-sync", description="entra-sync operator commands")
    p.add_argument("--settings", help="a local.settings.json whose Values to use (environment wins)")
    p.add_argument("--version", action="version", version=f"entra-sync {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    reads = _Parser(add_help=False)  # what every read command takes
    reads.add_argument("--json", action="store_true", help="print JSON instead of text")
    rec = sub.add_parser("reconcile", help="compare both sides, report drift, optionally queue repairs")
    mode = rec.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="plan and report; change nothing")
    mode.add_argument("--apply", action="store_true", help="queue the safe repairs")
    rec.add_argument("--target", help="one target the mapping names (default: every target, each its own run)")
    rec.add_argument("--by", default=os.environ.get("USER", "operator"), help="who runs it (recorded in the report)")
    app = sub.add_parser("approve", help="release a run held by the circuit breaker")
    app.add_argument("run")
    app.add_argument("--by", default=os.environ.get("USER", "operator"), help="who approves (recorded in the audit)")
    runs = sub.add_parser("runs", help="recent reconciliation runs", parents=[reads])
    runs.add_argument("--limit", type=at_least_one, default=20, help="how many of the latest runs (1 or more)")
    rep = sub.add_parser("report", help="print or save a run's report, or the latest run of every target")
    rep.add_argument("run", nargs="?", help="a run id (see `runs`)")
    rep.add_argument("--latest", action="store_true", help="the latest run of every target, one section each")
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
    aud = sub.add_parser("audit", parents=[reads], help="search the audit rows, newest first")
    aud.add_argument(
        "--identity",
        help="an identity's id (an Entra object id), a UPN or email (looked up in the sources), or operator",
    )
    aud.add_argument("--target", help="rows of one target (auth0, scim:crm, ...)")
    aud.add_argument("--action", help="rows of one action (create, update, block, pause, ...)")
    aud.add_argument("--outcome", help="rows of one outcome (ok, skipped, refused, failed, ...)")
    aud.add_argument("--correlation-id", help="the rows of one change, across targets")
    aud.add_argument(
        "--since",
        type=iso_time,
        help="ISO 8601 time, e.g. 2026-11-22T00:00:00Z (UTC without an offset); default: 7 days ago when "
        "neither --identity nor --correlation-id is given",
    )
    aud.add_argument("--until", type=iso_time, help="ISO 8601 time (included)")
    aud.add_argument("--limit", type=at_least_one, default=200, help="at most this many rows, the newest (1 or more)")
    aud.add_argument("--format", choices=("text", "json", "csv"), default="text", help="how to print them")
    aud.add_argument("--output", help="write to this file instead of standard output (an export)")
    ev = sub.add_parser("events", help="the event feed replayed from the audit trail (CloudEvents, same ids)")
    ev.add_argument("--since", type=iso_time, required=True, help="ISO 8601 time, e.g. 2026-11-22T00:00:00Z")
    ev.add_argument("--until", type=iso_time, help="ISO 8601 time (excluded)")
    ev.add_argument("--post", action="store_true", help="deliver them again to the feed's endpoint")
    sub.add_parser(
        "status",
        parents=[reads],
        help="queues, last runs, what is held, subscriptions and each target's health (exit 3 held, 1 attention)",
    )
    for verb, what in (("pause", "stop calling"), ("resume", "call again")):
        switch = sub.add_parser(verb, help=f"{what} a target, or every target (for every instance; audited)")
        switch.add_argument("--target", help="one target the mapping names (default: every target)")
        switch.add_argument("--by", default=os.environ.get("USER", "operator"), help="who (recorded in the audit)")
    one = sub.add_parser(
        "sync-one",
        parents=[reads],
        help="one person now: the scope decision, the match and each target's plan field by field, then applied",
    )
    one.add_argument("who", help="an object id, a UPN or an email (a userName for an inbound source)")
    one.add_argument("--target", help="one target (default: every target the source feeds)")
    one.add_argument("--source", help="the source the person is in (default: entra, or the only source)")
    one.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    one.add_argument("--by", default=os.environ.get("USER", "operator"), help="who (recorded in the audit)")
    pre = sub.add_parser(
        "preview",
        parents=[reads],
        help="what a mapping file would do before it is deployed: per target, creates, changes (per field and "
        "entitlement) and deprovisions by name, and whether the breaker or the guard would hold it (exit 3)",
    )
    pre.add_argument("--mapping", required=True, help="the mapping file to try (the deployed one is not changed)")
    pre.add_argument("--target", help="one target of that file (default: every target)")
    pre.add_argument("--names", type=at_least_one, default=50, help="deprovisions listed by name per target")
    poison = sub.add_parser("poison", help="the work given up on: list, show, replay or drop it (audited)")
    acts = poison.add_subparsers(dest="action", required=True)
    acts.add_parser("list", parents=[reads], help="the messages on both poison queues (at most 32 each)")
    show = acts.add_parser("show", parents=[reads], help="one message and its identity's audit trail")
    show.add_argument("id", help="the queue message id (from poison list)")
    for verb, what in (("replay", "send back to work, attempts reset"), ("drop", "delete")):
        act = acts.add_parser(verb, help=f"{what}: the messages named, or --all")
        act.add_argument("ids", nargs="*", help="queue message ids (from poison list)")
        act.add_argument("--all", action="store_true", help="every message on both poison queues")
        act.add_argument("--by", default=os.environ.get("USER", "operator"), help="who (recorded in the audit)")
    sub.add_parser("check", help="check the settings, the mapping file and that its groups exist in Entra ID")
    sub.add_parser("doctor", parents=[reads], help="check a deployment from outside, each missing piece with its fix")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.settings:
            load_settings_file(args.settings)
        if args.command == "check":  # needs no storage, and reports settings problems itself
            return cmd_check()
        if args.command == "doctor":  # creates no storage: a missing queue or table is one of its findings
            return cmd_doctor(args.json)
        command = COMMANDS[args.command]
        return asyncio.run(with_services(lambda svc: command(svc, args)))
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except (UsageError, SettingsError, MappingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except AzureError as exc:  # storage answered something no command expects: one line, not a traceback
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: Azure Storage (AzureWebJobsStorage): {without_query(first)}", file=sys.stderr)
        return 1
