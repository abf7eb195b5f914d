"""Settings: read once from the environment into a typed, validated, immutable object.

Every problem is reported at start-up with the name of the setting, all problems at once, so an
operator fixes a deployment in one round. Secrets are wrapped in :class:`Secret` so that they never
show in a ``repr``, a log line or an audit row. In Azure, secrets arrive as Key Vault references
that the platform resolves; a value that still reads ``@Microsoft.KeyVault(...)`` means the
resolution failed, and the app must fail closed instead of using the reference text as a secret.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from shared import redact

DEFAULT_GRAPH_BASE_URL: Final = "https://graph.microsoft.com/v1.0"
GRAPH_CLIENT_STATE_MAX: Final = 128  # Graph's limit for clientState
GRAPH_CLIENT_STATE_MIN: Final = 16  # ours: the client state is a shared secret, so not guessable
RISK_ALERT_SECRET_MIN: Final = 32  # the push endpoint's shared secret: long enough not to be guessed
RISK_ALERT_SECRET_MAX: Final = 256

# The app setting that holds a SCIM target's bearer token, as the mapping names it.
SCIM_TOKEN_SETTING: Final = re.compile(r"SCIM_[A-Z0-9_]{1,60}_TOKEN")
SCHEDULE_SETTINGS: Final = ("DELTA_SCHEDULE", "RECONCILE_SCHEDULE", "RISK_SCHEDULE", "SUBSCRIPTIONS_SCHEDULE")

_KEY_VAULT_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\(", re.IGNORECASE)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$"
)
# One NCRONTAB field: numbers, *, ranges, steps, lists, and (for month and weekday) names.
_CRON_FIELD = re.compile(
    r"^(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*$"
)


class SettingsError(ValueError):
    """One or more settings are missing or malformed; the message names each of them."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"entra-sync cannot start: {len(problems)} setting problem(s):\n{lines}")


def require(problems: Iterable[str | None]) -> None:
    """Raise :class:`SettingsError` naming every problem at once (a None is no problem): what a
    registry of kinds asks each kind the mapping uses about the settings."""
    found = [problem for problem in problems if problem]
    if found:
        raise SettingsError(found)


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        redact.register(value)  # whoever logs or audits it later, the value shows as ***

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class GraphAuth(Enum):
    STATIC_TOKEN = "static_token"  # noqa: S105 - a mode name, not a secret; sandbox only
    CLIENT_SECRET = "client_secret"  # noqa: S105 - a mode name
    MANAGED_IDENTITY = "managed_identity"


class Auth0Auth(Enum):
    STATIC_TOKEN = "static_token"  # noqa: S105 - a mode name, not a secret; sandbox only
    CLIENT_CREDENTIALS = "client_credentials"


@dataclass(frozen=True)
class StorageSettings:
    """Either a connection string (Azurite, or a key-based account) or identity-based endpoints."""

    connection_string: Secret | None = None
    table_service_uri: str | None = None
    queue_service_uri: str | None = None
    blob_service_uri: str | None = None
    client_id: str | None = None  # user-assigned managed identity for identity-based access


AUTH0_SETTINGS: Final = (
    "AUTH0_DOMAIN", "AUTH0_BASE_URL", "AUTH0_CLIENT_ID", "AUTH0_CLIENT_SECRET", "AUTH0_TOKEN",
)  # fmt: skip


@dataclass(frozen=True)
class Auth0Settings:
    """The Auth0 Management API: a machine-to-machine application, or the sandbox's static token."""

    base_url: str
    domain: str | None
    auth: Auth0Auth
    client_id: str | None
    client_secret: Secret | None
    token: Secret | None


@dataclass(frozen=True)
class Settings:
    graph_base_url: str
    graph_auth: GraphAuth
    tenant_id: str | None
    client_id: str | None
    client_secret: Secret | None
    graph_token: Secret | None
    # The entra source's (optional until the mapping names it: its kind checks them, like Auth0's).
    graph_client_state: Secret | None
    graph_notification_url: str | None
    graph_lifecycle_url: str | None
    auth0: Auth0Settings | None  # present where AUTH0_* is set; required by a mapping with an auth0 target
    storage: StorageSettings
    schedules: Mapping[str, str]
    mapping_file: Path
    notify_webhook_url: Secret | None = None  # incoming-webhook URLs embed their own secret
    risk_alert_secret: Secret | None = None  # shared secret of the risk_alert push endpoint; None refuses all
    # Bearer tokens of SCIM applications, by setting name (SCIM_<NAME>_TOKEN): the mapping's SCIM
    # sections name theirs (a Key Vault reference in Azure), so the SCIM kind reads them once the
    # mapping is known, from the environment these settings came from.
    scim_tokens: dict[str, Secret] = field(default_factory=dict)
    # Secrets the mapping's alerts: section names by setting (ALERTS_*, EVENTS_*), read likewise.
    named_secrets: dict[str, Secret] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return _Reader(os.environ if env is None else env).read()

    def scim_token(self, setting: str, target: str) -> Secret:
        """The bearer token in ``setting`` (read now if :meth:`scim_token_problem` has not yet)."""
        problem = self.scim_token_problem(setting, target)
        if problem is not None:
            raise SettingsError([problem])
        return self.scim_tokens[setting]

    def scim_token_problem(self, setting: str, target: str) -> str | None:
        """Read the token ``setting`` into :attr:`scim_tokens`; why not, when it cannot be."""
        if setting in self.scim_tokens:
            return None
        if not SCIM_TOKEN_SETTING.fullmatch(setting):
            return f"the target {target} names {setting!r} for its token, which is not SCIM_<NAME>_TOKEN"
        reader = _Reader(self.env)  # the same reading as every other setting: blank, unresolved reference
        value = reader.required(setting, f"the mapping's target {target} names it for its bearer token")
        if value is None:
            return reader.problems[0]
        if not value.isascii() or not value.isprintable() or " " in value:
            return f"{setting} must be printable ASCII without spaces (it travels in an HTTP header)"
        self.scim_tokens[setting] = Secret(value)
        return None

    def named_secret_problem(self, setting: str, why: str, *, url: bool = False) -> str | None:
        """Read the secret ``setting`` the mapping names into :attr:`named_secrets` (``url``: it must
        be an https URL, plain http only on loopback); why not, when it cannot be."""
        if setting in self.named_secrets:
            return None
        reader = _Reader(self.env)  # the same reading as every other setting: blank, unresolved reference
        value = reader.required(setting, why)
        if value is not None and url:
            value = reader.url(setting, value)
        if value is None:
            return reader.problems[0]
        self.named_secrets[setting] = Secret(value)
        return None


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _valid_cron(expr: str) -> bool:
    fields = expr.split()
    # NCRONTAB as Azure Functions reads it: six fields, seconds first.
    return len(fields) == 6 and all(_CRON_FIELD.fullmatch(f) for f in fields)


class _Reader:
    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    # -- primitives ------------------------------------------------------------------------------

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        if _KEY_VAULT_REFERENCE.match(value):
            self.problems.append(
                f"{name} is an unresolved Key Vault reference: the Function App could not read the secret "
                "(check the managed identity's 'Key Vault Secrets User' role and the secret URI)"
            )
            return None
        return value.strip()

    def required(self, name: str, why: str = "") -> str | None:
        value = self.raw(name)
        if value is None and not self._already_reported(name):
            self.problems.append(f"{name} is required{': ' + why if why else ''}")
        return value

    def _already_reported(self, name: str) -> bool:
        return any(p.startswith(name + " ") for p in self.problems)

    def url(self, name: str, value: str | None, *, allow_plain_http_loopback: bool = True) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            self.problems.append(f"{name} must be an absolute https URL, got {_shown(name, value)}")
            return None
        if parts.scheme == "http" and not (allow_plain_http_loopback and is_loopback_url(value)):
            self.problems.append(
                f"{name} must use https (plain http is allowed only for loopback), got {_shown(name, value)}"
            )
            return None
        return value.rstrip("/")

    def guid(self, name: str, value: str | None) -> str | None:
        if value is not None and not _GUID.fullmatch(value):
            self.problems.append(f"{name} must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), got {value!r}")
            return None
        return value

    # -- groups ------------------------------------------------------------------------------------

    def read(self) -> Settings:
        graph_base_url = self.url("GRAPH_BASE_URL", self.raw("GRAPH_BASE_URL") or DEFAULT_GRAPH_BASE_URL)
        graph_auth, tenant_id, client_id, client_secret, graph_token = self.graph_credentials(graph_base_url)
        client_state = self.client_state()
        notification_url = self.url("GRAPH_NOTIFICATION_URL", self.raw("GRAPH_NOTIFICATION_URL"))
        lifecycle_url = self.url("GRAPH_LIFECYCLE_URL", self.raw("GRAPH_LIFECYCLE_URL"))
        auth0 = self.auth0()
        storage = self.storage()
        schedules = self.schedules()
        mapping_file = self.mapping_file()
        notify = self.url("NOTIFY_WEBHOOK_URL", self.raw("NOTIFY_WEBHOOK_URL"))
        risk_alert_secret = self.risk_alert_secret()
        if self.problems:
            raise SettingsError(self.problems)
        # With no problems reported every part was read; the asserts only tell the type checker.
        assert graph_base_url is not None
        assert storage is not None
        assert mapping_file is not None
        return Settings(
            graph_base_url=graph_base_url,
            graph_auth=graph_auth,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            graph_token=graph_token,
            graph_client_state=client_state,
            graph_notification_url=notification_url,
            graph_lifecycle_url=lifecycle_url,
            auth0=auth0,
            storage=storage,
            schedules=schedules,
            mapping_file=mapping_file,
            notify_webhook_url=Secret(notify) if notify else None,
            risk_alert_secret=risk_alert_secret,
            env=self.env,
        )

    def graph_credentials(
        self, graph_base_url: str | None
    ) -> tuple[GraphAuth, str | None, str | None, Secret | None, Secret | None]:
        tenant_id = self.guid("AZURE_TENANT_ID", self.raw("AZURE_TENANT_ID"))
        client_id = self.guid("AZURE_CLIENT_ID", self.raw("AZURE_CLIENT_ID"))
        secret = self.raw("AZURE_CLIENT_SECRET")
        token = self.raw("GRAPH_TOKEN")
        if token is not None:
            if graph_base_url is not None and not is_loopback_url(graph_base_url):
                self.problems.append(
                    "GRAPH_TOKEN is for the sandbox only and needs a loopback GRAPH_BASE_URL; "
                    "use AZURE_CLIENT_ID/AZURE_CLIENT_SECRET or a managed identity for a real tenant"
                )
            return GraphAuth.STATIC_TOKEN, tenant_id, client_id, None, Secret(token)
        if secret is not None:
            self.required("AZURE_TENANT_ID", "a client secret needs the tenant it belongs to")
            self.required("AZURE_CLIENT_ID", "a client secret needs the app registration's client id")
            return GraphAuth.CLIENT_SECRET, tenant_id, client_id, Secret(secret), None
        # Managed identity: AZURE_CLIENT_ID names the user-assigned identity; without it the
        # system-assigned identity is used.
        return GraphAuth.MANAGED_IDENTITY, tenant_id, client_id, None, None

    def client_state(self) -> Secret | None:
        value = self.raw("GRAPH_CLIENT_STATE")
        if value is None:
            return None
        if not GRAPH_CLIENT_STATE_MIN <= len(value) <= GRAPH_CLIENT_STATE_MAX:
            self.problems.append(
                f"GRAPH_CLIENT_STATE must be {GRAPH_CLIENT_STATE_MIN} to {GRAPH_CLIENT_STATE_MAX} characters "
                f"(Graph's limit is {GRAPH_CLIENT_STATE_MAX}), got {len(value)}"
            )
            return None
        return Secret(value)

    def risk_alert_secret(self) -> Secret | None:
        """Optional: without it the risk_alert endpoint refuses every call (fail closed)."""
        value = self.raw("RISK_ALERT_SECRET")
        if value is None:
            return None
        if not RISK_ALERT_SECRET_MIN <= len(value) <= RISK_ALERT_SECRET_MAX:
            self.problems.append(
                f"RISK_ALERT_SECRET must be {RISK_ALERT_SECRET_MIN} to {RISK_ALERT_SECRET_MAX} characters "
                f"(e.g. `openssl rand -hex 32`), got {len(value)}"
            )
            return None
        if not value.isascii() or not value.isprintable():
            self.problems.append("RISK_ALERT_SECRET must be printable ASCII (it travels in an HTTP header)")
            return None
        return Secret(value)

    def auth0(self) -> Auth0Settings | None:
        """Optional: a deployment may sync only to other targets; a mapping with an Auth0 target
        then needs it (the Auth0 kind says so, through ``shared.targets.registry.check_settings``)."""
        domain = self.raw("AUTH0_DOMAIN")
        base_url_raw = self.raw("AUTH0_BASE_URL")
        named = any(self.env.get(n) for n in AUTH0_SETTINGS)
        if domain is not None and not _HOSTNAME.fullmatch(domain):
            self.problems.append(
                f"AUTH0_DOMAIN must be a host name such as tenant.eu.auth0.com (no scheme, no path), got {domain!r}"
            )
            return None
        if base_url_raw is None and domain is None:
            if named and not self._already_reported("AUTH0_DOMAIN"):
                self.problems.append(
                    "AUTH0_DOMAIN is required (or AUTH0_BASE_URL for the sandbox) with the other AUTH0_ settings"
                )
            return None
        base_url = self.url("AUTH0_BASE_URL", base_url_raw) if base_url_raw else f"https://{domain}/api/v2"
        if base_url is None:
            return None
        token = self.raw("AUTH0_TOKEN")
        if token is not None:
            if not is_loopback_url(base_url):
                self.problems.append(
                    "AUTH0_TOKEN is for the sandbox only and needs a loopback AUTH0_BASE_URL; "
                    "use AUTH0_CLIENT_ID/AUTH0_CLIENT_SECRET for a real tenant"
                )
            return Auth0Settings(base_url, domain, Auth0Auth.STATIC_TOKEN, None, None, Secret(token))
        client_id = self.required("AUTH0_CLIENT_ID", "the machine-to-machine application's client id")
        secret = self.required("AUTH0_CLIENT_SECRET", "the machine-to-machine application's client secret")
        return Auth0Settings(
            base_url, domain, Auth0Auth.CLIENT_CREDENTIALS, client_id, Secret(secret) if secret else None, None
        )

    def storage(self) -> StorageSettings | None:
        conn = self.raw("AzureWebJobsStorage")
        if conn is not None:
            if not _valid_connection_string(conn):
                self.problems.append(
                    "AzureWebJobsStorage must be a storage connection string (UseDevelopmentStorage=true, "
                    "or AccountName=...;AccountKey=... / endpoints), got a value that is not one"
                )
                return None
            return StorageSettings(connection_string=Secret(conn))
        # Identity-based connection, as the Bicep deploys it (shared keys disabled).
        account = self.raw("AzureWebJobsStorage__accountName")
        table_uri = self.raw("AzureWebJobsStorage__tableServiceUri")
        queue_uri = self.raw("AzureWebJobsStorage__queueServiceUri")
        blob_uri = self.raw("AzureWebJobsStorage__blobServiceUri")
        if account is not None:
            table_uri = table_uri or f"https://{account}.table.core.windows.net"
            queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
            blob_uri = blob_uri or f"https://{account}.blob.core.windows.net"
        if table_uri is None or queue_uri is None:
            self.problems.append(
                "AzureWebJobsStorage is required: a connection string, or identity-based "
                "AzureWebJobsStorage__accountName (or __tableServiceUri and __queueServiceUri)"
            )
            return None
        table_uri = self.url("AzureWebJobsStorage__tableServiceUri", table_uri)
        queue_uri = self.url("AzureWebJobsStorage__queueServiceUri", queue_uri)
        blob_uri = self.url("AzureWebJobsStorage__blobServiceUri", blob_uri) if blob_uri else None
        client_id = self.guid("AzureWebJobsStorage__clientId", self.raw("AzureWebJobsStorage__clientId"))
        if table_uri is None or queue_uri is None:
            return None
        return StorageSettings(
            table_service_uri=table_uri, queue_service_uri=queue_uri, blob_service_uri=blob_uri, client_id=client_id
        )

    def schedules(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for name in SCHEDULE_SETTINGS:
            value = self.required(name, "an NCRONTAB expression such as '0 */5 * * * *'")
            if value is None:
                continue
            if not _valid_cron(value):
                self.problems.append(
                    f"{name} must be a six-field NCRONTAB expression (second minute hour day month weekday), "
                    f"got {value!r}"
                )
                continue
            result[name] = value
        return result

    def mapping_file(self) -> Path | None:
        value = self.required("SYNC_MAPPING_FILE", "the mapping file (attributes, roles, scope, policy)")
        if value is None:
            return None
        path = Path(value)
        if not path.is_absolute():
            # Relative paths are taken from the app root, where function_app.py lives.
            path = Path(__file__).resolve().parent.parent / path
        if not path.is_file():
            self.problems.append(f"SYNC_MAPPING_FILE points to {str(path)!r}, which is not a readable file")
            return None
        return path


def _valid_connection_string(value: str) -> bool:
    if value.strip().lower().replace(" ", "") in {"usedevelopmentstorage=true", "usedevelopmentstorage=true;"}:
        return True
    pairs = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep:
            return False
        pairs[key.strip().lower()] = val
    has_account = "accountname" in pairs and ("accountkey" in pairs or "sharedaccesssignature" in pairs)
    has_endpoint = any(k.endswith("endpoint") for k in pairs)
    return has_account or (has_endpoint and "sharedaccesssignature" in pairs)


def _shown(name: str, value: str) -> str:
    """A value fit for an error message: secrets are never echoed."""
    return (
        "(hidden)"
        if any(s in name for s in ("SECRET", "TOKEN", "STATE", "Storage", "WEBHOOK", "ALERTS_", "EVENTS_"))
        else repr(value)
    )
