"""``entra-sync doctor``: a deployment checked from outside, each missing piece named with its fix.

What it looks at, with the operator's own sign-in (:mod:`shared.credentials`) and the settings the
CLI reads (README, "Operate from a laptop"):

* storage: every queue and table the app uses answers (a 403 is the operator's missing data role,
  a 404 an app that never started);
* Microsoft Graph: the application permissions granted to the app's managed identity
  (``AZURE_MANAGED_IDENTITY_PRINCIPAL_ID``, an azd output), against what the mapping needs;
* Auth0: the scopes the machine-to-machine application's token carries (the token response's
  ``scope``, else the JWT's ``scope`` or ``permissions``), against what the mapping's policy uses;
* each target asked live as ``entra-sync check`` asks it (a SCIM application's token lists a user);
* the Graph subscriptions subscriptions_renew recorded: one per resource, not within 48 h of expiry.

A finding is trusted for what was asked now; nothing is changed anywhere.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

from shared import names
from shared.core.ports import ChecksLive
from shared.core.work import DEFAULT_SOURCE
from shared.errors import SyncError
from shared.mapping.deploy import sends_mail
from shared.settings import Auth0Auth, is_loopback_url

# Microsoft Graph's application permissions (app role ids are the same in every tenant).
GRAPH_APP_ROLES: Final = {
    "User.Read.All": "df021288-bdef-4463-88db-98f22de89214",
    "Group.Read.All": "5b567255-7703-4780-807c-7be8301ae99b",
    "IdentityRiskyUser.Read.All": "dc5007c0-2d7d-4c42-879c-2dab87571379",
    "IdentityRiskEvent.Read.All": "6e472fd1-ad78-48da-a0f0-97ab2c6b769e",
    "Mail.Send": "b633e1c5-b582-4048-a93e-9f11b44c7e96",
}
# The Auth0 Management API scopes every Auth0 target uses (README, "Deploy to Azure", step 1).
AUTH0_SCOPES: Final = (
    "read:users",
    "create:users",
    "update:users",
    "read:roles",
    "create:role_members",
    "delete:role_members",
)
SUBSCRIPTION_MARGIN_S: Final = 48 * 3600
PRINCIPAL_SETTING: Final = "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID"
GRANT_FIX: Final = "an administrator runs: bash infra/scripts/grant-graph-permissions.sh --principal-id {principal}"
RENEW_FIX: Final = "run subscriptions_renew now: azd hooks run postdeploy (then entra-sync status shows them)"


@dataclass(frozen=True)
class Finding:
    check: str
    state: str  # "ok", "missing" (something to fix), "unknown" (could not be asked) or "skipped"
    detail: str
    fix: str = ""


def _ok(check: str, detail: str) -> Finding:
    return Finding(check, "ok", detail)


def _missing(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, "missing", detail, fix)


async def diagnose(app: Any, graph: Any, now: float) -> list[Finding]:
    """Every check, in the order an operator fixes things (storage first, subscriptions last)."""
    findings = [*await storage_findings(app)]
    if DEFAULT_SOURCE in app.mapping.sources:
        findings.append(await graph_permissions(app, graph))
    if any(job.section.kind == "auth0" for job in app.jobs.values()):
        findings.append(await auth0_scopes(app))
    findings += await live_findings(app)
    if DEFAULT_SOURCE in app.mapping.sources:
        findings += await subscription_findings(app, now)
    return findings


async def storage_findings(app: Any) -> list[Finding]:
    found: list[Finding] = []
    checks: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        *((f"queue {q}", app.queues.get_queue_client(q).get_queue_properties) for q in names.QUEUES),
        *((f"table {t}", _first_entity(app.tables.get_table_client(t))) for t in names.TABLES),
    ]
    reached: list[str] = []
    for what, ask in checks:
        try:
            await ask()
            reached.append(what.split(" ", 1)[1])
        except ResourceNotFoundError:
            found.append(
                _missing(
                    "storage",
                    f"{what} does not exist",
                    "the app creates it when it starts: deploy it (azd deploy) and open its health endpoint",
                )
            )
        except HttpResponseError as exc:
            if exc.status_code == 403:
                kind = "Queue" if what.startswith("queue") else "Table"
                found.append(
                    _missing(
                        "storage",
                        f"{what}: your sign-in may not read it (403)",
                        f"join the operators' group given as ENTRA_SYNC_OPERATOR_GROUP_ID (Storage {kind} "
                        "Data Contributor on the account), or set it: azd env set "
                        "ENTRA_SYNC_OPERATOR_GROUP_ID <group object id> && azd provision",
                    )
                )
            else:
                found.append(Finding("storage", "unknown", f"{what}: {str(exc).splitlines()[0]}"))
        except AzureError as exc:
            found.append(Finding("storage", "unknown", f"{what}: cannot reach it ({type(exc).__name__})"))
    if reached:
        found.insert(0, _ok("storage", f"{len(reached)} of {len(checks)} queues and tables answer"))
    return found


def _first_entity(table: Any) -> Callable[[], Awaitable[Any]]:
    async def ask() -> None:
        async for _ in table.list_entities(results_per_page=1):
            break

    return ask


def needed_graph_permissions(app: Any) -> list[str]:
    wanted = ["User.Read.All", "Group.Read.All"]
    if app.mapping.risk.rules:
        wanted += ["IdentityRiskyUser.Read.All", "IdentityRiskEvent.Read.All"]
    if sends_mail(app.mapping):
        wanted.append("Mail.Send")  # grant-graph-permissions --mail-send; one mailbox by access policy
    return wanted


async def graph_permissions(app: Any, graph: Any) -> Finding:
    check = "graph permissions"
    principal = app.settings.env.get(PRINCIPAL_SETTING, "").strip()
    if not principal:
        return Finding(
            check,
            "unknown",
            f"{PRINCIPAL_SETTING} is not set, so the managed identity is not known",
            "load the azd environment (README, 'Operate from a laptop'): it holds it as an output",
        )
    try:
        answer = await graph.service_principals.by_service_principal_id(principal).app_role_assignments.get()
    except Exception as exc:
        return Finding(
            check,
            "unknown",
            f"could not read the identity's permissions: {str(exc).splitlines()[0][:200]}",
            "your sign-in needs to read service principals (Directory Readers, or an admin runs doctor)",
        )
    held = {str(a.app_role_id).lower() for a in (answer.value or []) if a.app_role_id is not None}
    lacking = [n for n in needed_graph_permissions(app) if GRAPH_APP_ROLES[n] not in held]
    if lacking:
        return _missing(
            check, f"the managed identity lacks {', '.join(lacking)}", GRANT_FIX.format(principal=principal)
        )
    return _ok(check, f"the managed identity holds {', '.join(needed_graph_permissions(app))}")


def needed_auth0_scopes(app: Any) -> list[str]:
    sections = [job.section for job in app.jobs.values() if job.section.kind == "auth0"]
    wanted = list(AUTH0_SCOPES)
    if any("delete" in (s.deprovision.action, s.deprovision.hard_delete) for s in sections):
        wanted.append("delete:users")
    return wanted


def token_scopes(answer: dict[str, Any]) -> set[str]:
    """The scopes of a client-credentials answer: its ``scope``, else the access token's claims."""
    if isinstance(answer.get("scope"), str):
        return set(answer["scope"].split())
    parts = str(answer.get("access_token", "")).split(".")
    if len(parts) != 3:
        return set()
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return set()
    if isinstance(claims.get("scope"), str):
        return set(claims["scope"].split())
    return {str(p) for p in claims.get("permissions") or ()}


async def auth0_scopes(app: Any) -> Finding:
    check = "auth0 scopes"
    auth0 = app.settings.auth0
    if auth0 is None or auth0.auth is not Auth0Auth.CLIENT_CREDENTIALS or auth0.client_secret is None:
        return Finding(check, "skipped", "a static token (the sandbox's): its scopes are not read")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(auth0.base_url))
    token_url = f"{origin}/oauth/token" if is_loopback_url(auth0.base_url) else f"https://{auth0.domain}/oauth/token"
    body = {
        "grant_type": "client_credentials",
        "client_id": auth0.client_id,
        "client_secret": auth0.client_secret.reveal(),
        "audience": f"{auth0.base_url}/",
    }
    try:
        async with httpx.AsyncClient(timeout=15.0) as http:
            response = await http.post(token_url, json=body)
    except httpx.HTTPError as exc:
        return Finding(check, "unknown", f"cannot reach {token_url}: {type(exc).__name__}")
    if response.status_code in (401, 403):
        return _missing(
            check,
            f"Auth0 refused the machine-to-machine application's credentials ({response.status_code})",
            "set the application's id and secret: azd env set AUTH0_CLIENT_ID ... / AUTH0_CLIENT_SECRET ... "
            "&& azd provision",
        )
    if response.status_code != 200:
        return Finding(check, "unknown", f"the token endpoint answered {response.status_code}")
    granted = token_scopes(response.json())
    lacking = [s for s in needed_auth0_scopes(app) if s not in granted]
    if lacking:
        return _missing(
            check,
            f"the token lacks {', '.join(lacking)}",
            "in the Auth0 dashboard: Applications > APIs > Auth0 Management API > Machine to Machine "
            "Applications, grant them to the application",
        )
    return _ok(check, f"the token carries the {len(needed_auth0_scopes(app))} scopes the mapping needs")


async def live_findings(app: Any) -> list[Finding]:
    """Each target asked as ``entra-sync check`` asks it (a SCIM application: its token lists a user)."""
    found: list[Finding] = []
    for name, job in app.jobs.items():
        if not isinstance(job.target, ChecksLive):
            continue
        try:
            ran, problems = await job.target.live_check()
        except SyncError as exc:
            setting = getattr(job.section.options, "token_setting", None)
            fix = (
                f"set the application's token: azd env set {setting} <token> && azd provision"
                if setting
                else "check the target's settings (entra-sync check)"
            )
            found.append(_missing(name, f"the target refused or could not be asked: {exc}", fix))
            continue
        if problems:
            found += [
                _missing(name, problem, "fix the mapping or the target (entra-sync check)") for problem in problems
            ]
        else:
            found.append(_ok(name, "; ".join(ran)))
    return found


async def subscription_findings(app: Any, now: float) -> list[Finding]:
    recorded = await app.state.list("subscription")
    found: list[Finding] = []
    for resource in ("users", "groups"):
        sub = recorded.get(resource)
        check = f"subscription {resource}"
        if sub is None:
            found.append(_missing(check, "none recorded", RENEW_FIX))
            continue
        try:
            expires = datetime.fromisoformat(str(sub.get("expirationDateTime", "")).replace("Z", "+00:00")).timestamp()
        except ValueError:
            found.append(_missing(check, "its expiry is unreadable", RENEW_FIX))
            continue
        left_h = (expires - now) / 3600
        if expires - now < SUBSCRIPTION_MARGIN_S:
            what = "has expired" if left_h <= 0 else f"expires in {left_h:.0f} h"
            found.append(
                _missing(
                    check,
                    f"{what}: subscriptions_renew is not renewing it",
                    "check its last run (entra-sync status) and the Graph permissions; " + RENEW_FIX,
                )
            )
        else:
            found.append(_ok(check, f"live for {left_h / 24:.1f} more days"))
    return found


def exit_code(findings: list[Finding]) -> int:
    """2 when something is missing, 1 when something could not be asked, else 0."""
    states = {f.state for f in findings}
    return 2 if "missing" in states else 1 if "unknown" in states else 0
