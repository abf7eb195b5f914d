"""The main job on the sandbox: entra-sync keeping an emulated Auth0 tenant and a SCIM 2.0
application (scim2-server) in step with an emulated Entra ID tenant, driven exactly as the Functions
host would drive it.

Starts Azurite, both emulators and the SCIM application, seeds a tenant, points the functions at
them, creates the Graph subscriptions (real validation handshake), backfills, then plays a scripted
day whose every step flows emulator -> graph_webhook -> the lane -> sync_lane -> Auth0 and the SCIM
application; then Entra provisioning pushes a user to the inbound SCIM endpoint (source ``hr-push``),
which flows scim_inbox -> the lane -> sync_lane -> Auth0 and the SCIM application as their own
targets. It ends with a summary and the audit trail of the day's new hire.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx

from sandbox.courier import MemoryCourier
from sandbox.event_sink import DEFAULT_KEY as EVENTS_KEY
from sandbox.event_sink import EventSink
from sandbox.host import FunctionsHost
from sandbox.mapping import (
    INBOUND_SOURCE,
    SALESFORCE_SEED,
    inbound_sections,
    inbound_sources,
    salesforce_section,
    sandbox_mapping_v2,
    scim_section,
)
from sandbox.receiver import WebhookReceiver
from sandbox.salesforce import SalesforceEmulator
from sandbox.salesforce.seed import seed_org
from sandbox.scim import GROUP_SCHEMA, PATCH_SCHEMA, USER_SCHEMA, ScimApp
from sandbox.stack import INBOX_TOKEN, Stack, functions_host
from sandbox.tickets import JiraEmulator, ServiceNowEmulator
from shared.alerting.feed import LAG_S, post_again
from shared.stores.keys import utc_text

ROLES = ("Employee", "Sales Reader", "Sales Writer", "Support Agent")
STEP_TIMEOUT_S = 15.0
REPO = Path(__file__).resolve().parent.parent


# The database joiner's welcome: Auth0's verification email wherever no courier delivers a ticket
# (``serve`` and the CLI beside it); the demo hands its joiners' tickets to a mailbox of its own.
VERIFY: Final = "{send: verification_email}"
TICKET: Final = "{send: password_change_ticket, result_url: 'https://app.sandbox.example/welcome', ttl_s: 604800}"


MAILBOX: Final = "entra-sync@sandbox.example"  # the alerts' sending mailbox (Graph sendMail, the Graph emulator)
SECOPS: Final = "secops@sandbox.example"
# Where the day's alerts, findings and events go: each channel to a sandbox receiver (the settings
# naming them are in day_settings).
DAY_ALERTS: Final = f"""alerts:
  channels:
    secops: {{kind: slack, url_setting: ALERTS_SLACK_URL}}
    it-ops: {{kind: teams, url_setting: ALERTS_TEAMS_URL}}
    mail: {{kind: email, mailbox: {MAILBOX}, to: [{SECOPS}]}}
    itsm: {{kind: servicenow, url_setting: ALERTS_SNOW_URL, user_setting: ALERTS_SNOW_USER,
           password_setting: ALERTS_SNOW_PASSWORD, table: incident}}
    iam: {{kind: jira, url_setting: ALERTS_JIRA_URL, email_setting: ALERTS_JIRA_EMAIL,
          token_setting: ALERTS_JIRA_TOKEN, project: IAM, issue_type: Task}}
  routes:
    - {{kinds: [risk], min_severity: medium, channels: [secops, mail]}}
    - {{kinds: [held, failed_run, poison, quarantine], channels: [it-ops]}}
    - {{kinds: [findings], channels: [itsm, iam], tickets: class}}
  events: {{url_setting: EVENTS_URL, secret_setting: EVENTS_SIGNING_KEY}}
"""


class Receivers:
    """The sandbox's stand-ins for where alerts, findings and events go: a Slack/Teams webhook
    receiver (hooks ``slack``, ``teams`` and ``security`` for the plain NOTIFY_WEBHOOK_URL), a
    ServiceNow instance, a Jira site, an event endpoint; email lands in the Graph emulator's outbox."""

    def __init__(self) -> None:
        self.hooks = WebhookReceiver()
        self.itsm = ServiceNowEmulator()
        self.jira = JiraEmulator()
        self.events = EventSink()

    def __enter__(self) -> Receivers:
        try:
            for piece in (self.hooks, self.itsm, self.jira, self.events):
                piece.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for piece in (self.events, self.jira, self.itsm, self.hooks):
            piece.stop()

    def settings(self) -> dict[str, str]:
        return {
            "NOTIFY_WEBHOOK_URL": self.hooks.url(),  # what no route takes, as plain text
            "ALERTS_SLACK_URL": self.hooks.url("slack"),
            "ALERTS_TEAMS_URL": self.hooks.url("teams"),
            "ALERTS_SNOW_URL": self.itsm.origin,
            "ALERTS_SNOW_USER": self.itsm.user,
            "ALERTS_SNOW_PASSWORD": self.itsm.password,
            "ALERTS_JIRA_URL": self.jira.origin,
            "ALERTS_JIRA_EMAIL": self.jira.email,
            "ALERTS_JIRA_TOKEN": self.jira.token,
            "EVENTS_URL": self.events.url(),
            "EVENTS_SIGNING_KEY": EVENTS_KEY,
        }

    def where(self) -> list[tuple[str, str]]:
        """What ``serve`` prints: each receiver and where to read what it got."""
        return [
            (
                "Slack / Teams",
                f"{self.hooks.origin}/hooks/{{slack,teams}}   (read: {self.hooks.origin}/_control/messages)",
            ),
            ("ServiceNow", f"{self.itsm.origin}/api/now/table/incident   (read: {self.itsm.origin}/_control/tickets)"),
            ("Jira", f"{self.jira.origin}/rest/api/3/issue   (read: {self.jira.origin}/_control/tickets)"),
            ("Event feed", f"{self.events.url()}   (read: {self.events.origin}/_control/events)"),
        ]


def sandbox_day_mapping(groups: list[dict[str, Any]], scim_url: str, welcome: str = VERIFY) -> str:
    """The mapping the demo and ``serve`` run: Auth0 and a SCIM application fed by Entra ID, an
    inbound source feeding an Auth0 and a SCIM target of its own, and the alerts routed to the
    sandbox's receivers (:data:`DAY_ALERTS`)."""
    staff, sales, support = groups[0], groups[1], groups[2]
    grants = [
        (staff["id"], ["Employee"]),
        (sales["id"], ["Sales Reader", "Sales Writer"]),
        (support["id"], ["Sales Reader", "Support Agent"]),
    ]
    text = sandbox_mapping_v2(
        grants,
        matching="{precedence: [link, app_metadata, email]}",
        deprovision="{action: block, hard_delete: block, revoke_sessions: true, revoke_refresh_tokens: true}",
        department_default="Unassigned",
        others=scim_section(scim_url, [(staff["id"], "Staff"), (sales["id"], "Sales")])
        # Sales and support people get Salesforce users: profile, role and permission sets from their groups.
        + salesforce_section(sales["id"], support["id"], staff["id"])
        # What Entra provisioning pushes to the inbound endpoint feeds an Auth0 target and a SCIM
        # target of its own (each target has one source), in the same tenant and application.
        + inbound_sections(
            scim_url,
            [("Research", ["Employee"], ["Research"])],
            auth0="auth0:hr",
            scim="hr",
            auth0_matching="{app_metadata_key: hr_push_id}",  # not the entra-fed target's key
        ),
        extra=inbound_sources(),
    )
    # Day one in Auth0: Staff join the organization acme, and a database joiner gets a welcome.
    line = "    connection: Username-Password-Authentication\n"
    day_one = (
        f"    organizations: [{{group: {staff['id']}, organization: acme, roles: [Employee]}}]\n"
        f"    welcome: {{Username-Password-Authentication: {welcome}}}\n"
    )
    return text.replace(line, line + day_one, 1) + DAY_ALERTS


def day_settings(
    stack: Stack,
    scim: ScimApp,
    org: SalesforceEmulator,
    receivers: Receivers,
    mapping_path: Path,
    groups: list[dict[str, Any]],
    welcome: str = VERIFY,
) -> dict[str, str]:
    """The day's mapping written to ``mapping_path``, the Salesforce org seeded for it, and the app
    settings that run it on this sandbox (alerts, tickets and events go to ``receivers``)."""
    mapping_path.write_text(sandbox_day_mapping(groups, scim.base_url, welcome))
    org.seed(SALESFORCE_SEED)
    stack.auth0.add_organization("acme", {"entra": True})  # the organization Staff join
    return {
        **stack.env(),
        "SYNC_MAPPING_FILE": str(mapping_path),
        **receivers.settings(),
        "SCIM_CRM_TOKEN": scim.token,
        "SALESFORCE_INSTANCE_URL": org.origin,
        "SALESFORCE_CLIENT_ID": org.client_id,
        "SALESFORCE_CLIENT_SECRET": org.client_secret,
    }


class _Crm:
    """What the demo reads from the SCIM application: a person's user and groups."""

    def __init__(self, app: ScimApp):
        self.app = app

    def user(self, entra_id: str) -> dict[str, Any]:
        return next((u for u in self.app.users() if u.get("externalId") == entra_id), {})

    def groups(self, entra_id: str) -> set[str]:
        user = self.user(entra_id)
        return {str(g["displayName"]) for g in self.app.groups() if user and user["id"] in self.app.members_of(g["id"])}

    def email(self, entra_id: str) -> str:
        return next((str(e.get("value")) for e in self.user(entra_id).get("emails") or ()), "")


def _wait(check: Callable[[], Any], timeout_s: float = STEP_TIMEOUT_S, started: float | None = None) -> float:
    """Seconds until ``check()`` holds (polling the emulator's state), since ``started`` (a
    ``time.perf_counter()`` reading; default now), or raise."""
    started = time.perf_counter() if started is None else started
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if check():
            return time.perf_counter() - started
        time.sleep(0.002)
    raise TimeoutError(f"not converged within {timeout_s:.0f} s")


def _print_step(n: int, title: str, seconds: float, detail: str) -> None:
    label = f"{n}. {title}"
    print(f"  {label:<47} {seconds * 1000:7.0f} ms   {detail}")


def _print_scim(crm: _Crm, entra_id: str) -> None:
    user = crm.user(entra_id)
    groups = ", ".join(sorted(crm.groups(entra_id))) or "none"
    state = "active" if user.get("active") else "inactive"
    print(f"     {'':<44} {'':>10}   SCIM: {user.get('userName')} {state}, groups {groups}")


def _pct(samples: dict[str, Any], key: str) -> str:
    s = samples.get(key) or {}
    if not s.get("count"):
        return "-"
    return f"p50 {s['p50'] * 1000:.0f} ms, p99 {s['p99'] * 1000:.0f} ms"


def run_demo(users: int, groups: int, seed: int) -> int:
    print("entra-sync demo: emulated Entra ID -> entra-sync Functions -> emulated Auth0 and a SCIM app, on Azurite\n")
    with (
        Stack() as stack,
        Receivers() as receivers,
        ScimApp() as scim,
        SalesforceEmulator() as org,
        tempfile.TemporaryDirectory(prefix="entra-sync-demo-") as tmp,
    ):
        graph, auth0, crm = stack.graph, stack.auth0, _Crm(scim)
        summary = stack.seed(users, max(groups, 3), seed)
        dump = graph.snapshot(full=True)["dump"]
        for role in ROLES:
            auth0.add_role(role)
        courier = MemoryCourier()  # the joiners' mailbox: it takes the tickets
        # Three people already have Auth0 accounts (same email): they are linked, never duplicated.
        existing = [u for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member"][:3]
        # The third has not signed in since spring: the nightly run reports it stale, a ticket for a person.
        spring = utc_text(datetime.now(UTC) - timedelta(days=200))
        for n, u in enumerate(existing):
            auth0.add_user({"user_id": f"legacy-{n}", "email": u["mail"].lower(), "name": f"Legacy {u['displayName']}",
                            **({"last_login": spring} if n == 2 else {})})  # fmt: skip
        # Two of them are in the SCIM application too (same userName, no externalId): adopted, not duplicated.
        before = {u["id"]: scim.add_user(u["userPrincipalName"], displayName=f"Legacy {u['displayName']}")["id"]
                  for u in existing[:2]}  # fmt: skip
        mapping_path = Path(tmp) / "mapping.yaml"
        kinds = Counter(
            ("guest" if u.get("userType") == "Guest" else "member", u["accountEnabled"]) for u in dump["users"]
        )
        print(f"Sandbox   Graph {graph.base_url}   Auth0 {auth0.base_url}   Azurite (in memory)")
        print(f"          SCIM application (scim2-server) {scim.base_url}")
        print(
            f"Tenant    {summary['users']} users ({kinds[('member', True)]} enabled members, "
            f"{kinds[('member', False)]} disabled, {kinds[('guest', True)] + kinds[('guest', False)]} guests), "
            f"{summary['groups']} groups, {summary['memberships']} memberships, seed {seed}"
        )
        print(f"Auth0     {len(ROLES)} roles, {len(existing)} pre-existing accounts")
        print("SCIM      2 pre-existing users; groups Staff and Sales pushed from Entra")
        print(f"Inbound   SCIM endpoint source {INBOUND_SOURCE} (Entra provisioning pushes) feeds auth0:hr, scim:hr\n")

        env = day_settings(stack, scim, org, receivers, mapping_path, dump["groups"], TICKET)
        with functions_host(env, courier=courier) as (host, svc):
            host.run_coroutine(svc.ensure_storage())
            print(f"Functions {', '.join(sorted(host.functions))} (host stand-in at {host.base_url})\n")
            day_began = utc_text(datetime.now(UTC))  # the event feed's replay starts here

            started = time.perf_counter()
            host.run_timer("subscriptions_renew")
            subs = graph.snapshot(full=True)["dump"]["subscriptions"]
            print(
                f"Subscriptions: {', '.join(s['resource'] for s in subs)} created with the validation handshake "
                f"in {(time.perf_counter() - started) * 1000:.0f} ms"
            )

            started = time.perf_counter()
            queued = host.run_coroutine(svc.entra()[1].backfill())
            if not host.wait_idle(600):
                raise TimeoutError("the backfill did not finish")
            took = time.perf_counter() - started
            snap = auth0.snapshot()
            linked = sum(
                1 for n in range(len(existing)) if (auth0.get_user(f"auth0|legacy-{n}") or {}).get("app_metadata")
            )
            adopted = sum(1 for entra_id, scim_id in before.items() if crm.user(entra_id).get("id") == scim_id)
            scim_users = scim.users()
            print(
                f"Backfill: {queued} users queued; Auth0 now holds {snap['users']} accounts "
                f"({linked} existing ones linked, not duplicated) in {took:.1f} s ({queued / took:.0f} users/s)"
            )
            print(
                f"          the SCIM application holds {len(scim_users)} users "
                f"({adopted} existing ones adopted by userName, not duplicated), "
                f"{len(scim.groups())} groups\n"
            )

            print(
                "A day in the tenant (each step: Entra change -> notification -> webhook -> queue -> worker -> "
                "Auth0 and SCIM)"
            )
            graph.log.clear()
            auth0.log.clear()
            scim.log.clear()
            org.log.clear()
            staff, sales = dump["groups"][0]["id"], dump["groups"][1]["id"]
            hire = graph.create_user(
                displayName="Grace Hopper", givenName="Grace", surname="Hopper", mail="grace.hopper@sandbox.example",
                userPrincipalName="grace.hopper@sandbox.onmicrosoft.com", department="Research",
                jobTitle="Engineer", employeeId="E990001", accountEnabled=True,
            )  # fmt: skip
            graph.add_member(staff, hire["id"])
            uid = f"auth0|{hire['id']}"

            def account() -> dict[str, Any]:
                return auth0.get_user(uid) or {}

            secs = _wait(lambda: "Employee" in auth0.user_role_names(uid) and crm.groups(hire["id"]) == {"Staff"})
            _print_step(1, "Hire: Grace Hopper joins Staff", secs, f"account {uid[:18]}..., role Employee")
            _wait(lambda: courier.to(hire["mail"]))
            ticket = next(t for t in auth0.sent_of("password_change_ticket") if t["body"]["user_id"] == uid)
            print(
                f"       welcome: password-change ticket {ticket['ticket'][:48]}... mailed to {hire['mail']} "
                f"(valid {ticket['body']['ttl_sec'] // 86400} days); organization acme, roles "
                f"{', '.join(auth0.memberships(uid).get('acme', [])) or 'none'}"
            )
            _print_scim(crm, hire["id"])

            graph.update_user(hire["id"], jobTitle="Principal Engineer", department="Sales Engineering")
            graph.add_member(sales, hire["id"])
            secs = _wait(
                lambda: (
                    {"Sales Reader", "Sales Writer"} <= set(auth0.user_role_names(uid))
                    and account().get("user_metadata", {}).get("job_title") == "Principal Engineer"
                    and crm.groups(hire["id"]) == {"Staff", "Sales"}
                    and crm.user(hire["id"]).get("title") == "Principal Engineer"
                )
            )
            _print_step(2, "Promotion: new title, joins Sales", secs, "job_title updated, + Sales Reader, Sales Writer")
            _print_scim(crm, hire["id"])

            graph.update_user(hire["id"], mail="grace.hopper@navy.example")
            secs = _wait(
                lambda: (
                    account().get("email") == "grace.hopper@navy.example"
                    and crm.email(hire["id"]) == "grace.hopper@navy.example"
                )
            )
            _print_step(3, "Email change", secs, f"same account, email now {account()['email']}")
            _print_scim(crm, hire["id"])

            auth0.add_sessions(uid, 2, refresh_tokens=1)
            graph.update_user(hire["id"], accountEnabled=False)
            secs = _wait(
                lambda: (
                    account().get("blocked") is True
                    and auth0.sessions_of(uid)["sessions"] == 0
                    and crm.user(hire["id"]).get("active") is False
                )
            )
            _print_step(4, "Disable (leaver)", secs, "blocked, 2 sessions and 1 refresh token revoked")
            _print_scim(crm, hire["id"])

            graph.update_user(hire["id"], accountEnabled=True)
            secs = _wait(lambda: account().get("blocked") is False and crm.user(hire["id"]).get("active") is True)
            _print_step(5, "Re-enable", secs, "unblocked (the block was entra-sync's own)")
            _print_scim(crm, hire["id"])

            graph.soft_delete_user(hire["id"])
            secs = _wait(lambda: account().get("blocked") is True and crm.user(hire["id"]).get("active") is False)
            _print_step(6, "Delete (soft)", secs, "blocked per policy; the link is kept for the audit")
            _print_scim(crm, hire["id"])
            host.wait_idle(STEP_TIMEOUT_S)

            _risky_sign_in(graph, auth0, receivers.hooks, host, existing)
            _nightly_reconciliation(graph, auth0, host, svc, existing, receivers.itsm, receivers.jira)
            _inbound_push(auth0, crm, host)
            _salesforce_day(graph, org, host, dump)
            _event_feed(host, svc, receivers.events, day_began)

            stats = host.stats()
            hook = stats["graph_webhook"]
            writes = Counter(e.route for e in auth0.log.entries() if e.write)
            graph_list = ", ".join(f"{k} {v}" for k, v in sorted(graph.log.counts().items()))
            write_list = ", ".join(f"{k.removeprefix('mgmt.')} {v}" for k, v in sorted(writes.items()))
            delivered = graph.snapshot()["notifications"].get("delivered", "-")
            print("\nSummary of the day")
            print(f"  Graph notifications delivered   {delivered}")
            print(f"  graph_webhook answers           {hook['invocations']} ({_pct(hook, 'answer_time_s')})")
            for name, what in (("sync_lane", "lane"), ("sync_worker", "bulk")):
                runs = stats[name]
                label = f"{name} runs ({what})"
                print(f"  {label:<32}{runs['invocations']} ({_pct(runs, 'run_time_s')}), failed {runs['failed']}")
            print(f"  Graph calls                     {graph.log.total}  ({graph_list})")
            print(f"  Auth0 writes                    {sum(writes.values())}  ({write_list})")
            scim_writes = Counter(e.route.removeprefix("scim.") for e in scim.log.entries() if e.write)
            scim_list = ", ".join(f"{k} {v}" for k, v in sorted(scim_writes.items()))
            print(f"  SCIM writes                     {sum(scim_writes.values())}  ({scim_list})")
            sf_calls = org.log.counts()
            sf_list = ", ".join(f"{k.removeprefix('salesforce.')} {v}" for k, v in sorted(sf_calls.items()))
            print(f"  Salesforce API calls            {sum(sf_calls.values())}  ({sf_list})")

            rows = host.run_coroutine(svc.audit.for_identity(hire["id"]))
            print(f"\nAudit trail for {hire['displayName']} ({hire['id']})")
            for row in rows:
                detail = str(row["detail"] if row["outcome"] != "ok" or not row.get("diff") else row["diff"])
                when, source, action, outcome = row["at"][11:23], row["source"], row["action"], row["outcome"]
                target = str(row.get("target") or "")
                print(f"  {when}  {target:<9} {source:<12} {action:<22} {outcome:<8} {detail[:70]}")
    print("\nDone: sandbox stopped.")
    return 0


def _nightly_reconciliation(
    graph: Any,
    auth0: Any,
    host: FunctionsHost,
    svc: Any,
    skip: list[Any],
    itsm: ServiceNowEmulator,
    jira: JiraEmulator,
) -> None:
    """Step 8: drift the day's notifications could not see, found and repaired by the nightly run;
    what policy leaves to a person (an account nobody signed in to for months) opens a ServiceNow
    ticket and a Jira issue."""
    taken = {u["id"] for u in skip}
    people = [
        u for u in graph.snapshot(full=True)["dump"]["users"]
        if u["accountEnabled"] and u.get("userType") == "Member" and u["id"] not in taken
    ]  # fmt: skip
    renamed, moved = people[-1], people[-2]
    # An Auth0 admin renames an account by hand, and a department change's notification is lost.
    headers = {"Authorization": f"Bearer {auth0.static_token}"}
    httpx.patch(f"{auth0.base_url}/users/auth0|{renamed['id']}", json={"name": "Renamed By Hand"}, headers=headers)
    graph.configure_notifications(drop_rate=1.0)
    graph.update_user(moved["id"], department="Quietly Moved")
    graph.wait_notifications(STEP_TIMEOUT_S)
    graph.configure_notifications(drop_rate=0.0)

    started = time.perf_counter()
    summary, _ = host.run_coroutine(svc.reconcilers["auth0"].run("apply"), timeout_s=600)
    host.wait_idle(STEP_TIMEOUT_S)
    secs = time.perf_counter() - started
    drift = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())) or "none"
    _print_step(8, "Nightly reconciliation", secs, f"drift: {drift}; {summary.enqueued} repaired through the worker")
    fixed = (auth0.get_user(f"auth0|{renamed['id']}") or {}).get("name") == renamed["displayName"] and (
        auth0.get_user(f"auth0|{moved['id']}") or {}
    ).get("user_metadata", {}).get("department") == "Quietly Moved"
    check, _ = host.run_coroutine(svc.reconcilers["auth0"].run("dry-run"))
    print(
        f"     both repaired: {'yes' if fixed else 'NO'}; a second (dry) run finds "
        f"{sum(check.counts.get(c, 0) for c in ('missing', 'attribute_mismatch', 'role_mismatch', 'orphaned'))} "
        f"repairable differences; circuit breaker {'HELD the run' if summary.breaker.tripped else 'not tripped'}"
    )
    out = REPO / ".sandbox" / "reports"
    out.mkdir(parents=True, exist_ok=True)
    for fmt in ("html", "csv", "json"):
        (out / f"{summary.run_id}.{fmt}").write_bytes(host.run_coroutine(svc.reports.load(summary.run_id, fmt)))
    print(f"     report: {out / (summary.run_id + '.html')} (and .csv, .json)")
    for ticket in itsm.tickets():
        print(f"     ServiceNow {ticket.get('number')}: {ticket.get('short_description')}")
    for issue in jira.tickets():
        print(f"     Jira {issue.get('key')}: {issue.get('summary')}")


def _inbound_push(auth0: Any, crm: _Crm, host: FunctionsHost) -> None:
    """Steps 9 and 10: Entra provisioning (of a tenant that grants no Graph permission) pushes a
    user and a group membership, then disables the user, through the inbound SCIM endpoint with its
    bearer token; each push flows scim_inbox -> the lane -> sync_lane -> auth0:hr and scim:hr."""
    tenant_url = f"{host.base_url}/scim/{INBOUND_SOURCE}/v2"
    print(f"\nEntra provisioning pushes to {tenant_url}?aadOptscim062020 (source {INBOUND_SOURCE})")
    headers = {"Authorization": f"Bearer {INBOX_TOKEN}", "Content-Type": "application/scim+json"}
    mail = "ada.lovelace@hr.example"
    person = {
        "schemas": [USER_SCHEMA], "externalId": "7d3c1f0e-5a5a-4b4b-8c8c-0123456789ab", "userName": mail,
        "active": True, "displayName": "Ada Lovelace", "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"type": "work", "primary": True, "value": mail}],
    }  # fmt: skip
    with httpx.Client(base_url=tenant_url, headers=headers, params={"aadOptscim062020": ""}, timeout=10) as entra:
        started = time.perf_counter()
        probe = entra.get("/Users", params={"filter": 'userName eq "2d0f6b51-93b7-4c8e-9d1a-4e0cbb7f3c2a"'})
        probe.raise_for_status()  # Test Connection: a random GUID, 200 with an empty list
        pushed = entra.post("/Users", json=person).raise_for_status().json()["id"]
        group = {"schemas": [GROUP_SCHEMA], "displayName": "Research", "members": []}
        gid = entra.post("/Groups", json=group).raise_for_status().json()["id"]
        add = {"op": "Add", "path": "members", "value": [{"value": pushed}]}
        entra.patch(f"/Groups/{gid}", json={"schemas": [PATCH_SCHEMA], "Operations": [add]}).raise_for_status()
        uid = f"auth0|{pushed}"
        secs = _wait(
            lambda: "Employee" in auth0.user_role_names(uid) and crm.groups(pushed) == {"Research"}, started=started
        )
        _print_step(9, "Push: Ada Lovelace, member of Research", secs, f"auth0:hr account {uid[:18]}..., role Employee")
        _print_scim(crm, pushed)

        started = time.perf_counter()
        off = {"op": "Replace", "path": "active", "value": "False"}  # as Entra sends it
        entra.patch(f"/Users/{pushed}", json={"schemas": [PATCH_SCHEMA], "Operations": [off]}).raise_for_status()
        secs = _wait(
            lambda: (auth0.get_user(uid) or {}).get("blocked") is True and crm.user(pushed).get("active") is False,
            started=started,
        )
        _print_step(10, 'Push: Ada disabled ("active": "False")', secs, "auth0:hr account blocked")
        _print_scim(crm, pushed)
    host.wait_idle(STEP_TIMEOUT_S)


PLURAL = {"Opportunity": "opportunities", "Lead": "leads", "Case": "cases"}


class _Org:
    """What the demo reads from the Salesforce emulator's org (under its lock: it serves meanwhile)."""

    def __init__(self, emulator: SalesforceEmulator):
        self.emulator = emulator
        self.records = emulator.org.records

    def user(self, entra_id: str) -> dict[str, Any]:
        with self.emulator.lock:
            found = [u for u in self.records["User"].values() if u.get("FederationIdentifier") == entra_id]
            return dict(found[0]) if found else {}

    def name(self, sobject: str, record_id: str | None, field: str = "Name") -> str:
        with self.emulator.lock:
            return str((self.records[sobject].get(record_id or "") or {}).get(field, "-"))

    def permission_sets(self, user_id: str) -> set[str]:
        """The user's own permission sets (not its profile's), by API name."""
        with self.emulator.lock:
            sets = (
                self.records["PermissionSet"].get(a["PermissionSetId"], {})
                for a in self.records["PermissionSetAssignment"].values()
                if a["AssigneeId"] == user_id
            )
            return {str(ps["Name"]) for ps in sets if ps and not ps.get("IsOwnedByProfile")}  # fmt: skip

    def owned(self, owner_id: str) -> dict[str, int]:
        """Open records by type that ``owner_id`` owns."""
        done = {"Opportunity": "IsClosed", "Lead": "IsConverted", "Case": "IsClosed"}
        with self.emulator.lock:
            return {
                sobject: sum(1 for r in self.records[sobject].values() if r["OwnerId"] == owner_id and not r.get(flag))
                for sobject, flag in done.items()
            }

    def give(self, username: str, counts: dict[str, int]) -> None:
        """Open records of each type, owned by the user ``username`` (as a sales rep's work)."""
        with self.emulator.lock:
            seed_org(
                self.emulator.org, {"generate": [{"type": t, "count": n, "owner": username} for t, n in counts.items()]}
            )


def _salesforce_day(graph: Any, emulator: SalesforceEmulator, host: FunctionsHost, dump: dict[str, Any]) -> None:
    """Steps 11 and 12: a sales hire gets a Salesforce user with the profile, role and permission
    sets his groups give and his manager set; when he leaves he is deactivated, his permission sets
    come off, and his open opportunities, leads and cases go to his manager (the queue takes leads
    and cases of a leaver without one)."""
    org = _Org(emulator)
    staff, sales = dump["groups"][0]["id"], dump["groups"][1]["id"]
    boss = next(u for u in graph.snapshot(full=True)["dump"]["users"] if org.user(u["id"]).get("IsActive"))
    print("\nSalesforce (sales and support people; profile, role and permission sets from their groups)")
    started = time.perf_counter()
    hire = graph.create_user(
        displayName="Linus Pauling", givenName="Linus", surname="Pauling", mail="linus.pauling@sandbox.example",
        userPrincipalName="linus.pauling@sandbox.onmicrosoft.com", department="Sales", jobTitle="Account Executive",
        employeeId="E990002", accountEnabled=True,
    )  # fmt: skip
    graph.set_manager(hire["id"], boss["id"])
    graph.add_member(staff, hire["id"])
    graph.add_member(sales, hire["id"])
    manager_id = org.user(boss["id"])["Id"]

    def ready() -> bool:
        user = org.user(hire["id"])
        return bool(user) and user.get("ManagerId") == manager_id and org.permission_sets(user["Id"]) == {
            "Chatter_Access", "Sales_Cloud_User"}  # fmt: skip

    secs = _wait(ready, started=started)
    user = org.user(hire["id"])
    _print_step(
        11, "Hire: Linus Pauling joins Sales", secs,
        f"{user['Username']}, alias {user['Alias']}, profile {org.name('Profile', user['ProfileId'])}, role "
        f"{org.name('UserRole', user['UserRoleId'])}",
    )  # fmt: skip
    print(f"     permission sets {', '.join(sorted(org.permission_sets(user['Id'])))}; manager {boss['displayName']}")

    work = {"Opportunity": 3, "Lead": 2, "Case": 1}
    org.give(user["Username"], work)
    queue = next(g["Id"] for g in emulator.org.records["Group"].values() if g.get("Name") == "Unassigned")
    before_boss, before_queue = org.owned(manager_id), org.owned(queue)
    started = time.perf_counter()
    graph.update_user(hire["id"], accountEnabled=False)

    def gone() -> bool:
        return org.user(hire["id"]).get("IsActive") is False and not any(org.owned(user["Id"]).values())

    secs = _wait(gone, started=started)
    moved = {
        who: ", ".join(
            f"{now[t] - before[t]} {PLURAL[t] if now[t] - before[t] != 1 else t.lower()}"
            for t in work
            if now[t] > before[t]
        )
        or "nothing"
        for who, now, before in (
            ("his manager", org.owned(manager_id), before_boss),
            ("the queue", org.owned(queue), before_queue),
        )
    }  # fmt: skip
    _print_step(12, "Leaver: Linus Pauling is disabled", secs, f"deactivated; open records to his manager: "
                f"{moved['his manager']}; to the queue: {moved['the queue']}")  # fmt: skip
    print(f"     permission sets left: {', '.join(sorted(org.permission_sets(user['Id']))) or 'none'}; "
          "each reassignment is in the audit trail")  # fmt: skip
    host.wait_idle(STEP_TIMEOUT_S)


def _risky_sign_in(graph: Any, auth0: Any, receiver: WebhookReceiver, host: FunctionsHost, skip: list[Any]) -> None:
    """Step 7: Entra ID Protection flags a signed-in user; risk_monitor polls, the worker responds."""
    dump = graph.snapshot(full=True)["dump"]
    taken = {u["id"] for u in skip}
    user = next(
        u for u in dump["users"] if u["accountEnabled"] and u.get("userType") == "Member" and u["id"] not in taken
    )
    uid = f"auth0|{user['id']}"
    auth0.add_sessions(uid, 2, refresh_tokens=1)
    receiver.reset()
    raised_at = time.time()
    graph.raise_risk(user["id"], level="high", event_type="unfamiliarFeatures")
    started = time.perf_counter()
    host.run_timer("risk_monitor")
    _wait(
        lambda: (
            (auth0.get_user(uid) or {}).get("blocked") is True
            and auth0.sessions_of(uid) == {"sessions": 0, "refresh_tokens": 0}
            and len(receiver.messages()) >= 1
        )
    )
    secs = time.perf_counter() - started  # from the poll to blocked, revoked and told
    host.wait_idle(STEP_TIMEOUT_S)
    messages = receiver.messages()
    _print_step(
        7,
        f"Risky sign-in: high risk for {user['displayName'][:20]}",
        secs,
        f"blocked, 2 sessions and 1 refresh token revoked, {len(messages)} message",
    )
    for message in messages:
        print(f"     Slack ({message.hook}, Block Kit) received {(message.at - raised_at) * 1000:.0f} ms after the "
              "detection:")  # fmt: skip
        for line in _slack_lines(message.body):
            print(f"       | {line}")
    for mail in graph.outbox.listed():
        print(f"     Email from {mail['mailbox']} to {', '.join(mail['to'])}: {mail['subject']}")


def _slack_lines(body: dict[str, Any]) -> list[str]:
    """What a person sees of a Block Kit message: the header, the fields, the text."""
    lines: list[str] = []
    for block in body.get("blocks") or []:
        if block.get("type") in ("header", "section") and isinstance(block.get("text"), dict):
            lines += str(block["text"]["text"]).splitlines()
        lines += [" | ".join(str(f["text"]).replace("*", "").splitlines()) for f in block.get("fields") or []]
    return lines or str(body.get("text", "")).splitlines()


def _event_feed(host: FunctionsHost, svc: Any, sink: EventSink, since: str) -> None:
    """Step 13: the day's effective changes as the event feed's CloudEvents, posted signed to its
    endpoint. The alerts_outbox timer publishes each about a minute after it happened (rows settle
    for LAG_S first); a day this short is replayed from the audit trail, as ``entra-sync events
    --post`` does, with the ids the timer gives them."""

    started = time.perf_counter()
    posted = host.run_coroutine(post_again(svc.audit, svc.events.sink, since), timeout_s=120)
    secs = time.perf_counter() - started
    got = sink.unique()
    kinds = Counter(str(e["type"]).removeprefix("com.entra-sync.") for e in got.values())
    _print_step(13, "Event feed: the day as CloudEvents", secs, f"{posted} posted, signed; the endpoint holds "
                f"{len(got)} ids: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common(3)))  # fmt: skip
    print(f"     (the alerts_outbox timer posts each change {LAG_S:.0f} s to a minute after it happened)")
