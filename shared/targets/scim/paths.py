"""SCIM attribute paths, as a mapping file names them, and how they read and write a resource.

The grammar is the part of RFC 7644's attribute notation (section 3.10) a provisioning client
writes, the one Entra ID's attribute mappings use too:

* ``userName``, ``displayName``, ``title``: a simple attribute of the core User schema;
* ``name.givenName``: a sub-attribute of a complex one;
* ``emails[type eq "work"].value``: the value of the multi-valued attribute's element of that
  type (created when the resource has none of it, with ``primary`` on the first one);
* ``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`` (and
  ``...:manager.value``): the enterprise extension (RFC 7643 section 4.3).

Attributes the sync owns are not mappable: ``externalId`` carries the Entra object id,
``active`` follows the deprovision policy, ``groups`` is read-only and ``password`` is never sent.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

CORE_USER: Final = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE: Final = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

SIMPLE: Final = frozenset(
    {"userName", "displayName", "nickName", "profileUrl", "title", "userType", "preferredLanguage", "locale",
     "timezone"}
)  # fmt: skip
COMPLEX: Final = {
    "name": frozenset({"formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix"})
}
MULTI: Final = {
    "emails": frozenset({"value", "display"}),
    "phoneNumbers": frozenset({"value", "display"}),
    "ims": frozenset({"value", "display"}),
    "photos": frozenset({"value", "display"}),
    "addresses": frozenset({"formatted", "streetAddress", "locality", "region", "postalCode", "country"}),
}
ENTERPRISE_SIMPLE: Final = frozenset({"employeeNumber", "costCenter", "organization", "division", "department"})
ENTERPRISE_COMPLEX: Final = {"manager": frozenset({"value"})}
OWNED: Final = {
    "externalId": "carries the Entra object id (the sync writes it)",
    "active": "follows the deprovision policy",
    "groups": "is read-only (group membership comes from the section's groups)",
    "password": "is never sent",
    "id": "is the server's",
    "meta": "is the server's",
}

_PATH: Final = re.compile(
    r"(?:(?P<urn>urn:ietf:params:scim:schemas:extension:enterprise:2\.0:User):)?"
    r"(?P<attr>[A-Za-z][A-Za-z0-9]*)"
    r'(?:\[type eq "(?P<type>[A-Za-z0-9_-]{1,40})"\])?'
    r"(?:\.(?P<sub>[A-Za-z][A-Za-z0-9]*))?"
)


@dataclass(frozen=True)
class Path:
    """One parsed path: ``extension`` (the enterprise URN or ""), attribute, element type, sub-attribute."""

    text: str
    extension: str
    attribute: str
    type: str = ""
    sub: str = ""

    @property
    def patch_path(self) -> str:
        """The path in a PATCH operation (RFC 7644 section 3.5.2): the same notation."""
        return self.text

    @property
    def element_path(self) -> str:
        """A typed element's own path (``emails[type eq "work"]``), to remove it whole."""
        prefix = f"{self.extension}:" if self.extension else ""
        return f'{prefix}{self.attribute}[type eq "{self.type}"]'


def parse(text: str) -> Path | str:
    """The path, or why it is not one the SCIM target can write."""
    m = _PATH.fullmatch(text or "")
    if m is None:
        return (
            f'{text!r} is not a SCIM attribute path (userName, name.givenName, emails[type eq "work"].value, '
            f"{ENTERPRISE}:department)"
        )
    urn, attr, kind, sub = m.group("urn") or "", m.group("attr"), m.group("type") or "", m.group("sub") or ""
    if urn:
        if attr in ENTERPRISE_SIMPLE and not kind and not sub:
            return Path(text, urn, attr)
        if attr in ENTERPRISE_COMPLEX and not kind and sub in ENTERPRISE_COMPLEX[attr]:
            return Path(text, urn, attr, sub=sub)
        known = sorted(ENTERPRISE_SIMPLE) + [f"{a}.{s}" for a, subs in ENTERPRISE_COMPLEX.items() for s in subs]
        return f"{text!r}: the enterprise extension has {', '.join(known)}"
    if attr in OWNED:
        return f"{text!r}: {attr} {OWNED[attr]}; it cannot be mapped"
    if attr in SIMPLE and not kind and not sub:
        return Path(text, "", attr)
    if attr in COMPLEX and not kind and sub in COMPLEX[attr]:
        return Path(text, "", attr, sub=sub)
    if attr in MULTI:
        if not kind or not sub or sub not in MULTI[attr]:
            subs = "/".join(sorted(MULTI[attr]))
            return f'{text!r}: a multi-valued attribute is written as {attr}[type eq "<type>"].<{subs}>'
        return Path(text, "", attr, kind, sub)
    return f"{text!r} is not an attribute of the SCIM core User schema or its enterprise extension"


def must(text: str) -> Path:
    path = parse(text)
    if isinstance(path, str):
        raise ValueError(path)
    return path


def _container(resource: Mapping[str, Any], path: Path) -> Mapping[str, Any] | None:
    if not path.extension:
        return resource
    ext = resource.get(path.extension)
    return ext if isinstance(ext, Mapping) else None


def _element(values: Any, kind: str) -> Mapping[str, Any] | None:
    if not isinstance(values, list):
        return None
    for value in values:
        if isinstance(value, Mapping) and str(value.get("type") or "").lower() == kind.lower():
            return value
    return None


def read(resource: Mapping[str, Any], path: Path) -> Any:
    """The resource's value at ``path``, or None."""
    holder = _container(resource, path)
    if holder is None:
        return None
    value = holder.get(path.attribute)
    if path.type:
        element = _element(value, path.type)
        return None if element is None else element.get(path.sub)
    if path.sub:
        return value.get(path.sub) if isinstance(value, Mapping) else None
    return value


def write(resource: dict[str, Any], path: Path, value: Any) -> None:
    """Set (or, for None, remove) the value at ``path`` in a resource dictionary, in place."""
    holder: dict[str, Any] = resource
    if path.extension:
        holder = resource.setdefault(path.extension, {})
        schemas = resource.setdefault("schemas", [CORE_USER])
        if path.extension not in schemas:
            schemas.append(path.extension)
    if path.type:
        values = holder.setdefault(path.attribute, [])
        element = _element(values, path.type)
        if element is None:
            if value is None:
                return
            values.append({"type": path.type, path.sub: value, **({"primary": True} if not values else {})})
            return
        assert isinstance(element, dict)
        if value is None:
            element.pop(path.sub, None)
            if not any(k for k in element if k not in {"type", "primary"}):
                values.remove(element)
        else:
            element[path.sub] = value
        return
    if path.sub:
        if value is None:
            inner = holder.get(path.attribute)
            if isinstance(inner, dict):
                inner.pop(path.sub, None)
            return
        holder.setdefault(path.attribute, {})[path.sub] = value
        return
    if value is None:
        holder.pop(path.attribute, None)
    else:
        holder[path.attribute] = value


def build(values: Mapping[Path, Any]) -> dict[str, Any]:
    """A new resource dictionary from path values (None values left out)."""
    resource: dict[str, Any] = {"schemas": [CORE_USER]}
    for path, value in values.items():
        if value is not None:
            write(resource, path, value)
    return resource


def merged(resource: Mapping[str, Any], changes: Mapping[Path, Any]) -> dict[str, Any]:
    """A copy of ``resource`` with ``changes`` written (for a PUT, which replaces the whole resource)."""
    out = copy.deepcopy(dict(resource))
    for path, value in changes.items():
        write(out, path, value)
    return out
