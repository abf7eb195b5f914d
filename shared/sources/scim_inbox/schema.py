"""What the inbound endpoint serves and tolerates: its resource types, its announced capabilities,
the Entra-tolerant scim2-models policy, the request normalisation scim2-models leaves to a server,
and the user attribute paths a mapping may name for this source.

Trusted for: every request body and query passes :func:`normalise_query` and
:func:`normalise_body` before scim2-server sees it, so the quirks listed in design.md ("SCIM 2.0 as
a server that Entra provisioning calls") that the library refuses are handled here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    InvalidFilterException,
    Pagination,
    Patch,
    ResourceType,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    User,
)

ENTERPRISE: Final = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# Entra's group create names this schema beside the core one; it carries no attribute we keep.
MICROSOFT_GROUP: Final = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
ENTRA_FLAG: Final = "aadoptscim062020"  # Entra's opt-in to the RFC-compliant PATCH (in the Tenant URL)

MAX_BODY_BYTES: Final = 256 * 1024  # a user or a group PATCH of a few hundred members fits easily
MAX_FILTER_CHARS: Final = 1024  # Entra's filters are one or two `eq` comparisons
MAX_PAGE: Final = 200  # page size cap (count above it is lowered, as RFC 7644 §3.4.2.4 allows)
DEFAULT_PAGE: Final = 100
MAX_MEMBERS_CHANGED: Final = 1000  # members one request may add or remove (Entra sends a few)

# Entra sends these (besides op, path and value) in different cases; scim2-models reads attribute
# names without case already.
POLICY: Final = ScimPolicy(
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,  # `Remove members` with a value list
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,  # `emails[type eq "work"].value`
)

CONFIG: Final = ServiceProviderConfig(
    documentation_uri=None,
    patch=Patch(supported=True),
    bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
    filter=Filter(supported=True, max_results=MAX_PAGE),
    change_password=ChangePassword(supported=False),
    sort=Sort(supported=False),
    etag=ETag(supported=True),
    pagination=Pagination(index=True, cursor=False, default_page_size=DEFAULT_PAGE, max_page_size=MAX_PAGE),
    authentication_schemes=[
        AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken,
            name="Bearer token",
            description="The long-lived Secret Token set in Entra provisioning's admin credentials",
            primary=True,
        )
    ],
)


def provider() -> ScimProvider:
    """Users (with the enterprise extension) and Groups, :data:`CONFIG` and :data:`POLICY`."""
    return ScimProvider(
        models=[User, EnterpriseUser, Group],
        resource_types=[
            ResourceType.from_resource(User[EnterpriseUser]),
            ResourceType.from_resource(Group),
        ],
        config=CONFIG,
        policy=POLICY,  # the provider's policy is what scim2-server's handler validates under
    )


# ------------------------------------------------------------------------------------------------
# Requests as Entra sends them
# ------------------------------------------------------------------------------------------------


def normalise_query(query: Mapping[str, str]) -> dict[str, str]:
    """The query without Entra's flag (any case), with the filter's length capped."""
    kept = {k: v for k, v in query.items() if k.casefold() != ENTRA_FLAG}
    for key, value in kept.items():
        if key.casefold() == "filter" and len(value) > MAX_FILTER_CHARS:
            raise InvalidFilterException(detail=f"a filter is limited to {MAX_FILTER_CHARS} characters")
    return kept


def normalise_body(body: Any) -> Any:
    """A request body with Entra's departures from what scim2-models accepts undone:

    - Microsoft's group schema URN dropped from ``schemas`` (any other unknown URN stays, and
      scim2-models refuses it);
    - the enterprise ``manager`` given as a bare id string, in a resource, a PATCH value at the
      manager's path, or a path-less PATCH value's URN-prefixed key, made ``{"value": id}``; and a
      manager without ``$ref`` (Entra sends none; scim2-models requires it) given the reference
      relative to the SCIM root (``Users/<id>``), which responses return as a URL.

    Anything that is not a JSON object is returned as it is: scim2-server refuses it.
    """
    if not isinstance(body, dict):
        return body
    out = dict(body)
    schemas = out.get("schemas")
    if isinstance(schemas, list):
        out["schemas"] = [s for s in schemas if not (isinstance(s, str) and s.casefold() == MICROSOFT_GROUP.casefold())]
    _manager_object(out)
    operations = next((v for k, v in out.items() if k.casefold() == "operations"), None)
    if isinstance(operations, list):
        for op in operations:
            if not isinstance(op, dict):
                continue
            path = next((v for k, v in op.items() if k.casefold() == "path"), None)
            value_key = next((k for k in op if k.casefold() == "value"), None)
            if value_key is None:
                continue
            if isinstance(path, str) and path.casefold() in {"manager", f"{ENTERPRISE}:manager".casefold()}:
                op[value_key] = _manager(op[value_key])
            elif path is None and isinstance(op[value_key], dict):
                value = dict(op[value_key])
                _manager_object(value)
                op[value_key] = value
    return out


def _manager(value: Any) -> Any:
    """A manager as scim2-models reads it: an object with ``value`` and ``$ref``."""
    if isinstance(value, str):
        value = {"value": value}
    if (
        isinstance(value, dict)
        and isinstance(value.get("value"), str)
        and not any(k.casefold() == "$ref" for k in value)
    ):
        value = {**value, "$ref": "Users/" + quote(value["value"], safe="")}
    return value


def _manager_object(obj: dict[str, Any]) -> None:
    """``manager`` made an object wherever ``obj`` carries it (in place)."""
    for key, value in list(obj.items()):
        folded = key.casefold()
        if folded == f"{ENTERPRISE}:manager".casefold():
            obj[key] = _manager(value)
        elif folded == ENTERPRISE.casefold() and isinstance(value, dict):
            obj[key] = {k: (_manager(v) if k.casefold() == "manager" else v) for k, v in value.items()}


# ------------------------------------------------------------------------------------------------
# What a mapping may name
# ------------------------------------------------------------------------------------------------

# The attribute paths of an inbound identity's ``attributes`` (what a mapping's ``source:`` may
# name): the SCIM core user's and the enterprise extension's, dotted for sub-attributes, with the
# multi-valued ones a mapping needs first of (``emails`` -> the primary or first work email).
PATHS: Final = frozenset(
    {
        "id", "externalId", "userName", "displayName", "nickName", "profileUrl", "title", "userType",
        "preferredLanguage", "locale", "timezone", "active",
        "name.formatted", "name.familyName", "name.givenName", "name.middleName",
        "name.honorificPrefix", "name.honorificSuffix",
        "emails.work", "emails.primary", "phoneNumbers.work", "phoneNumbers.mobile",
        "addresses.work.formatted", "addresses.work.streetAddress", "addresses.work.locality",
        "addresses.work.region", "addresses.work.postalCode", "addresses.work.country",
        "employeeNumber", "costCenter", "organization", "division", "department", "manager",
    }
)  # fmt: skip
