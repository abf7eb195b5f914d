"""Salesforce orgs as a kind of target (``salesforce`` or ``salesforce:<name>``): their part of the
mapping file, their rules, their adapter.

A section::

    salesforce:
      settings_prefix: SALESFORCE          # SALESFORCE_INSTANCE_URL, _CLIENT_ID, _CLIENT_SECRET
      username_template: '{Email}'         # mapped fields in braces; lower case, no spaces
      locale: {TimeZoneSidKey: Europe/Paris, LocaleSidKey: fr_FR, LanguageLocaleKey: fr}
      attributes:
        - {source: mail, target: Email, transforms: [trim, lower]}
        - {source: givenName, target: FirstName}
        - {source: surname, target: LastName}
        - {source: jobTitle, target: Title}
        - {source: department, target: Department}
        - {source: employeeId, target: EmployeeNumber}
        - {source: manager.id, target: Manager}
      profiles:                            # the first entry that applies wins
        - {group: <id>, job_title: [Sales Manager], profile: Sales Manager}
        - {group: <id>, profile: Sales User}
      default_profile: Standard User
      roles:
        - {group: <id>, department: Sales West, role: West Sales Rep}
      permission_sets:                     # many to many; only these are ever added or removed
        - {group: <id>, permission_sets: [Sales_Cloud_User, 'group:Sales_Ops']}
        - {group: <id>, department: [Sales West], permission_sets: [West_Territory]}
      reassign: {objects: [Opportunity, Lead, Case], to: [manager, fallback_user, queue],
                 fallback_user: sales.ops@acme.com, queue: Sales_Unassigned}
      matching: {precedence: [link, federation_id, employee_number, email, username]}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from shared.core.ports import Rules, Target
from shared.mapping.model import Grant, TargetSection
from shared.settings import Settings
from shared.targets.salesforce.rules import (
    CAPABILITIES,
    CUSTOM_FIELD,
    DERIVED,
    FEDERATION,
    LOCALE_DEFAULTS,
    LOCALE_FIELDS,
    MATCHERS,
    OWNER_ORDER,
    PERMISSION_SET_GROUP,
    PLACEHOLDER,
    REASSIGNABLE,
    USER_FIELDS,
    Pick,
    Reassign,
    SalesforceOptions,
    SalesforceRules,
)
from shared.targets.salesforce.settings import PREFIX, org_settings

if TYPE_CHECKING:
    from shared.mapping.check import Checker

API_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")
# The conditions a profiles or roles entry may add to its group, and the source path each reads.
CONDITIONS: Final = {"job_title": "jobTitle", "department": "department"}
WHERE_DERIVED: Final = {
    "Username": "username_template",
    "Profile": "profiles and default_profile",
    "UserRole": "roles",
}


class SalesforceKind:
    name = "salesforce"
    title = "Salesforce"
    matchers = MATCHERS
    grants_key = "permission_sets"
    grant_noun = "permission set"
    grant_conditions = CONDITIONS  # a permission_sets entry may name a job title or department too
    disable_words = ("deactivate",)
    option_keys = frozenset(
        {"settings_prefix", "username_template", "owner_field", "locale", "profiles", "default_profile", "roles",
         "reassign", "timeout_s", "threads"}
    )  # fmt: skip
    matching_keys: frozenset[str] = frozenset()
    capabilities = CAPABILITIES
    deprovision_defaults = ("disable", "disable")  # Salesforce users are deactivated, never deleted

    def path_problem(self, path: str) -> str | None:
        if path in DERIVED:
            return f"{path!r} is not mapped: it comes from the section's {WHERE_DERIVED[path]}"
        if path in USER_FIELDS or CUSTOM_FIELD.fullmatch(path):
            return None
        allowed = ", ".join(sorted(USER_FIELDS))
        return f"{path!r} is not a writable Salesforce User field ({allowed}, or a custom field <Name>__c)"

    def options(
        self, check: Checker, where: str, values: Mapping[str, Any], matching: Mapping[str, Any], matching_where: str
    ) -> SalesforceOptions:
        d = SalesforceOptions()
        prefix = values.get("settings_prefix", d.settings_prefix)
        if not isinstance(prefix, str) or not PREFIX.fullmatch(prefix):
            check.fail(
                f"{where}settings_prefix", f"must be SALESFORCE or SALESFORCE_<NAME> in capitals, got {prefix!r}"
            )
            prefix = d.settings_prefix
        owner = values.get("owner_field", d.owner_field)
        if owner != FEDERATION and not (isinstance(owner, str) and CUSTOM_FIELD.fullmatch(owner)):
            check.fail(
                f"{where}owner_field", f"must be FederationIdentifier or a custom field <Name>__c, got {owner!r}"
            )
            owner = d.owner_field
        deprovision = values.get("deprovision")
        for key in ("action", "hard_delete"):
            if isinstance(deprovision, dict) and deprovision.get(key) == "delete":
                check.fail(f"{where}deprovision.{key}", "Salesforce users cannot be deleted: deactivate them")
        mapped = {a.get("target") for a in values.get("attributes") or () if isinstance(a, dict)}
        if owner in mapped:
            check.fail(f"{where}owner_field", f"{owner} holds the Entra object id: leave it out of attributes")
        template = check.text(f"{where}username_template", values.get("username_template", d.username_template))
        if template is not None:
            known = mapped | set(LOCALE_FIELDS) | {owner}
            names = PLACEHOLDER.findall(template)
            unknown = [n for n in names if n not in known]
            if not names or unknown:
                check.fail(
                    f"{where}username_template",
                    "must name mapped fields in braces, such as '{Email}' "
                    f"(not mapped: {', '.join(unknown) or 'none named'})",
                )
        return SalesforceOptions(
            settings_prefix=prefix,
            username_template=template or d.username_template,
            owner_field=owner,
            locale=self._locale(check, f"{where}locale", values.get("locale") or {}),
            profiles=self._table(check, f"{where}profiles", values.get("profiles"), "profile"),
            default_profile=(
                check.text(f"{where}default_profile", values["default_profile"])
                if "default_profile" in values
                else None
            ),
            roles=self._table(check, f"{where}roles", values.get("roles"), "role"),
            reassign=self._reassign(check, f"{where}reassign", values.get("reassign") or {}),
            timeout_s=check.number(f"{where}timeout_s", values.get("timeout_s"), d.timeout_s, 1, 120),
            threads=int(check.number(f"{where}threads", values.get("threads"), d.threads, 1, 16)),
        )

    def _locale(self, check: Checker, where: str, data: Any) -> dict[str, str]:
        data = check.keys(where, data, frozenset(LOCALE_FIELDS))
        out = dict(LOCALE_DEFAULTS)
        for key in LOCALE_FIELDS:
            if key in data:
                out[key] = check.text(f"{where}.{key}", data[key]) or out[key]
        return out

    def _table(self, check: Checker, where: str, data: Any, key: str) -> tuple[Pick, ...]:
        if data is None:
            return ()
        if not isinstance(data, list):
            check.fail(where, f"must be a list of {{group, {key}, job_title, department}}")
            return ()
        picks = []
        for i, item in enumerate(data):
            entry = f"{where}[{i}]"
            values = check.keys(entry, item, {"group", key, *CONDITIONS, "note"})
            group = check.text(f"{entry}.group", values.get("group"))
            value = check.text(f"{entry}.{key}", values.get(key))
            conditions = check.narrowing(entry, values, CONDITIONS)
            if group and value:
                picks.append(Pick(group, value, conditions, f"{entry}.group"))
        return tuple(picks)

    def _reassign(self, check: Checker, where: str, data: Any) -> Reassign:
        d = Reassign()
        data = check.keys(where, data, {"objects", "to", "fallback_user", "queue", "bulk_over"})
        objects = check.string_list(f"{where}.objects", data.get("objects", list(d.objects)))
        for i, name in enumerate(objects):
            if name not in REASSIGNABLE:
                check.fail(f"{where}.objects[{i}]", f"must be one of {', '.join(REASSIGNABLE)}, got {name!r}")
        to = check.string_list(f"{where}.to", data.get("to", list(d.to)))
        for i, name in enumerate(to):
            if name not in OWNER_ORDER:
                check.fail(f"{where}.to[{i}]", f"must be one of {', '.join(OWNER_ORDER)}, got {name!r}")
        fallback = check.text(f"{where}.fallback_user", data["fallback_user"]) if "fallback_user" in data else None
        queue = data.get("queue")
        if queue is not None and not (isinstance(queue, str) and API_NAME.fullmatch(queue)):
            check.fail(f"{where}.queue", f"must be a queue's DeveloperName, got {queue!r}")
            queue = None
        if "fallback_user" in to and fallback is None and "fallback_user" in data.get("to", ()):
            check.fail(f"{where}.fallback_user", "is required when to names fallback_user")
        if "queue" in to and queue is None and "queue" in data.get("to", ()):
            check.fail(f"{where}.queue", "is required when to names queue")
        bulk_over = int(check.number(f"{where}.bulk_over", data.get("bulk_over"), d.bulk_over, 1, 10**6))
        return Reassign(objects, to, fallback, queue, bulk_over)

    def default_matching(self, options: Any) -> tuple[str, ...]:
        return ("link", *MATCHERS)

    def matching_problem(self, options: Any, precedence: Sequence[str]) -> tuple[str, str] | None:
        return None

    def check_grants(self, check: Checker, where: str, grants: Sequence[Grant]) -> None:
        """Permission sets by API name, permission set groups as ``group:<DeveloperName>``."""
        for i, grant in enumerate(grants):
            for j, name in enumerate(grant.entitlements):
                bare = name.removeprefix(PERMISSION_SET_GROUP)
                if not API_NAME.fullmatch(bare):
                    check.fail(
                        f"{where}[{i}].permission_sets[{j}]",
                        "must be a permission set's API name or group:<permission set group DeveloperName>, "
                        f"got {name!r}",
                    )

    def rules(self, section: TargetSection) -> Rules:
        return SalesforceRules(section)

    def settings_problem(self, section: TargetSection, settings: Settings) -> str | None:
        options: SalesforceOptions = section.options
        found = org_settings(settings, options.settings_prefix, section.name)
        return found if isinstance(found, str) else None

    def build(self, section: TargetSection, context: Any) -> Target:
        from shared.targets.salesforce.client import SalesforceClient
        from shared.targets.salesforce.target import SalesforceTarget

        options: SalesforceOptions = section.options
        org = org_settings(context.settings, options.settings_prefix, section.name)
        if isinstance(org, str):
            raise ValueError(org)  # settings_problem was asked before building
        gate = context.rate_gate(section.name)  # paced on Sforce-Limit-Info, shared by every instance
        client = context.client(
            section.name, lambda: SalesforceClient(org, gate, clock=context.clock, threads=options.threads,
                                                   timeout_s=options.timeout_s, name=section.name)
        )  # fmt: skip
        return SalesforceTarget(section, client, clock=context.clock, state=context.state, audit=context.audit)


SALESFORCE: Final = SalesforceKind()
