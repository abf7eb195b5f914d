"""The Auth0 tenant's policy declared in the mapping (the baseline), and how it differs from the
tenant as it is: pure data and a pure comparison; the adapter reads the settings and writes the
corrections.

A section's ``baseline``::

    baseline:
      enforce: false                     # true: corrected once an operator approves the run
      connections:
        Username-Password-Authentication:
          password_policy: good          # none, low, fair, good, excellent
          password_complexity_options: {min_length: 12}
          password_history: {enable: true, size: 5}
          brute_force_protection: true
      mfa:
        factors: {otp: true, sms: false}  # only the factors named are compared
        policies: [all-applications]      # the MFA policy: [], [all-applications] or [confidence-score]
      organizations:
        acme: {entra: true}               # enabled connections -> assign membership on login

What may be trusted: only what the baseline names is read for a difference or written; a key of a
connection's options the baseline does not name is kept as it is when a correction is written
(Auth0 replaces a connection's ``options`` whole, so a correction sends the whole object back). An
organization's enabled connections are the declared set: one more is a difference too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from shared.mapping.check import Checker

CONNECTION_OPTIONS: Final = (
    "password_policy", "password_complexity_options", "password_history", "brute_force_protection",
)  # fmt: skip
PASSWORD_POLICIES: Final = ("none", "low", "fair", "good", "excellent")
FACTORS: Final = (
    "sms", "push-notification", "email", "duo", "otp", "webauthn-roaming", "webauthn-platform", "recovery-code",
)  # fmt: skip
MFA_POLICIES: Final = ("all-applications", "confidence-score")
# The mapping's names of connection options -> Auth0's own names in ``options`` (as the API sends them).
WIRE: Final = {"password_policy": "passwordPolicy"}


@dataclass(frozen=True)
class Baseline:
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> options it requires
    factors: Mapping[str, bool] = field(default_factory=dict)
    policies: tuple[str, ...] | None = None  # None: the MFA policy is not declared
    organizations: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)  # org -> connection -> auto
    enforce: bool = False


@dataclass(frozen=True)
class Tenant:
    """The tenant's settings as read, for what a baseline names."""

    connections: Mapping[str, Mapping[str, Any]]  # name -> its options (a missing connection is absent)
    factors: Mapping[str, bool]
    policies: tuple[str, ...]
    organizations: Mapping[str, Mapping[str, bool] | None]  # org -> enabled connection -> auto (None: no such org)


@dataclass(frozen=True)
class Difference:
    """One setting that is not as declared: ``subject`` is what a correction writes (a connection,
    a factor, the MFA policy, an organization's connection)."""

    kind: str  # "connection", "factor", "policies", "organization"
    subject: str
    setting: str
    have: Any
    want: Any

    def line(self) -> str:
        where = {"connection": f"connection {self.subject}", "factor": f"MFA factor {self.subject}",
                 "policies": "MFA policy", "organization": f"organization {self.subject}"}[self.kind]  # fmt: skip
        return f"{where}: {self.setting} is {self.have!r}, the baseline says {self.want!r}"

    @property
    def fixable(self) -> bool:
        """Whether entra-sync can write the correction (a connection or organization that does not
        exist is reported, never created)."""
        return self.setting not in {"exists"}


def differences(baseline: Baseline, tenant: Tenant) -> list[Difference]:
    out: list[Difference] = []
    for name, wanted in sorted(baseline.connections.items()):
        options = tenant.connections.get(name)
        if options is None:
            out.append(Difference("connection", name, "exists", False, True))
            continue
        for key, want in wanted.items():
            have = options.get(WIRE.get(key, key))
            if isinstance(want, Mapping):
                have_map = have if isinstance(have, Mapping) else {}
                for sub, value in sorted(want.items()):
                    if have_map.get(sub) != value:
                        out.append(Difference("connection", name, f"{key}.{sub}", have_map.get(sub), value))
            elif have != want:
                out.append(Difference("connection", name, key, have, want))
    for factor, want in sorted(baseline.factors.items()):
        have = bool(tenant.factors.get(factor, False))
        if have != want:
            out.append(Difference("factor", factor, "enabled", have, want))
    if baseline.policies is not None and sorted(tenant.policies) != sorted(baseline.policies):
        out.append(Difference("policies", "mfa", "policies", list(tenant.policies), list(baseline.policies)))
    for org, wanted_conns in sorted(baseline.organizations.items()):
        enabled = tenant.organizations.get(org)
        if enabled is None:
            out.append(Difference("organization", org, "exists", False, True))
            continue
        for conn, auto in sorted(wanted_conns.items()):
            if conn not in enabled:
                out.append(Difference("organization", org, f"connection {conn}", "not enabled", _auto(auto)))
            elif enabled[conn] != auto:
                out.append(Difference("organization", org, f"connection {conn}", _auto(enabled[conn]), _auto(auto)))
        for conn in sorted(set(enabled) - set(wanted_conns)):
            out.append(Difference("organization", org, f"connection {conn}", _auto(enabled[conn]), "not enabled"))
    return out


def _auto(auto: bool) -> str:
    return "enabled, members on login" if auto else "enabled"


def read_baseline(check: Checker, where: str, data: Any) -> Baseline | None:
    if data is None:
        return None
    values = check.keys(where, data, {"enforce", "connections", "mfa", "organizations"})
    connections: dict[str, dict[str, Any]] = {}
    for name, raw in (check.keys(f"{where}.connections", values.get("connections") or {}, _Any()) or {}).items():
        at = f"{where}.connections.{name}"
        entry = check.keys(at, raw, set(CONNECTION_OPTIONS))
        if "password_policy" in entry:
            check.choice(f"{at}.password_policy", entry["password_policy"], PASSWORD_POLICIES, "good")
        for key in ("password_complexity_options", "password_history"):
            if key in entry and not isinstance(entry[key], dict):
                check.fail(f"{at}.{key}", "must be a mapping, as Auth0 keeps it")
        if "brute_force_protection" in entry:
            check.flag(f"{at}.brute_force_protection", entry["brute_force_protection"], True)
        connections[str(name)] = dict(entry)
    mfa = check.keys(f"{where}.mfa", values.get("mfa") or {}, {"factors", "policies"})
    factors: dict[str, bool] = {}
    for name, enabled in (check.keys(f"{where}.mfa.factors", mfa.get("factors") or {}, set(FACTORS))).items():
        factors[str(name)] = check.flag(f"{where}.mfa.factors.{name}", enabled, False)
    policies = None
    if "policies" in mfa:
        policies = check.string_list(f"{where}.mfa.policies", mfa["policies"])
        for i, policy in enumerate(policies):
            if policy not in MFA_POLICIES:
                check.fail(f"{where}.mfa.policies[{i}]", f"must be one of {', '.join(MFA_POLICIES)}, got {policy!r}")
    organizations: dict[str, dict[str, bool]] = {}
    for org, raw in (check.keys(f"{where}.organizations", values.get("organizations") or {}, _Any()) or {}).items():
        conns = check.keys(f"{where}.organizations.{org}", raw, _Any())
        organizations[str(org)] = {
            str(c): check.flag(f"{where}.organizations.{org}.{c}", auto, False) for c, auto in conns.items()
        }
    return Baseline(
        connections=connections,
        factors=factors,
        policies=policies,
        organizations=organizations,
        enforce=check.flag(f"{where}.enforce", values.get("enforce"), False),
    )


class _Any(frozenset[str]):
    """Any key (names of connections and organizations are the tenant's own)."""

    def __contains__(self, key: object) -> bool:
        return True
