"""SCIM 2.0 applications as a kind of target (``scim:<name>``): their part of the mapping file,
their rules, their adapter.

A section names the application's base URL and the app setting that holds its bearer token (the
token itself never goes in the file; in Azure the setting is a Key Vault reference)::

    scim:hr-app:
      base_url: https://hr.example.com/scim/v2
      token_setting: SCIM_HR_APP_TOKEN
      attributes:
        - {source: userPrincipalName, target: userName}
        - {source: mail, target: 'emails[type eq "work"].value'}
        - {source: department, target: 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department'}
      groups:
        - {group: <Entra group object id>, groups: [Sales]}
      deprovision: {action: disable, hard_delete: delete}

Each ``groups`` entry pushes one Entra group as one SCIM group of the name it gives (created with
no members, its ``externalId`` the Entra group's object id, renamed when the name here changes):
its members are the Entra group's, through nesting. Only groups the section names are touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from shared.core.ports import Rules, Target
from shared.mapping.model import NO_CONDITIONS, Grant, TargetSection
from shared.settings import Settings, is_loopback_url
from shared.targets.scim import paths
from shared.targets.scim.rules import CAPABILITIES, MATCHERS, TOKEN_SETTING, ScimOptions, ScimRules

if TYPE_CHECKING:
    from shared.mapping.check import Checker

MAX_PAGE: Final = 1000


class ScimKind:
    name = "scim"
    title = "SCIM"
    matchers = MATCHERS
    grants_key = "groups"
    grant_noun = "SCIM group"
    grant_conditions = NO_CONDITIONS
    disable_words = ("disable",)
    option_keys = frozenset({"base_url", "token_setting", "timeout_s", "page_size", "delete_unmapped_groups"})
    matching_keys: frozenset[str] = frozenset()
    capabilities = CAPABILITIES
    deprovision_defaults = ("disable", "delete")  # active=false; DELETE only for a user deleted for good

    def path_problem(self, path: str) -> str | None:
        parsed = paths.parse(path)
        return parsed if isinstance(parsed, str) else None

    def options(
        self, check: Checker, where: str, values: Mapping[str, Any], matching: Mapping[str, Any], matching_where: str
    ) -> ScimOptions:
        d = ScimOptions()
        base_url = check.text(f"{where}base_url", values.get("base_url")) or ""
        if base_url:
            scheme = base_url.split("://", 1)[0].lower() if "://" in base_url else ""
            if scheme not in {"https", "http"} or (scheme == "http" and not is_loopback_url(base_url)):
                check.fail(f"{where}base_url", f"must be an https URL (plain http only for loopback), got {base_url!r}")
        token = values.get("token_setting")
        if not isinstance(token, str) or not TOKEN_SETTING.fullmatch(token):
            check.fail(
                f"{where}token_setting",
                "must name the app setting that holds the bearer token, SCIM_<NAME>_TOKEN in capitals "
                "(the token itself never goes in the mapping file)",
            )
            token = ""
        return ScimOptions(
            base_url=base_url.rstrip("/"),
            token_setting=token,
            timeout_s=check.number(f"{where}timeout_s", values.get("timeout_s"), d.timeout_s, 1, 120),
            page_size=int(check.number(f"{where}page_size", values.get("page_size"), d.page_size, 1, MAX_PAGE)),
            delete_unmapped_groups=check.flag(
                f"{where}delete_unmapped_groups", values.get("delete_unmapped_groups"), d.delete_unmapped_groups
            ),
        )

    def default_matching(self, options: Any) -> tuple[str, ...]:
        return ("link", "externalId", "userName")

    def matching_problem(self, options: Any, precedence: Sequence[str]) -> tuple[str, str] | None:
        return None

    def check_grants(self, check: Checker, where: str, grants: Sequence[Grant]) -> None:
        """One SCIM group per entry, each pushed from one Entra group: names and groups are unique."""
        names: dict[str, int] = {}
        groups: dict[str, int] = {}
        for i, grant in enumerate(grants):
            if len(grant.entitlements) != 1:
                check.fail(
                    f"{where}[{i}].groups", "names exactly one SCIM group: the one this Entra group is pushed as"
                )
                continue
            name = grant.entitlements[0].casefold()
            if name in names:
                check.fail(
                    f"{where}[{i}].groups", f"{grant.entitlements[0]!r} is pushed by entry {names[name]} already"
                )
            if grant.group in groups:
                check.fail(f"{where}[{i}].group", f"this Entra group is pushed by entry {groups[grant.group]} already")
            names.setdefault(name, i)
            groups.setdefault(grant.group, i)

    def rules(self, section: TargetSection) -> Rules:
        return ScimRules(section)

    def settings_problem(self, section: TargetSection, settings: Settings) -> str | None:
        options: ScimOptions = section.options
        return settings.scim_token_problem(str(options.token_setting), section.name)

    def build(self, section: TargetSection, context: Any) -> Target:
        from shared.targets.scim.client import http_client
        from shared.targets.scim.target import ScimTarget

        options: ScimOptions = section.options

        def connect() -> Any:  # one connection pool per application, with the token its section names
            token = context.settings.scim_token(options.token_setting, section.name)
            return http_client(options.base_url, token, options.timeout_s)

        http = context.client(section.name, connect)
        gate = context.rate_gate(section.name)  # one per application, shared by every instance
        return ScimTarget(section, http, clock=context.clock, state=context.state, gate=gate)


SCIM: Final = ScimKind()
