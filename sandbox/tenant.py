"""Deterministic, seeded Entra ID tenant data for the Graph emulator.

``build_tenant(users=..., groups=..., seed=...)`` returns the same tenant for the same arguments:
users with the attributes a sync maps (ids are GUIDs drawn from the seeded generator), a manager
tree, security groups (a couple nested into others), memberships (each member user in 1-4 groups)
and, on request, risk detections. It stays a plain loop over lists so 100,000 users build in
about a second.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DOMAIN = "sandbox.onmicrosoft.com"
#: Seeded timestamps are spread over the five years before this instant (UTC, epoch seconds).
ANCHOR_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z

# fmt: off
_FIRST = (
    "Ada", "Alan", "Amara", "Anika", "Aoife", "Ben", "Bruno", "Carla", "Chen", "Chidi", "Dana", "Diego", "Elena",
    "Emeka", "Farah", "Felix", "Grace", "Hana", "Hugo", "Ines", "Ivan", "Jamal", "Jana", "Kai", "Kenji", "Lara",
    "Leila", "Liam", "Maya", "Mateo", "Nadia", "Noah", "Olga", "Omar", "Priya", "Quinn", "Ravi", "Rosa", "Sami",
    "Sara", "Sean", "Sofia", "Tariq", "Tess", "Uma", "Viktor", "Wei", "Yara", "Yusuf", "Zoe",
)
_LAST = (
    "Abbott", "Adeyemi", "Bauer", "Becker", "Chen", "Costa", "D'Angelo", "Dubois", "Eriksen", "Fischer", "Garcia",
    "Gupta", "Haddad", "Hansen", "Ito", "Jensen", "Kim", "Kowalski", "Larsen", "Lopez", "Meyer", "Moreau",
    "Nakamura", "Novak", "Nwosu", "O'Brien", "O'Neill", "Okafor", "Patel", "Petrov", "Quinn", "Rossi", "Sato",
    "Schmidt", "Silva", "Singh", "Smith", "Tanaka", "Torres", "Ueda", "Vargas", "Wagner", "Walsh", "Weber", "Xu",
    "Yilmaz", "Zhang",
)
# fmt: on
_DEPARTMENTS = (
    "Engineering",
    "Finance",
    "Human Resources",
    "Legal",
    "Marketing",
    "Operations",
    "Sales",
    "Security",
    "Support",
)
_TITLES = ("Analyst", "Engineer", "Senior Engineer", "Manager", "Director", "Specialist", "Consultant", "Associate")
_PLACES = (
    ("Amsterdam", "Netherlands"),
    ("Austin", "United States"),
    ("Berlin", "Germany"),
    ("Dublin", "Ireland"),
    ("Lagos", "Nigeria"),
    ("London", "United Kingdom"),
    ("Madrid", "Spain"),
    ("Mumbai", "India"),
    ("Seattle", "United States"),
    ("Tokyo", "Japan"),
)
_GUEST_DOMAINS = ("fabrikam.com", "partner.example", "contractor.example", "gmail.com")
_GROUP_KINDS = ("Staff", "Admins", "Readers", "Contributors", "Project", "Oncall", "Leads")
_RISK_EVENTS = (
    "unfamiliarFeatures",
    "anonymizedIPAddress",
    "maliciousIPAddress",
    "leakedCredentials",
    "impossibleTravel",
    "passwordSpray",
)
_RISK_LEVELS = ("low", "medium", "high")


@dataclass
class Tenant:
    domain: str
    users: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    managers: dict[str, str]  # user id -> manager's user id
    memberships: dict[str, list[str]]  # group id -> member user ids, in insertion order
    nested_groups: dict[str, list[str]]  # parent group id -> child group ids
    risk_detections: list[dict[str, Any]] = field(default_factory=list)


def new_guid(rng: random.Random) -> str:
    """A version-4 GUID drawn from ``rng`` (deterministic for a seeded generator)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def iso_utc(epoch: float) -> str:
    """Graph's DateTimeOffset rendering, second precision: ``2026-01-01T00:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _ascii_local(name: str) -> str:
    return name.lower().replace(" ", "")


def build_tenant(
    users: int,
    groups: int,
    seed: int = 0,
    *,
    domain: str = DEFAULT_DOMAIN,
    disabled_rate: float = 0.05,
    guest_rate: float = 0.03,
    member_rate: float = 0.9,
    nested_groups: int = 2,
    risk_detections: int = 0,
) -> Tenant:
    """Build a tenant; the same arguments always give identical data."""
    if users < 0 or groups < 0:
        raise ValueError("users and groups must not be negative")
    rng = random.Random(seed)
    rand = rng.random
    randrange = rng.randrange
    choice = rng.choice
    span = 5 * 365 * 86400

    user_list: list[dict[str, Any]] = []
    managers: dict[str, str] = {}
    taken: set[str] = set()
    for i in range(users):
        uid = new_guid(rng)
        first = choice(_FIRST)
        last = choice(_LAST)
        city, country = choice(_PLACES)
        guest = rand() < guest_rate
        local = f"{_ascii_local(first)}.{_ascii_local(last)}"
        if local in taken:
            local = f"{local}{i}"
        taken.add(local)
        if guest:
            external = f"{local}@{choice(_GUEST_DOMAINS)}"
            upn = f"{external.replace('@', '_')}#EXT#@{domain}"
            mail = external
        else:
            upn = f"{local}@{domain}"
            mail = upn
        department = choice(_DEPARTMENTS)
        user_list.append(
            {
                "id": uid,
                "displayName": f"{first} {last}",
                "givenName": first,
                "surname": last,
                "userPrincipalName": upn,
                "mail": mail,
                "mailNickname": local.replace("'", ""),
                "department": department,
                "jobTitle": choice(_TITLES),
                "officeLocation": f"{city} {randrange(1, 9)}",
                "mobilePhone": f"+1 555 {randrange(1000000):07d}",
                "businessPhones": [f"+1 425 {randrange(1000000):07d}"],
                "employeeId": None if guest else f"E{100000 + i}",
                "companyName": None if guest else "Sandbox Corp",
                "city": city,
                "country": country,
                "accountEnabled": rand() >= disabled_rate,
                "userType": "Guest" if guest else "Member",
                "createdDateTime": iso_utc(ANCHOR_EPOCH - span + randrange(span)),
                "preferredLanguage": "en-US",
            }
        )
        if i > 0:
            # A tree: every user but the first reports to someone created before them, mostly to
            # the early (senior) users so the tree stays shallow.
            managers[uid] = user_list[randrange(max(1, i // 16 + 1))]["id"]

    group_list: list[dict[str, Any]] = []
    for g in range(groups):
        department = _DEPARTMENTS[g % len(_DEPARTMENTS)]
        kind = _GROUP_KINDS[(g // len(_DEPARTMENTS)) % len(_GROUP_KINDS)]
        name = f"{department} {kind} {g}"
        group_list.append(
            {
                "id": new_guid(rng),
                "displayName": name,
                "mailNickname": name.lower().replace(" ", "-"),
                "description": f"{kind} of {department}",
                "securityEnabled": True,
                "mailEnabled": False,
                "groupTypes": [],
                "createdDateTime": iso_utc(ANCHOR_EPOCH - span + randrange(span)),
                "visibility": None,
            }
        )

    memberships: dict[str, list[str]] = {grp["id"]: [] for grp in group_list}
    if group_list:
        group_ids = [grp["id"] for grp in group_list]
        most = min(4, len(group_ids))
        for user in user_list:
            if rand() >= member_rate:
                continue
            for gid in rng.sample(group_ids, randrange(1, most + 1)):
                memberships[gid].append(user["id"])

    nested: dict[str, list[str]] = {}
    # The child always comes after its parent in the list, so nesting cannot form a cycle.
    for n in range(min(nested_groups, max(0, groups - 1))):
        parent = group_list[n]["id"]
        child = group_list[randrange(n + 1, groups)]["id"]
        if child not in nested.setdefault(parent, []):
            nested[parent].append(child)

    detections: list[dict[str, Any]] = []
    for _ in range(risk_detections if user_list else 0):
        user = choice(user_list)
        detected = ANCHOR_EPOCH - randrange(30 * 86400)
        detections.append(
            risk_detection(
                new_guid(rng),
                user,
                level=choice(_RISK_LEVELS),
                event_type=choice(_RISK_EVENTS),
                detected_epoch=detected,
                ip_address=f"203.0.113.{randrange(1, 255)}",
            )
        )

    return Tenant(domain, user_list, group_list, managers, memberships, nested, detections)


def risk_detection(
    detection_id: str,
    user: dict[str, Any],
    *,
    level: str,
    event_type: str,
    detected_epoch: float,
    ip_address: str,
) -> dict[str, Any]:
    """A riskDetection in Graph's v1.0 shape for ``user``."""
    at = iso_utc(detected_epoch)
    return {
        "id": detection_id,
        "requestId": None,
        "correlationId": None,
        "riskEventType": event_type,
        "riskState": "atRisk",
        "riskLevel": level,
        "riskDetail": "none",
        "source": "IdentityProtection",
        "detectionTimingType": "offline" if event_type == "leakedCredentials" else "realtime",
        "activity": "user" if event_type == "leakedCredentials" else "signin",
        "tokenIssuerType": "AzureAD",
        "ipAddress": ip_address,
        "location": {"city": user.get("city"), "countryOrRegion": user.get("country")},
        "activityDateTime": at,
        "detectedDateTime": at,
        "lastUpdatedDateTime": at,
        "userId": user["id"],
        "userDisplayName": user.get("displayName"),
        "userPrincipalName": user.get("userPrincipalName"),
        "additionalInfo": "[]",
    }
