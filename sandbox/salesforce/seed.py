"""Seeding an emulated org from a plain spec (the ``/_control/seed`` body).

Every org starts with the ``Salesforce`` UserLicense (``DEFAULT_LICENSES`` licences), the
``System Administrator`` and ``Standard User`` profiles and the integration user
(``integration@sandbox.example.com``, the API user: the default owner of new records). A spec adds::

    {"licenses": [{"name": "Salesforce", "total": 10}],
     "profiles": [{"name": "Sales User", "license": "Salesforce"}],
     "roles": [{"name": "West", "parent": "Sales"}],
     "permission_sets": [{"name": "Sales_Ops", "label": "Sales Ops"}],
     "permission_set_groups": [{"name": "Sales_Bundle", "label": "Sales Bundle"}],
     "queues": [{"name": "Leavers", "sobjects": ["Lead", "Case"]}],
     "users": [{"Username": "a@x.example", "profile": "Sales User", "role": "West",
                "manager": "b@x.example", "permission_sets": ["Sales_Ops"], "frozen": false,
                "blockers": ["default_case_owner"], "IsActive": true, ...any User field}],
     "records": {"Opportunity": [{"Name": "Big deal", "owner": "a@x.example", ...}]},
     "generate": [{"type": "Opportunity", "count": 3000, "owner": "a@x.example", "closed": 10}],
     "other_org_usernames": ["taken@elsewhere.example"]}

Names are resolved in that order, so users may name profiles, roles and sets of the same spec, and
records may name users (``owner`` is a username or a queue name). Writes go through the org's rules
as trusted writes (a seed may set read-only fields such as ``Lead.IsConverted``), so a spec that
breaks a rule (a licence that does not suffice) fails with that rule's error.
"""

from __future__ import annotations

from typing import Any

from .org import Org

DEFAULT_LICENSES = 1000
INTEGRATION_USERNAME = "integration@sandbox.example.com"
USER_DEFAULTS = {
    "TimeZoneSidKey": "America/Los_Angeles",
    "LocaleSidKey": "en_US",
    "EmailEncodingKey": "UTF-8",
    "LanguageLocaleKey": "en_US",
}
_GENERATED: dict[str, dict[str, str]] = {
    "Account": {"Name": "Account {n}"},
    "Contact": {"LastName": "Contact {n}"},
    "Opportunity": {"Name": "Opportunity {n}", "StageName": "Prospecting", "CloseDate": "2027-03-31"},
    "Lead": {"LastName": "Lead {n}", "Company": "Company {n}"},
    "Case": {"Subject": "Case {n}"},
}
_CLOSED: dict[str, dict[str, Any]] = {
    "Opportunity": {"StageName": "Closed Won"},
    "Case": {"Status": "Closed"},
    "Lead": {"IsConverted": True},
}


def _by_name(org: Org, sobject: str, field_name: str) -> dict[str, str]:
    return {str(r[field_name]): str(r["Id"]) for r in org.records[sobject].values() if r.get(field_name)}


def seed_org(org: Org, spec: dict[str, Any]) -> dict[str, Any]:
    """Add what ``spec`` names to ``org`` (the defaults first, when the org is empty)."""
    if not org.records["UserLicense"]:
        _defaults(org)
    for lic in spec.get("licenses", []):
        found = _by_name(org, "UserLicense", "Name").get(lic["name"])
        if found is None:
            org.create(
                "UserLicense",
                {
                    "Name": lic["name"],
                    "MasterLabel": lic["name"],
                    "TotalLicenses": int(lic["total"]),
                    "UsedLicenses": 0,
                    "Status": "Active",
                    "LicenseDefinitionKey": lic["name"].upper().replace(" ", "_"),
                },
                trusted=True,
            )
        else:
            org.update("UserLicense", found, {"TotalLicenses": int(lic["total"])}, trusted=True)
    licences = _by_name(org, "UserLicense", "Name")
    for profile in spec.get("profiles", []):
        org.create(
            "Profile", {"Name": profile["name"], "UserLicenseId": licences[profile.get("license", "Salesforce")]}
        )
    for role in spec.get("roles", []):
        parent = _by_name(org, "UserRole", "Name").get(role.get("parent", ""))
        org.create(
            "UserRole", {"Name": role["name"], "DeveloperName": _developer(role["name"]), "ParentRoleId": parent}
        )
    for ps in spec.get("permission_sets", []):
        org.create("PermissionSet", {"Name": ps["name"], "Label": ps.get("label", ps["name"])})
    for psg in spec.get("permission_set_groups", []):
        org.create("PermissionSetGroup", {"DeveloperName": psg["name"], "MasterLabel": psg.get("label", psg["name"])})
    for queue in spec.get("queues", []):
        queue_id = org.create(
            "Group", {"Name": queue["name"], "DeveloperName": _developer(queue["name"]), "Type": "Queue"}
        )
        for sobject in queue.get("sobjects", ["Lead", "Case"]):
            org.create("QueueSobject", {"QueueId": queue_id, "SobjectType": sobject})
    org.add_other_org_usernames(list(spec.get("other_org_usernames", [])))
    _seed_users(org, spec.get("users", []))
    owners = {**_by_name(org, "User", "Username"), **_by_name(org, "Group", "Name")}
    created: dict[str, list[str]] = {}
    for sobject, rows in spec.get("records", {}).items():
        for row in rows:
            row_values = {k: v for k, v in row.items() if k != "owner"}
            if "owner" in row:
                row_values["OwnerId"] = owners[row["owner"].lower() if "@" in row["owner"] else row["owner"]]
            created.setdefault(sobject, []).append(org.create(sobject, row_values, trusted=True))
    for gen in spec.get("generate", []):
        sobject, closed = gen["type"], int(gen.get("closed", 0))
        owner = gen.get("owner")
        for n in range(int(gen["count"])):
            values: dict[str, Any] = {k: v.format(n=n) for k, v in _GENERATED[sobject].items()}
            if n < closed:
                values.update(_CLOSED.get(sobject, {}))
            if owner:
                values["OwnerId"] = owners[owner.lower() if "@" in owner else owner]
            created.setdefault(sobject, []).append(org.create(sobject, values, trusted=True))
    return {
        "licenses": _by_name(org, "UserLicense", "Name"),
        "profiles": _by_name(org, "Profile", "Name"),
        "roles": _by_name(org, "UserRole", "Name"),
        "permission_sets": {
            r["Name"]: r["Id"] for r in org.records["PermissionSet"].values() if r.get("Type") == "Regular"
        },
        "permission_set_groups": _by_name(org, "PermissionSetGroup", "DeveloperName"),
        "queues": {r["Name"]: r["Id"] for r in org.records["Group"].values() if r.get("Type") == "Queue"},
        "users": _by_name(org, "User", "Username"),
        "records": {k: len(v) for k, v in created.items()},
        "integration_user_id": org.integration_user_id,
    }


def _defaults(org: Org) -> None:
    licence = org.create(
        "UserLicense",
        {
            "Name": "Salesforce",
            "MasterLabel": "Salesforce",
            "TotalLicenses": DEFAULT_LICENSES,
            "UsedLicenses": 0,
            "Status": "Active",
            "LicenseDefinitionKey": "SFDC",
        },
        trusted=True,
    )
    org.create("Profile", {"Name": "System Administrator", "UserLicenseId": licence})
    org.create("Profile", {"Name": "Standard User", "UserLicenseId": licence})
    org.integration_user_id = _user(
        org, {"Username": INTEGRATION_USERNAME, "LastName": "Integration", "profile": "System Administrator"}
    )


def _user(org: Org, spec: dict[str, Any]) -> str:
    profiles = _by_name(org, "Profile", "Name")
    username = spec["Username"]
    values = {k: v for k, v in spec.items() if k[0].isupper() and k not in {"ManagerId", "Approver__c"}}
    values = {**USER_DEFAULTS, **values}
    values.setdefault("Email", username)
    values.setdefault("LastName", username.split("@")[0])
    values.setdefault("Alias", username.split("@")[0][:8])
    values["ProfileId"] = profiles[spec.get("profile", "Standard User")]
    if spec.get("role"):
        values["UserRoleId"] = _by_name(org, "UserRole", "Name")[spec["role"]]
    return org.create("User", values, trusted=True)


def _seed_users(org: Org, users: list[dict[str, Any]]) -> None:
    ids = {spec["Username"].lower(): _user(org, spec) for spec in users}
    sets = _by_name(org, "PermissionSet", "Name")
    groups = _by_name(org, "PermissionSetGroup", "DeveloperName")
    every = _by_name(org, "User", "Username")
    for spec in users:
        user_id = ids[spec["Username"].lower()]
        links = {
            field_name: every[spec[key].lower()]
            for key, field_name in (("manager", "ManagerId"), ("approver", "Approver__c"))
            if spec.get(key)
        }
        if links:
            org.update("User", user_id, links, trusted=True)
        for name in spec.get("permission_sets", []):
            org.create("PermissionSetAssignment", {"AssigneeId": user_id, "PermissionSetId": sets[name]})
        for name in spec.get("permission_set_groups", []):
            org.create("PermissionSetAssignment", {"AssigneeId": user_id, "PermissionSetGroupId": groups[name]})
        if spec.get("frozen"):
            login = next(iter(org.lookup("UserLogin", "UserId", user_id)))
            org.update("UserLogin", login, {"IsFrozen": True})
        if spec.get("blockers"):
            org.set_blockers(user_id, list(spec["blockers"]))


def _developer(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "X"
