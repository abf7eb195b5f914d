"""Auth0's rules, pure: what the planner, the matching ladder and reconciliation need to know about
Auth0 accounts and nothing about HTTP.

* Paths: the root attributes the Management API lets a database-connection user have written, and
  ``user_metadata.<key>`` / ``app_metadata.<key>`` (one level deep: Auth0 merges metadata one level
  deep). A metadata key mapped to nothing is removed; a root attribute mapped to nothing is left.
* Values: Auth0 stores database-connection emails in lower case, so emails compare without case;
  email and username are unique per connection (a 409 on an update that changes one is a
  collision with another account).
* Creates: in the mapping's connection, with ``user_id`` = the Entra object id when
  ``deterministic_user_id`` (two racing joiners cannot make two accounts), not blocked, with the
  Entra object id stamped in ``app_metadata.<app_metadata_key>``; Auth0 needs an email.
* Deprovisioning: a block (``blocked: true``), and sessions and refresh tokens revoked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.core.model import Account, ActionKind, Identity, SourceState
from shared.core.ports import Capabilities
from shared.mapping.model import TargetSection, read_path
from shared.targets.auth0.baseline import Baseline
from shared.targets.auth0.policy import ORGANIZATIONS, PENDING, SENT, WELCOME_KEY, Policy

ROOT_PATHS: Final = frozenset(
    {"email", "email_verified", "name", "given_name", "family_name", "nickname", "picture", "username"}
)
METADATA: Final = ("user_metadata", "app_metadata")
CASELESS: Final = frozenset({"email"})
UNIQUE: Final = frozenset({"email", "username"})
LABELS: Final = {
    ActionKind.DISABLE: "block",
    ActionKind.ENABLE: "unblock",
    ActionKind.GRANT: "assign_roles",
    ActionKind.UNGRANT: "remove_roles",
}
NO_EMAIL: Final = "joiner has no email after mapping; Auth0 needs one"
WELCOME_PATH: Final = f"app_metadata.{WELCOME_KEY}"
# Revocations are Enterprise-plan features; elsewhere Auth0 answers 403/404 and the account is
# still blocked (the worker says so). Entitlements are roles.
CAPABILITIES: Final = Capabilities(revoke_sessions=True, revoke_refresh_tokens=True, delete=True, entitlements="roles")


@dataclass(frozen=True)
class Auth0Options:
    connection: str = "Username-Password-Authentication"
    # Create database users with user_id = the Entra object id: a deterministic key, so two workers
    # racing on one joiner cannot make two accounts (the second create gets 409).
    deterministic_user_id: bool = True
    app_metadata_key: str = "entra_object_id"  # app_metadata.<key> holds the Entra object id
    enterprise_connection: str | None = None  # e.g. "entra" (strategy waad): identities of "waad|<oid>"
    policy: Policy = field(default_factory=Policy)  # connection, organizations, flags and welcome by group
    baseline: Baseline | None = None  # the tenant's policy the section declares (nightly compared)
    welcome_mailbox: str | None = None  # sends password-change tickets to joiners (Graph sendMail)

    @property
    def owner_path(self) -> str:
        return f"app_metadata.{self.app_metadata_key}"

    # NamesGroups: the policy's groups matter to the target as its grants' do
    @property
    def group_entries(self) -> tuple[tuple[str, str], ...]:
        return self.policy.entries

    @property
    def condition_paths(self) -> tuple[str, ...]:
        return ()

    def connection_for(self, identity: Identity) -> str:
        return self.policy.connection_for(identity.groups, self.connection)

    def signs_in_by_sso(self, connection: str) -> bool:
        """Members of the enterprise connection sign in through Entra: no database account is made
        for them; the account Auth0 makes at their first sign-in is linked (enterprise_identity)."""
        return connection == self.enterprise_connection

    def welcomes(self, connection: str) -> bool:
        return not self.signs_in_by_sso(connection) and self.policy.welcome_for(connection).send != "none"


def nest(paths: Mapping[str, Any]) -> dict[str, Any]:
    """``{"user_metadata.a": 1, "email": "x"}`` -> ``{"user_metadata": {"a": 1}, "email": "x"}``."""
    body: dict[str, Any] = {}
    for path, value in paths.items():
        head, _, rest = path.partition(".")
        if rest:
            body.setdefault(head, {})[rest] = value
        else:
            body[head] = value
    return body


class Auth0Rules:
    def __init__(self, section: TargetSection):
        self.section = section
        self.options: Auth0Options = section.options or Auth0Options()

    def desired(self, identity: Identity) -> dict[str, Any]:
        """Mapped attributes, plus the Entra object id under the matching key (always kept, so the
        account can be found again even if the link is lost)."""
        values = {**identity.attributes, "id": identity.id}
        profile = {a.target: a.value_from(values) for a in self.section.attributes}
        profile[self.options.owner_path] = identity.id
        policy = self.options.policy
        for flag, value in policy.flags_for(identity.groups).items():
            profile[f"app_metadata.{flag}"] = value
        if policy.organizations:
            profile[ORGANIZATIONS] = policy.organizations_for(identity.groups)
        if self.options.welcomes(self.options.connection_for(identity)):
            profile[WELCOME_PATH] = SENT  # a create writes "pending" until the welcome went out
        return profile

    def current(self, account: Account, path: str) -> Any:
        return read_path(account.data, path)

    def same(self, path: str, want: Any, have: Any) -> bool:
        if path == WELCOME_PATH:
            return bool(have != PENDING)  # only a joiner whose welcome is pending is welcomed: never an old account
        if path == ORGANIZATIONS:
            return (want or {}) == (have or {})
        if path in CASELESS and isinstance(want, str) and isinstance(have, str):
            return want.casefold() == have.casefold()
        return bool(want == have)

    def removes_unmapped(self, path: str) -> bool:
        return path.split(".", 1)[0] in METADATA  # Auth0 has no "unset" for most root attributes

    def unique(self, path: str) -> bool:
        return path in UNIQUE

    def create_payload(self, identity: Identity, desired: Mapping[str, Any]) -> dict[str, Any] | str:
        connection = self.options.connection_for(identity)
        if self.options.signs_in_by_sso(connection):
            return (
                f"signs in through the enterprise connection {connection}: no database account is made; "
                "the account Auth0 makes at the first sign-in is linked then"
            )
        if not desired.get("email"):
            return NO_EMAIL
        body = nest({k: v for k, v in desired.items() if v is not None and k != WELCOME_PATH})
        if WELCOME_PATH in desired:
            body.setdefault("app_metadata", {})[WELCOME_KEY] = PENDING
        body["connection"] = connection
        body["blocked"] = False
        if self.options.deterministic_user_id:
            body["user_id"] = identity.id
        return body

    def update_payload(self, changes: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
        patch = nest(changes)  # organizations and the welcome ride along: the adapter takes them out
        if "email" in changes and desired.get("email_verified") is not None:
            patch["email_verified"] = desired["email_verified"]  # Auth0 clears it on an email change
        return patch

    def deterministic_id(self, identity: Identity) -> str | None:
        return f"auth0|{identity.id}" if self.options.deterministic_user_id else None

    def match_key(self, matcher: str, identity: Identity, desired: Mapping[str, Any]) -> str | None:
        if matcher in {"app_metadata", "enterprise_identity"}:
            return identity.id
        if matcher == "email":
            if identity.state is SourceState.HARD_DELETED:
                return None  # nothing left to read an email from
            email = desired.get("email")
            return email.strip().lower() if isinstance(email, str) and email.strip() else None
        return None

    def keys_of(self, account: Account) -> Mapping[str, Iterable[str]]:
        keys: dict[str, list[str]] = {"app_metadata": [account.owner] if account.owner else []}
        email = account.data.get("email")
        keys["email"] = [str(email).lower()] if email else []
        connection = self.options.enterprise_connection
        keys["enterprise_identity"] = [
            str(i["user_id"])
            for i in account.data.get("identities") or ()
            if connection and isinstance(i, dict) and i.get("connection") == connection and i.get("user_id")
        ]
        return keys

    def last_seen(self, account: Account) -> tuple[str | None, str | None]:
        return _text(account.data.get("last_login")), _text(account.data.get("created_at"))

    def label(self, kind: ActionKind) -> str:
        return LABELS.get(kind, kind.value)

    def flag_path(self, flag: str) -> str | None:
        return f"app_metadata.{flag}"  # read by the tenant's login Action

    def account(self, user: Mapping[str, Any], roles: frozenset[str] = frozenset()) -> Account:
        """An Auth0 user object as the core sees it."""
        owner = read_path(user, self.options.owner_path)
        return Account(
            target_id=str(user["user_id"]),
            data=user,
            entitlements=roles,
            active=not bool(user.get("blocked")),
            owner=None if owner is None or owner == "" else str(owner),
        )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
