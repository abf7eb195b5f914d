"""``python -m sandbox``: run the sandbox tenant, or the demo on it.

python -m sandbox demo  [--users 300 --groups 12 --seed 7]
python -m sandbox serve [--users 200 --groups 12 --seed 7 --graph-port 8001 --auth0-port 8002 --no-azurite
                         --dir sandbox-run]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from sandbox.azurite import AzuriteUnavailable
from sandbox.stack import Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("demo", "run entra-sync's main job on the sandbox"), ("serve", "run the sandbox")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--users", type=int, default=300, help="users in the seeded tenant (default 300)")
        p.add_argument("--groups", type=int, default=12, help="groups in the seeded tenant (default 12)")
        p.add_argument("--seed", type=int, default=7, help="seed: the same seed gives the same tenant")
        if name == "serve":
            p.add_argument("--graph-port", type=int, default=0, help="Graph emulator port (default: free port)")
            p.add_argument("--auth0-port", type=int, default=0, help="Auth0 emulator port (default: free port)")
            p.add_argument("--no-azurite", action="store_true", help="do not start Azurite (use your own)")
            p.add_argument("--dir", default="sandbox-run", help="where mapping.yaml and local.settings.json go")
    args = parser.parse_args(argv)
    if args.users < 1 or args.groups < 1:
        parser.error("--users and --groups must be at least 1")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")
    try:
        if args.command == "demo":
            from sandbox.demo import run_demo

            return run_demo(users=args.users, groups=args.groups, seed=args.seed)
        return serve(args)
    except AzuriteUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def serve(args: argparse.Namespace) -> int:
    """The whole stack, by hand: the emulators, a SCIM application, Azurite and the host stand-in
    running every function (worker, lane, webhooks, timers), with a working mapping and a
    ``local.settings.json`` written to ``--dir`` for the ``entra-sync`` commands."""
    from sandbox.demo import MAILBOX, ROLES, Receivers, day_settings
    from sandbox.salesforce import SalesforceEmulator
    from sandbox.scim import ScimApp
    from sandbox.stack import functions_host

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with (
        Stack(graph_port=args.graph_port, auth0_port=args.auth0_port, with_azurite=not args.no_azurite) as stack,
        ScimApp() as scim,
        SalesforceEmulator() as org,
        Receivers() as receivers,
    ):
        summary = stack.seed(args.users, max(args.groups, 3), args.seed)
        dump = stack.graph.snapshot(full=True)["dump"]
        for role in ROLES:
            stack.auth0.add_role(role)
        mapping = folder / "mapping.yaml"
        env = day_settings(stack, scim, org, receivers, mapping, dump["groups"])
        with functions_host(env) as (host, svc):
            host.run_coroutine(svc.ensure_storage())
            host.run_timer("subscriptions_renew")  # change notifications flow from now on
            settings = folder / "local.settings.json"
            settings.write_text(json.dumps({"IsEncrypted": False, "Values": env}, indent=2))
            person = next(u for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member")
            print(f"Graph emulator   {stack.graph.base_url}   ({summary['users']} users, {summary['groups']} groups)")
            print(f"Auth0 emulator   {stack.auth0.base_url}   (roles {', '.join(ROLES)})")
            print(f"SCIM application {scim.base_url}")
            print(f"Salesforce org   {org.origin}   (profiles, roles, permission sets and a queue seeded)")
            if stack.azurite is not None and stack.azurite.endpoints is not None:
                e = stack.azurite.endpoints
                print(f"Azurite          blob {e.blob_port}, queue {e.queue_port}, table {e.table_port}")
            for name, where in receivers.where():
                print(f"{name:<17}{where}")
            print(f"Email            Graph sendMail from {MAILBOX}   (read: {stack.graph.origin}/_control/mail)")
            print(f"Functions        {host.base_url} ({', '.join(sorted(host.functions))})")
            print(f"\nWrote {mapping} and {settings} (its Values are the settings below):")
            for key, value in sorted(env.items()):
                print(f"  {key}={value}")
            print("\nNext, in another shell (the README's 'A day with the sandbox' goes on from here):")
            print(f"  export ES_SETTINGS={settings} PERSON={person['userPrincipalName']}")
            print("  entra-sync --settings $ES_SETTINGS status")
            print("  entra-sync --settings $ES_SETTINGS sync-one $PERSON --dry-run")
            print("\nControl endpoints: <emulator origin>/_control/{reset,seed,snapshot,requests,limits,faults}")
            print("Ctrl-C stops the sandbox.", flush=True)
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
