"""Salesforce's rules, pure: what the planner, the matching ladder and reconciliation need to know
about Salesforce users and nothing about HTTP.

* Paths: User fields (``Email``, ``FirstName``, ``Title``, ``EmployeeNumber``, ... and custom
  ``<Name>__c`` fields) as the section maps them, and three the kind works out itself: ``Username``
  from the section's template, ``Alias`` (at most 8 characters) from the names, and the locale
  fields from the mapping or the section's defaults. ``Profile`` and ``UserRole`` are the *names*
  the section's ``profiles`` and ``roles`` tables pick (first entry that applies wins); ``Manager``
  is the manager's Entra object id (the adapter turns it into a ``ManagerId``).
* ``IsFrozen`` (the user's ``UserLogin``) is always wanted false for an active identity: a login
  frozen when a deactivation was refused thaws when the person returns.
* Ownership: the owner field (``FederationIdentifier`` unless the section names a custom field)
  holds the Entra object id; a value that is no object id (a hand-made user's UPN) is nobody's stamp.
* Values: ``Username`` and ``Email`` compare without case; a ``Username`` that is the template's
  with the collision suffix (``.2`` .. ``.9`` before the ``@``) is the same one.
* Creates need ``Username``, ``LastName``, ``Email`` and a profile; ``CommunityNickname`` (unique per
  org) is derived from the username and the object id.
* Deprovisioning: ``IsActive = false`` (Salesforce never deletes users; see the adapter for freezing
  and record reassignment). Entitlements are permission sets and permission set groups
  (``group:<DeveloperName>``) by API name; only those the section names are touched.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.core.model import Account, ActionKind, Identity, SourceState
from shared.core.ports import Capabilities
from shared.mapping.model import Condition, TargetSection

MATCHERS: Final = ("federation_id", "employee_number", "email", "username")
USERNAME: Final = "Username"
PROFILE: Final = "Profile"
ROLE: Final = "UserRole"
MANAGER: Final = "Manager"
FEDERATION: Final = "FederationIdentifier"
FROZEN: Final = "IsFrozen"  # the user's UserLogin: an active identity's login is never frozen
LOCALE_FIELDS: Final = ("TimeZoneSidKey", "LocaleSidKey", "EmailEncodingKey", "LanguageLocaleKey")
LOCALE_DEFAULTS: Final = {
    "TimeZoneSidKey": "America/Los_Angeles",
    "LocaleSidKey": "en_US",
    "EmailEncodingKey": "UTF-8",
    "LanguageLocaleKey": "en_US",
}
# Standard User fields a section may map (plus custom fields, ``<Name>__c``).
USER_FIELDS: Final = frozenset(
    {
        "Email", "FirstName", "LastName", "MiddleName", "Alias", "Title", "Department", "Division",
        "CompanyName", "Phone", "MobilePhone", "Fax", "Extension", "EmployeeNumber", FEDERATION,
        "Street", "City", "State", "PostalCode", "Country", "Nickname", "AboutMe", MANAGER,
        *LOCALE_FIELDS,
    }
)  # fmt: skip
CUSTOM_FIELD: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,36}__c")
DERIVED: Final = frozenset({USERNAME, PROFILE, ROLE})  # from the section's own keys, never mapped
CASELESS: Final = frozenset({USERNAME, "Email"})
UNIQUE: Final = frozenset({USERNAME})
ALIAS_MAX: Final = 8
NICKNAME_MAX: Final = 40
SUFFIXES: Final = tuple(range(2, 10))  # the collision suffix rule: local.2@domain .. local.9@domain
PLACEHOLDER: Final = re.compile(r"\{([A-Za-z0-9_]+)\}")
OBJECT_ID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
PERMISSION_SET_GROUP: Final = "group:"
LABELS: Final = {
    ActionKind.DISABLE: "deactivate",
    ActionKind.ENABLE: "reactivate",
    ActionKind.GRANT: "assign_permission_sets",
    ActionKind.UNGRANT: "remove_permission_sets",
}
NO_USERNAME: Final = "joiner has no Username after mapping (a field the username template names is empty)"
NO_PROFILE: Final = "joiner has no profile: no profiles entry applies and the section has no default_profile"
CAPABILITIES: Final = Capabilities(
    revoke_sessions=False, revoke_refresh_tokens=False, delete=False, entitlements="permission sets"
)
# Records a leaver may own, and whether a queue can own them (Salesforce: Leads and Cases only).
REASSIGNABLE: Final = {"Opportunity": False, "Lead": True, "Case": True, "Account": False, "Contact": False}
DEFAULT_REASSIGN: Final = ("Opportunity", "Lead", "Case")
OWNER_ORDER: Final = ("manager", "fallback_user", "queue")


@dataclass(frozen=True)
class Pick:
    """One entry of a profiles or roles table: members of ``group`` (with the job title or
    department it names, where it names one) get ``value``."""

    group: str
    value: str
    conditions: tuple[Condition, ...] = ()
    entry: str = ""  # where it is in the file

    def applies(self, identity: Identity) -> bool:
        return self.group in identity.groups and all(c.holds(identity.attributes) for c in self.conditions)


@dataclass(frozen=True)
class Reassign:
    """Where a leaver's open records go: the first of ``to`` that can take them (an active manager, the
    fallback user, the queue for Leads and Cases), objects in ``objects``."""

    objects: tuple[str, ...] = DEFAULT_REASSIGN
    to: tuple[str, ...] = OWNER_ORDER
    fallback_user: str | None = None  # a Username
    queue: str | None = None  # a queue's DeveloperName
    bulk_over: int = 2000  # more records than this of one object go through Bulk API 2.0


@dataclass(frozen=True)
class SalesforceOptions:
    settings_prefix: str = "SALESFORCE"  # <prefix>_INSTANCE_URL, _CLIENT_ID, _CLIENT_SECRET
    username_template: str = "{Email}"
    owner_field: str = FEDERATION
    locale: Mapping[str, str] = field(default_factory=lambda: dict(LOCALE_DEFAULTS))
    profiles: tuple[Pick, ...] = ()
    default_profile: str | None = None
    roles: tuple[Pick, ...] = ()
    reassign: Reassign = field(default_factory=Reassign)
    timeout_s: float = 20.0
    threads: int = 4  # calls in flight to the org at once, from this process

    @property
    def group_entries(self) -> tuple[tuple[str, str], ...]:
        return tuple((p.entry, p.group) for p in (*self.profiles, *self.roles))

    @property
    def condition_paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.attribute for p in (*self.profiles, *self.roles) for c in p.conditions))


def pick(table: Iterable[Pick], identity: Identity) -> str | None:
    """The precedence rule of a single-valued field: the first entry, in file order, that applies."""
    return next((p.value for p in table if p.applies(identity)), None)


def ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def alias_of(first: Any, last: Any, username: Any) -> str | None:
    """At most 8 characters: the first name's initial and the last name, lower case, letters and
    digits only (``Zoë O'Brien`` -> ``zobrien``); the username's local part when there are no names."""
    names = f"{str(first or '')[:1]}{last or ''}" if last else str(username or "").split("@", 1)[0]
    alias = "".join(c for c in ascii_fold(names).lower() if c.isalnum())[:ALIAS_MAX]
    return alias or None


def render(template: str, values: Mapping[str, Any]) -> str | None:
    """The template with each ``{Field}`` replaced by the mapped value, lower case without spaces;
    None when a field it names has no value."""
    missing = False

    def one(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if value is None or str(value).strip() == "":
            missing = True
            return ""
        return str(value).strip()

    out = PLACEHOLDER.sub(one, template)
    return None if missing else "".join(ascii_fold(out).lower().split())


def suffixed(username: str, n: int) -> str:
    """The collision suffix rule: ``jane.doe@acme.com`` -> ``jane.doe.2@acme.com``."""
    local, at, domain = username.rpartition("@")
    return f"{local}.{n}@{domain}" if at else f"{username}.{n}"


def same_username(want: str, have: str) -> bool:
    want, have = want.casefold(), have.casefold()
    return want == have or any(have == suffixed(want, n) for n in SUFFIXES)


def nickname(username: str, identity_id: str) -> str:
    """``CommunityNickname`` is unique per org: the username's local part and the object id's start."""
    local = username.split("@", 1)[0][: NICKNAME_MAX - 9]
    return f"{local}.{identity_id.replace('-', '')[:8]}"


def owner_of(value: Any) -> str | None:
    """The Entra object id an owner field holds; anything else (a UPN) is nobody's stamp."""
    return str(value).lower() if isinstance(value, str) and OBJECT_ID.fullmatch(value) else None


class SalesforceRules:
    def __init__(self, section: TargetSection):
        self.section = section
        self.options: SalesforceOptions = section.options or SalesforceOptions()
        self.mapped = frozenset(a.target for a in section.attributes)

    def desired(self, identity: Identity) -> dict[str, Any]:
        values = {**identity.attributes, "id": identity.id}
        out: dict[str, Any] = {a.target: a.value_from(values) for a in self.section.attributes}
        for key, default in self.options.locale.items():
            if out.get(key) is None:
                out[key] = default
        out[self.options.owner_field] = identity.id  # always kept: found again without the link
        out[USERNAME] = render(self.options.username_template, out)
        if "Alias" in out:
            out["Alias"] = str(out["Alias"])[:ALIAS_MAX] if out["Alias"] else None
        else:
            out["Alias"] = alias_of(out.get("FirstName"), out.get("LastName"), out[USERNAME])
        out[PROFILE] = pick(self.options.profiles, identity) or self.options.default_profile
        if self.options.roles:
            out[ROLE] = pick(self.options.roles, identity)
        out[FROZEN] = False  # a login frozen for a refused deactivation thaws when the person returns
        return out

    def current(self, account: Account, path: str) -> Any:
        return account.data.get(path)

    def same(self, path: str, want: Any, have: Any) -> bool:
        if path == FROZEN:
            return bool(want) == bool(have)
        if want in (None, "") and have in (None, ""):
            return True
        if isinstance(want, str) and isinstance(have, str):
            if path == USERNAME:
                return same_username(want, have)
            if path in CASELESS:
                return want.casefold() == have.casefold()
            if path == self.options.owner_field:
                return want.lower() == have.lower()
        return bool(want == have)

    def removes_unmapped(self, path: str) -> bool:
        # A User must keep these; the rest is cleared when the mapping derives nothing for it.
        return path not in {USERNAME, "LastName", "Email", "Alias", PROFILE, *LOCALE_FIELDS}

    def unique(self, path: str) -> bool:
        return path in UNIQUE

    def create_payload(self, identity: Identity, desired: Mapping[str, Any]) -> dict[str, Any] | str:
        username = desired.get(USERNAME)
        if not username:
            return NO_USERNAME
        if not desired.get(PROFILE):
            return NO_PROFILE
        for required in ("LastName", "Email"):
            if not desired.get(required):
                return f"joiner has no {required} after mapping; a Salesforce user needs one"
        body = {k: v for k, v in desired.items() if v is not None and k != FROZEN}
        body["CommunityNickname"] = nickname(str(username), identity.id)
        body["IsActive"] = True
        return body

    def update_payload(self, changes: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
        """Field -> new value (None clears it); the adapter turns Profile, UserRole and Manager into ids."""
        return dict(changes)

    def deterministic_id(self, identity: Identity) -> str | None:
        return None  # Salesforce chooses ids

    def match_key(self, matcher: str, identity: Identity, desired: Mapping[str, Any]) -> str | None:
        if matcher == "federation_id":
            return _key(desired.get(FEDERATION), lower=self.options.owner_field == FEDERATION)
        if identity.state is SourceState.HARD_DELETED:
            return None  # nothing left to read the rest from
        if matcher == "employee_number":
            return _key(desired.get("EmployeeNumber"), lower=False)
        if matcher == "email":
            return _key(desired.get("Email"))
        if matcher == "username":
            return _key(desired.get(USERNAME))
        return None

    def keys_of(self, account: Account) -> Mapping[str, Iterable[str]]:
        data = account.data
        lower = self.options.owner_field == FEDERATION
        found = {
            "federation_id": _key(data.get(FEDERATION), lower=lower),
            "employee_number": _key(data.get("EmployeeNumber"), lower=False),
            "email": _key(data.get("Email")),
            "username": _key(data.get(USERNAME)),
        }
        return {m: [k] if k else [] for m, k in found.items()}

    def last_seen(self, account: Account) -> tuple[str | None, str | None]:
        return _text(account.data.get("LastLoginDate")), _text(account.data.get("CreatedDate"))

    def label(self, kind: ActionKind) -> str:
        return LABELS.get(kind, kind.value)

    def flag_path(self, flag: str) -> str | None:
        return None  # no login flow of ours reads a flag from Salesforce

    def account(self, user: Mapping[str, Any], entitlements: frozenset[str] = frozenset()) -> Account:
        """A Salesforce user (with ``Profile``, ``UserRole`` and ``Manager`` resolved to names and
        the manager's object id by the adapter) as the core sees it."""
        return Account(
            target_id=str(user["Id"]),
            data=user,
            entitlements=entitlements,
            active=bool(user.get("IsActive")),
            owner=owner_of(user.get(self.options.owner_field)),
        )


def _key(value: Any, *, lower: bool = True) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower() if lower else value.strip()


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
