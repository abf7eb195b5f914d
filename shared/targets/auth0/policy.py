"""What an Auth0 section decides per user from Entra groups, beside attributes and roles: the
connection a joiner is created in, organization membership (with organization roles), the policy
flags the tenant's login Action reads, and the welcome each connection sends. Pure data and pure
picks; :mod:`shared.targets.auth0.options` reads them from the file.

A section::

    auth0:
      connection: Username-Password-Authentication   # the default connection
      connections:                                   # the first entry whose group applies wins
        - {group: <id>, connection: entra}           # the enterprise connection: SSO, no database account
      organizations:                                 # only these organizations and roles are touched
        - {group: <id>, organization: acme, roles: [Org Member]}
      policy:                                        # app_metadata flags; per flag the first entry wins
        - {group: <id>, mfa_required: true, allowed_connections: [entra], step_up: high}
      welcome:                     # per connection: password_change_ticket, verification_email, none
        Username-Password-Authentication:
          {send: password_change_ticket, result_url: 'https://app.example/welcome', ttl_s: 604800}
      mfa_enrollment_ticket: true                    # a Guardian enrollment ticket when MFA becomes required

What may be trusted: a flag, an organization or an organization role no entry names is never read
for a decision nor written; a user in no group of an entry holds none of what the entries give.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

ORGANIZATIONS: Final = "organizations"  # the derived path: organization name -> its roles, sorted
FLAGS: Final = ("mfa_required", "allowed_connections", "step_up")
WELCOME_KINDS: Final = ("password_change_ticket", "verification_email", "none")
WELCOME_KEY: Final = "entra_welcome"  # app_metadata: "pending" from the create until the welcome went out
PENDING: Final = "pending"
SENT: Final = "sent"


@dataclass(frozen=True)
class ConnectionPick:
    group: str
    connection: str
    entry: str  # where the file names the group, for messages


@dataclass(frozen=True)
class Membership:
    group: str
    organization: str
    roles: tuple[str, ...]
    entry: str


@dataclass(frozen=True)
class FlagEntry:
    group: str
    flags: Mapping[str, Any]  # flag -> value, only the flags the entry sets
    entry: str


@dataclass(frozen=True)
class Welcome:
    """What a joiner of one connection is sent, once."""

    send: str = "none"  # one of WELCOME_KINDS
    result_url: str | None = None  # where the password-change ticket returns to
    ttl_s: int = 7 * 86_400  # how long the ticket stays valid
    again_on_enable: bool = False  # a re-enabled account is welcomed again (the default: never)


@dataclass(frozen=True)
class Policy:
    connections: tuple[ConnectionPick, ...] = ()
    organizations: tuple[Membership, ...] = ()
    flags: tuple[FlagEntry, ...] = ()
    welcome: Mapping[str, Welcome] = field(default_factory=dict)
    mfa_enrollment_ticket: bool = False

    @property
    def entries(self) -> tuple[tuple[str, str], ...]:
        """(entry, group id) for every group the policy names."""
        entries: list[ConnectionPick | Membership | FlagEntry] = [*self.connections, *self.organizations, *self.flags]
        return tuple((e.entry, e.group) for e in entries)

    @property
    def managed_flags(self) -> tuple[str, ...]:
        return tuple(f for f in FLAGS if any(f in e.flags for e in self.flags))

    @property
    def managed_roles(self) -> Mapping[str, frozenset[str]]:
        """Organization -> the organization roles some entry gives there."""
        out: dict[str, set[str]] = {}
        for m in self.organizations:
            out.setdefault(m.organization, set()).update(m.roles)
        return {org: frozenset(roles) for org, roles in out.items()}

    def connection_for(self, groups: frozenset[str], default: str) -> str:
        return next((p.connection for p in self.connections if p.group in groups), default)

    def organizations_for(self, groups: frozenset[str]) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for m in self.organizations:
            if m.group in groups:
                out.setdefault(m.organization, set()).update(m.roles)
        return {org: sorted(roles) for org, roles in sorted(out.items())}

    def flags_for(self, groups: frozenset[str]) -> dict[str, Any]:
        """Each managed flag's value: the first entry in the user's groups that sets it, else None
        (a managed flag no group gives is removed)."""
        out: dict[str, Any] = {}
        for flag in self.managed_flags:
            out[flag] = next((e.flags[flag] for e in self.flags if e.group in groups and flag in e.flags), None)
        return out

    def welcome_for(self, connection: str) -> Welcome:
        return self.welcome.get(connection) or Welcome()


def only_managed(held: Mapping[str, list[str]], managed: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    """A user's memberships as the policy sees them: managed organizations only, managed roles only."""
    return {org: sorted(set(roles) & managed[org]) for org, roles in sorted(held.items()) if org in managed}
