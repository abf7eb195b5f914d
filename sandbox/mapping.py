"""The mapping file the demo, the benchmarks and the integration tests run with: the usual
attributes and a group-to-role table over a seeded tenant's groups."""

from __future__ import annotations

from collections.abc import Sequence

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
