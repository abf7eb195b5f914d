"""A SCIM application's rules, pure: what the planner, the matching ladder and reconciliation need to
know about SCIM users and nothing about HTTP.

* Paths: the core User schema and the enterprise extension (see :mod:`shared.targets.scim.paths`).
  A path mapped to nothing is removed (``userName``, which a User must have, is left).
* Correlation: ``externalId`` holds the Entra object id (RFC 7643 calls it the client's own
  identifier); it is written on every create and stamped on an adopted account. ``userName`` is
  unique on the server and compares without case, as RFC 7643 defines it (``caseExact: false``),
  and so do email values.
* Creates: ``active: true``, ``externalId``, the mapped values; a User needs a ``userName``.
* Deprovisioning: ``active: false`` (RFC 7644 keeps inactive users listable); DELETE where the
  policy says so (by default only for a user deleted for good). There are no sessions to revoke.
* Entitlements are the SCIM groups the section pushes, by the names it gives them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.core.model import Account, ActionKind, Identity, SourceState
from shared.core.ports import Capabilities
from shared.mapping.model import TargetSection
from shared.settings import SCIM_TOKEN_SETTING
from shared.targets.scim import paths
from shared.targets.scim.paths import Path

OWNER: Final = "externalId"
USER_NAME: Final = "userName"
MATCHERS: Final = ("externalId", "userName", "email")
LABELS: Final = {
    ActionKind.DISABLE: "deactivate",
    ActionKind.ENABLE: "activate",
    ActionKind.GRANT: "add_to_groups",
    ActionKind.UNGRANT: "remove_from_groups",
}
NO_USER_NAME: Final = "joiner has no userName after mapping; a SCIM User needs one"
CAPABILITIES: Final = Capabilities(
    revoke_sessions=False, revoke_refresh_tokens=False, delete=True, entitlements="groups"
)
TOKEN_SETTING: Final = SCIM_TOKEN_SETTING


@dataclass(frozen=True)
class ScimOptions:
    base_url: str = ""  # https://app.example.com/scim/v2 (plain http for loopback only)
    token_setting: str = ""  # the app setting that holds the bearer token: SCIM_<NAME>_TOKEN
    timeout_s: float = 10.0
    page_size: int = 200  # users per list page (the server may cap it lower: filter.maxResults)
    delete_unmapped_groups: bool = False  # delete a group entra-sync pushed once the mapping drops it


class ScimRules:
    def __init__(self, section: TargetSection):
        self.section = section
        self.options: ScimOptions = section.options or ScimOptions()
        self.paths: dict[str, Path] = {a.target: paths.must(a.target) for a in section.attributes}
        self._email = next((p for p in self.paths.values() if p.attribute == "emails" and p.sub == "value"), None)

    def desired(self, identity: Identity) -> dict[str, Any]:
        values = {**identity.attributes, "id": identity.id}
        profile = {a.target: a.value_from(values) for a in self.section.attributes}
        profile[OWNER] = identity.id  # always kept: the account can be found again without the link
        return profile

    def current(self, account: Account, path: str) -> Any:
        if path == OWNER:
            return account.data.get(OWNER)
        parsed = self.paths.get(path) or paths.parse(path)
        return None if isinstance(parsed, str) else paths.read(account.data, parsed)

    def _caseless(self, path: str) -> bool:
        parsed = self.paths.get(path)
        return path == USER_NAME or (parsed is not None and parsed.attribute == "emails" and parsed.sub == "value")

    def same(self, path: str, want: Any, have: Any) -> bool:
        if self._caseless(path) and isinstance(want, str) and isinstance(have, str):
            return want.casefold() == have.casefold()
        return bool(want == have)

    def removes_unmapped(self, path: str) -> bool:
        return path != USER_NAME

    def unique(self, path: str) -> bool:
        return path == USER_NAME

    def create_payload(self, identity: Identity, desired: Mapping[str, Any]) -> dict[str, Any] | str:
        if not desired.get(USER_NAME):
            return NO_USER_NAME
        resource = paths.build({self.paths[p]: v for p, v in desired.items() if p in self.paths})
        resource[OWNER] = identity.id
        resource["active"] = True
        return resource

    def update_payload(self, changes: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
        """Path -> new value (None: remove); the adapter turns them into PATCH operations or a PUT."""
        return dict(changes)

    def deterministic_id(self, identity: Identity) -> str | None:
        return None  # the server chooses ids

    def match_key(self, matcher: str, identity: Identity, desired: Mapping[str, Any]) -> str | None:
        if matcher == "externalId":
            return identity.id
        if identity.state is SourceState.HARD_DELETED:
            return None  # nothing left to read a name from
        if matcher == USER_NAME:
            return _key(desired.get(USER_NAME))
        if matcher == "email" and self._email is not None:
            return _key(desired.get(self._email.text))
        return None

    def keys_of(self, account: Account) -> Mapping[str, Iterable[str]]:
        data = account.data
        emails = [_key(e.get("value")) for e in data.get("emails") or () if isinstance(e, Mapping)]
        return {
            "externalId": [account.owner] if account.owner else [],
            USER_NAME: [k for k in (_key(data.get(USER_NAME)),) if k],
            "email": [e for e in emails if e],
        }

    def last_seen(self, account: Account) -> tuple[str | None, str | None]:
        meta = account.data.get("meta") or {}
        created = meta.get("created") if isinstance(meta, Mapping) else None
        return None, None if created is None else str(created)  # SCIM has no last sign-in

    def label(self, kind: ActionKind) -> str:
        return LABELS.get(kind, kind.value)

    def flag_path(self, flag: str) -> str | None:
        return None  # no login flow reads a flag from a SCIM application

    def account(self, resource: Mapping[str, Any], groups: frozenset[str] = frozenset()) -> Account:
        """A SCIM User as the core sees it."""
        owner = resource.get(OWNER)
        return Account(
            target_id=str(resource["id"]),
            data=resource,
            entitlements=groups,
            active=resource.get("active") is not False,
            owner=None if owner is None or owner == "" else str(owner),
        )


def _key(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None
