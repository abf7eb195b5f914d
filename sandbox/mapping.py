"""The mapping file the demo, the benchmarks and the integration tests run with: the usual
attributes and a group-to-role table over a seeded tenant's groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

ATTRIBUTES = """attributes:
  - {source: mail, target: email, transforms: [trim, lower]}
  - {target: email_verified, transforms: [{constant: true}]}
  - {source: displayName, target: name}
  - {source: givenName, target: given_name}
  - {source: surname, target: family_name}
  - DEPARTMENT
  - {source: jobTitle, target: user_metadata.job_title}
  - {source: employeeId, target: app_metadata.employee_id}
  - {source: manager.id, target: app_metadata.manager_object_id}
"""


def _department(default: str | None) -> str:
    """The Auth0 department entry, with a default for users who have none when ``default`` is set."""
    transforms = f", transforms: [{{default: {default}}}]" if default else ""
    return "{source: department, target: user_metadata.department" + transforms + "}"


def sandbox_mapping(
    grants: Sequence[tuple[str, Sequence[str]]],
    *,
    scope: str = "{user_types: [Member]}",
    matching: str = "",
    deprovision: str = "{action: block, hard_delete: delete, revoke_sessions: true, revoke_refresh_tokens: true}",
    department_default: str | None = None,
    extra: str = "",
) -> str:
    """A mapping file's text. ``grants``: (group object id, role names) pairs, in order."""
    department = _department(department_default)
    roles = "".join(f"  - {{group: {group}, roles: [{', '.join(names)}]}}\n" for group, names in grants)
    lines = [
        "version: 1",
        "target: {connection: Username-Password-Authentication}",
        f"scope: {scope}",
        *([f"matching: {matching}"] if matching else []),
        ATTRIBUTES.replace("DEPARTMENT", department).rstrip("\n"),
        "roles:",
        roles.rstrip("\n"),
        f"deprovision: {deprovision}",
        extra,
    ]
    return "\n".join(lines) + "\n"


def three_role_grants(groups: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Staff -> Employee; Sales -> Sales Reader and Writer; a third group -> Sales Reader."""
    return [(groups[0], ["Employee"]), (groups[1], ["Sales Reader", "Sales Writer"]), (groups[2], ["Sales Reader"])]


def sandbox_mapping_v2(
    grants: Sequence[tuple[str, Sequence[str]]],
    *,
    scope: str = "{user_types: [Member]}",
    deprovision: str = "{action: block, hard_delete: delete, revoke_sessions: true, revoke_refresh_tokens: true}",
    matching: str = "",
    department_default: str | None = None,
    others: str = "",
    extra: str = "",
) -> str:
    """A version 2 file: the same Auth0 target as :func:`sandbox_mapping`, under ``targets.auth0``,
    and ``others``: more target sections (YAML, indented two spaces under ``targets``)."""
    department = _department(department_default)
    attributes = ATTRIBUTES.replace("DEPARTMENT", department).replace("attributes:\n", "")
    roles = "".join(f"      - {{group: {group}, roles: [{', '.join(names)}]}}\n" for group, names in grants)
    lines = [
        "version: 2",
        f"scope: {scope}",
        "targets:",
        "  auth0:",
        "    connection: Username-Password-Authentication",
        "    attributes:",
        "".join(f"    {line}\n" for line in attributes.strip("\n").split("\n")).rstrip("\n"),
        "    roles:",
        roles.rstrip("\n"),
        f"    deprovision: {deprovision}",
        f"    matching: {matching}" if matching else "",
        others.rstrip("\n"),
        extra,
    ]
    return "\n".join(line for line in lines if line) + "\n"


ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def scim_section(
    base_url: str,
    groups: Sequence[tuple[str, str]],
    *,
    name: str = "crm",
    deprovision: str = "{action: disable, hard_delete: delete}",
    extra: str = "",
) -> str:
    """A ``scim:<name>`` target section (for ``others`` of :func:`sandbox_mapping_v2`): the core User
    and enterprise attributes, ``groups`` as (group object id, SCIM group name) pairs, the token in
    ``SCIM_<NAME>_TOKEN``; ``extra``: more keys of the section (YAML, unindented)."""
    pushed = "".join(f"      - {{group: {group}, groups: [{scim}]}}\n" for group, scim in groups)
    return (
        f"  scim:{name}:\n"
        f"    base_url: {base_url}\n"
        f"    token_setting: SCIM_{name.upper()}_TOKEN\n"
        "    attributes:\n"
        "      - {source: userPrincipalName, target: userName}\n"
        "      - {source: mail, target: 'emails[type eq \"work\"].value', transforms: [trim, lower]}\n"
        "      - {source: givenName, target: name.givenName}\n"
        "      - {source: surname, target: name.familyName}\n"
        "      - {source: displayName, target: displayName}\n"
        "      - {source: jobTitle, target: title}\n"
        f"      - {{source: employeeId, target: '{ENTERPRISE}:employeeNumber'}}\n"
        f"      - {{source: department, target: '{ENTERPRISE}:department'}}\n"
        "    groups:\n"
        f"{pushed}"
        f"    deprovision: {deprovision}\n" + "".join(f"    {line}\n" for line in extra.splitlines())
    )


# A Salesforce section's mapped User fields (YAML, indented for a section under ``targets``).
SALESFORCE_ATTRIBUTES: Final = (
    "    attributes:\n"
    "      - {source: mail, target: Email, transforms: [trim, lower]}\n"
    "      - {source: givenName, target: FirstName}\n"
    "      - {source: surname, target: LastName}\n"
    "      - {source: jobTitle, target: Title}\n"
    "      - {source: department, target: Department}\n"
    "      - {source: employeeId, target: EmployeeNumber}\n"
)


def salesforce_section(sales: str, support: str, staff: str) -> str:
    """A ``salesforce`` target section (for ``others`` of :func:`sandbox_mapping_v2`) for the
    members of ``sales`` or ``support``: a profile, a role and permission sets from their groups,
    the manager mapped, and a leaver's open records to the manager or the queue ``Unassigned``;
    settings in ``SALESFORCE_*`` (see :data:`SALESFORCE_SEED` for the org it expects)."""
    return (
        "  salesforce:\n" + SALESFORCE_ATTRIBUTES + "      - {source: manager.id, target: Manager}\n"
        f"    scope: {{groups: [{sales}, {support}]}}\n"
        "    default_profile: Standard User\n"
        "    profiles:\n"
        f"      - {{group: {sales}, profile: Sales User}}\n"
        "    roles:\n"
        f"      - {{group: {sales}, role: Sales Rep}}\n"
        f"      - {{group: {support}, role: Support Agent}}\n"
        "    permission_sets:\n"
        f"      - {{group: {staff}, permission_sets: [Chatter_Access]}}\n"
        f"      - {{group: {sales}, permission_sets: [Sales_Cloud_User]}}\n"
        f"      - {{group: {support}, permission_sets: [Service_Cloud_User]}}\n"
        "    reassign: {objects: [Opportunity, Lead, Case], to: [manager, queue], queue: Unassigned}\n"
    )


# The org :func:`salesforce_section` expects (the emulator's ``seed``).
SALESFORCE_SEED: Final[dict[str, Any]] = {
    "licenses": [{"name": "Salesforce", "total": 5000}],
    "profiles": [{"name": "Sales User", "license": "Salesforce"}],
    "roles": [{"name": "Sales Rep"}, {"name": "Support Agent"}],
    "permission_sets": [{"name": n, "label": n.replace("_", " ")}
                        for n in ("Chatter_Access", "Sales_Cloud_User", "Service_Cloud_User")],
    "queues": [{"name": "Unassigned", "sobjects": ["Lead", "Case"]}],
}  # fmt: skip


INBOUND_SOURCE = "hr-push"


def inbound_sources(source: str = INBOUND_SOURCE) -> str:
    """The ``sources`` key of a version 2 file (for ``extra`` of :func:`sandbox_mapping_v2`): the
    tenant's own ``entra`` source and the inbound SCIM endpoint ``source``, whose token is in
    ``SCIM_INBOX_<SOURCE>_TOKEN``."""
    return f"sources:\n  entra: {{}}\n  {source}: {{kind: scim_inbox}}\n"


def inbound_sections(
    scim_url: str,
    grants: Sequence[tuple[str, Sequence[str], Sequence[str]]],
    *,
    source: str = INBOUND_SOURCE,
    auth0: str = "auth0",
    scim: str = "crm",
    token_setting: str = "SCIM_CRM_TOKEN",
    auth0_deprovision: str = "{action: block, hard_delete: delete}",
    scim_deprovision: str = "{action: disable, hard_delete: delete}",
    auth0_matching: str = "",
    extra: str = "",
) -> str:
    """Two target sections (for ``others`` of :func:`sandbox_mapping_v2`, or a file's ``targets``) fed
    by the inbound source ``source``: the Auth0 target ``auth0`` and the SCIM application
    ``scim:<scim>`` at ``scim_url`` (its token in ``token_setting``). Their attributes read SCIM
    paths; ``grants`` are (pushed group displayName, Auth0 roles, SCIM groups) triples (either may
    be empty). ``auth0_matching``: the Auth0 section's ``matching`` (YAML flow), e.g. its own
    ``app_metadata_key`` where another Auth0 target stamps accounts in the same tenant; ``extra``: a
    key both sections get (YAML flow, one line), such as a ``guard``."""
    roles = "".join(f"      - {{group: {g}, roles: [{', '.join(rs)}]}}\n" for g, rs, _ in grants if rs)
    groups = "".join(f"      - {{group: {g}, groups: [{', '.join(gs)}]}}\n" for g, _, gs in grants if gs)
    more = f"    {extra}\n" if extra else ""
    return (
        f"  {auth0}:\n"
        f"    source: {source}\n"
        "    connection: Username-Password-Authentication\n"
        "    attributes:\n"
        "      - {source: emails.work, target: email, transforms: [trim, lower]}\n"
        "      - {target: email_verified, transforms: [{constant: true}]}\n"
        "      - {source: displayName, target: name}\n"
        "      - {source: name.givenName, target: given_name}\n"
        "      - {source: name.familyName, target: family_name}\n"
        "      - {source: department, target: user_metadata.department}\n"
        "      - {source: externalId, target: app_metadata.external_id}\n"
        f"    roles:\n{roles}"
        f"    deprovision: {auth0_deprovision}\n"
        + (f"    matching: {auth0_matching}\n" if auth0_matching else "")
        + more
        + f"  scim:{scim}:\n"
        f"    source: {source}\n"
        f"    base_url: {scim_url}\n"
        f"    token_setting: {token_setting}\n"
        "    attributes:\n"
        "      - {source: userName, target: userName}\n"
        "      - {source: emails.work, target: 'emails[type eq \"work\"].value', transforms: [trim, lower]}\n"
        "      - {source: name.givenName, target: name.givenName}\n"
        "      - {source: name.familyName, target: name.familyName}\n"
        "      - {source: displayName, target: displayName}\n"
        f"      - {{source: department, target: '{ENTERPRISE}:department'}}\n"
        f"    groups:\n{groups}"
        f"    deprovision: {scim_deprovision}\n" + more
    )
