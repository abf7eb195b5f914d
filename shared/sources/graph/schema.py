"""The Microsoft Graph v1.0 ``user`` properties a mapping may read.

A mapping source Graph does not have fails late and widely: Graph refuses a ``$select`` that names
it, so every read of a user fails, and where it is not refused (the sandbox) it reads as empty, so
every account looks as if the field had been cleared. So start-up validation checks each path
against this catalogue and suggests the nearest known name.

The catalogue is the structural properties of the v1.0 ``user`` resource (navigation properties
such as ``memberOf`` or ``photo`` are not properties a ``$select`` returns), as Microsoft's
reference documents them, with the shapes that matter for a path:

- a single value or a list of values (text, boolean, date): nothing below it;
- a complex value whose members are documented (``employeeOrgData.costCenter``): one level below;
- an open complex value whose members each tenant defines (``customSecurityAttributes``);
- a list of complex values (``identities``): a path into a list reads nothing, so only the whole
  property can be mapped.

``List users`` refuses some properties (501 Not Implemented) because Graph returns them only for one
user at a time; reconciliation and backfill list users, so those are refused here too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from shared.mapping.check import nearest

VALUE: Final = "value"  # a single value or a list of values
COMPLEX: Final = "complex"  # members listed in COMPLEX_MEMBERS
OPEN: Final = "open"  # members defined by the tenant
OBJECT_LIST: Final = "object list"  # a collection of complex values

_VALUES: Final = (
    "accountEnabled",
    "ageGroup",
    "businessPhones",
    "city",
    "companyName",
    "consentProvidedForMinor",
    "country",
    "createdDateTime",
    "creationType",
    "deletedDateTime",
    "department",
    "displayName",
    "employeeHireDate",
    "employeeId",
    "employeeLeaveDateTime",  # needs the User-LifeCycleInfo.Read.All permission
    "employeeType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "faxNumber",
    "givenName",
    "id",
    "imAddresses",
    "isManagementRestricted",
    "isResourceAccount",
    "jobTitle",
    "lastPasswordChangeDateTime",
    "legalAgeGroupClassification",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "passwordPolicies",
    "postalCode",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "securityIdentifier",
    "showInAddressList",
    "signInSessionsValidFromDateTime",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
)

COMPLEX_MEMBERS: Final[dict[str, frozenset[str]]] = {
    "authorizationInfo": frozenset({"certificateUserIds"}),
    "employeeOrgData": frozenset({"costCenter", "division"}),
    "onPremisesExtensionAttributes": frozenset(f"extensionAttribute{n}" for n in range(1, 16)),
    "passwordProfile": frozenset({"forceChangePasswordNextSignIn", "forceChangePasswordNextSignInWithMfa"}),
    # Needs the AuditLog.Read.All permission and an Entra ID P1 or P2 licence.
    "signInActivity": frozenset(
        {
            "lastNonInteractiveSignInDateTime",
            "lastNonInteractiveSignInRequestId",
            "lastSignInDateTime",
            "lastSignInRequestId",
            "lastSuccessfulSignInDateTime",
            "lastSuccessfulSignInRequestId",
        }
    ),
}

_OBJECT_LISTS: Final = (
    "assignedLicenses",
    "assignedPlans",
    "identities",
    "licenseAssignmentStates",
    "onPremisesProvisioningErrors",
    "provisionedPlans",
    "serviceProvisioningErrors",
)

USER_PROPERTIES: Final[dict[str, str]] = {
    **dict.fromkeys(_VALUES, VALUE),
    **dict.fromkeys(COMPLEX_MEMBERS, COMPLEX),
    # Needs the CustomSecAttributeAssignment.Read.All permission; paths are <attribute set>.<attribute>.
    "customSecurityAttributes": OPEN,
    **dict.fromkeys(_OBJECT_LISTS, OBJECT_LIST),
}

# Graph returns these only when reading one user; ``GET /users?$select=`` answers 501 for them.
SINGLE_USER_ONLY: Final = frozenset(
    {
        "aboutMe",
        "birthday",
        "hireDate",
        "interests",
        "mailboxSettings",
        "mySite",
        "pastProjects",
        "preferredName",
        "responsibilities",
        "schools",
        "skills",
    }
)

# What GraphSource expands of a user's manager (``$expand=manager($select=...)``).
MANAGER_PROPERTIES: Final = ("id", "displayName", "mail", "userPrincipalName")

# Directory (schema) extension properties registered by an application:
# extension_<the application's client id without dashes>_<name>.
DIRECTORY_EXTENSION: Final = re.compile(r"extension_[0-9A-Fa-f]{32}_[A-Za-z0-9_]+")
_EXTENSION_FORM: Final = "extension_<application (client) id without dashes, 32 hex digits>_<name>"


def enabled(user: Mapping[str, Any]) -> bool:
    """Whether a Graph user can sign in (``accountEnabled``; a user read without it counts as enabled)."""
    return user.get("accountEnabled") is not False


def user_path_problem(path: str) -> str | None:
    """What is wrong with reading ``path`` (``department``, ``manager.mail``,
    ``employeeOrgData.costCenter``) from a Graph user, or ``None`` when Graph has it."""
    head, _, rest = path.partition(".")
    if head == "manager":
        if not rest:
            return f"'manager' is an object: name one of its properties ({_listed(MANAGER_PROPERTIES)})"
        return _member_problem("manager", rest, MANAGER_PROPERTIES, "entra-sync reads these of a manager")
    if DIRECTORY_EXTENSION.fullmatch(head):
        return f"{path!r}: a directory extension holds a value, it has no property {rest!r}" if rest else None
    if head in SINGLE_USER_ONLY:
        return (
            f"{head!r} cannot be read for a list of users (Graph answers 501 Not Implemented), and "
            "reconciliation and backfill list users: map another property"
        )
    shape = USER_PROPERTIES.get(head)
    if shape is None:
        return _unknown(head)
    if not rest or shape == OPEN:
        return None
    if shape == COMPLEX:
        return _member_problem(head, rest, COMPLEX_MEMBERS[head], f"the members of {head}")
    if shape == OBJECT_LIST:
        return f"{head!r} is a list of objects: a path into it reads nothing (map {head!r} itself)"
    return f"{head!r} is a single value (or a list of values): it has no property {rest!r}"


def _unknown(head: str) -> str:
    known = [*USER_PROPERTIES, *SINGLE_USER_ONLY, "manager"]
    if head.lower().startswith("extension_"):
        return f"{head!r} is not a directory extension property name, which has the form {_EXTENSION_FORM}"
    message = f"{head!r} is not a Microsoft Graph v1.0 user property"
    suggestion = nearest(head, known)
    if suggestion:
        return f"{message}; did you mean {suggestion!r}?"
    return f"{message} (see the user resource in the Graph v1.0 reference; directory extensions: {_EXTENSION_FORM})"


def _member_problem(owner: str, rest: str, members: Iterable[str], which: str) -> str | None:
    name, _, deeper = rest.partition(".")
    members = sorted(members)
    if name in members:
        return f"'{owner}.{name}' is a single value: it has no property {deeper!r}" if deeper else None
    suggestion = nearest(name, members)
    hint = f"did you mean '{owner}.{suggestion}'?" if suggestion else f"{which}: {_listed(members)}"
    return f"{owner!r} has no property {name!r}; {hint}"


def _listed(names: Iterable[str]) -> str:
    return ", ".join(names)
