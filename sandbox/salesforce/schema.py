"""The sObjects the Salesforce emulator serves: their fields, key prefixes and error shape.

Facts from Salesforce's object reference, reduced to what the entra-sync target touches. Field
names are canonical (Salesforce matches them case-insensitively: :meth:`SObjectType.field` does
the same). Ids are 18 characters: the 3-character key prefix of the type, 12 more, and the
3-character case-safe suffix Salesforce computes from the first 15 (:func:`with_suffix`), so a
15-character id names the same record.

What it may be trusted for: which fields exist, which are required on create, read-only,
references (and to what), unique, external ids, and their maximum lengths. Not modelled: field
level security, record types, picklist values (other than the few the User's locale fields check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def with_suffix(id15: str) -> str:
    """The 18-character form of a 15-character id (the case-safe checksum suffix)."""
    suffix = ""
    for chunk in range(3):
        bits = 0
        for pos, ch in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << pos
        suffix += SUFFIX_ALPHABET[bits]
    return id15 + suffix


def normalise_id(value: str) -> str | None:
    """An 18-character id for a 15- or 18-character one, or ``None`` if it cannot be an id."""
    if len(value) == 15 and value.isalnum():
        return with_suffix(value)
    if len(value) == 18 and value.isalnum() and with_suffix(value[:15]) == value:
        return value
    return None


class SfError(Exception):
    """One Salesforce error: ``errorCode`` (``statusCode`` inside save results), message, fields."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None, status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = list(fields or [])
        self.status = status

    def rest(self) -> dict[str, Any]:
        """The shape of an error in a REST error array."""
        return {"message": self.message, "errorCode": self.code, "fields": self.fields}

    def saved(self) -> dict[str, Any]:
        """The shape of an error inside a SaveResult (sObject Collections, create)."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = "string"  # string, boolean, int, double, date, datetime, reference, email, picklist
    length: int | None = None
    required: bool = False  # on create
    readonly: bool = False  # never written through the API
    create_only: bool = False  # written on create, read-only afterwards
    refs: tuple[str, ...] = ()  # the types a reference may point at
    relationship: str | None = None  # e.g. Profile for ProfileId
    unique: bool = False  # unique per org, case-insensitive
    external_id: bool = False  # may name a record in an upsert
    default: Any = None


@dataclass
class SObjectType:
    name: str
    prefix: str
    plural: str  # route names: salesforce.<plural>.create
    setup: bool  # Setup objects cannot share a DML call with others (MIXED_DML_OPERATION)
    fields: dict[str, Field] = field(default_factory=dict)
    creatable: bool = True
    deletable: bool = False
    _folded: dict[str, str] = field(default_factory=dict)

    def add(self, *fields: Field) -> SObjectType:
        for f in fields:
            self.fields[f.name] = f
            self._folded[f.name.casefold()] = f.name
        return self

    def field(self, name: str) -> Field | None:
        canonical = self._folded.get(name.casefold())
        return self.fields[canonical] if canonical else None

    def relationship(self, name: str) -> Field | None:
        """The reference field behind relationship ``name`` (``Manager`` -> ``ManagerId``)."""
        folded = name.casefold()
        for f in self.fields.values():
            if f.relationship and f.relationship.casefold() == folded:
                return f
        return None


_AUDIT = (
    Field("Id", "id", readonly=True),
    Field("CreatedDate", "datetime", readonly=True),
    Field("LastModifiedDate", "datetime", readonly=True),
    Field("SystemModstamp", "datetime", readonly=True),
    Field("CreatedById", "reference", readonly=True, refs=("User",), relationship="CreatedBy"),
    Field("LastModifiedById", "reference", readonly=True, refs=("User",), relationship="LastModifiedBy"),
)


def _owner(queues: bool) -> Field:
    refs = ("User", "Group") if queues else ("User",)
    return Field("OwnerId", "reference", refs=refs, relationship="Owner")


def _s(name: str, length: int, **kw: Any) -> Field:
    return Field(name, "string", length, **kw)


def _ref(name: str, to: str, relationship: str, **kw: Any) -> Field:
    return Field(name, "reference", refs=(to,), relationship=relationship, **kw)


def build_types() -> dict[str, SObjectType]:
    """Every type the emulator serves, by canonical name."""
    types = [
        SObjectType("UserLicense", "100", "user_licenses", True, creatable=False).add(
            _s("Name", 40, readonly=True),
            _s("MasterLabel", 80, readonly=True),
            _s("LicenseDefinitionKey", 40, readonly=True),
            Field("TotalLicenses", "int", readonly=True),
            Field("UsedLicenses", "int", readonly=True),
            _s("Status", 40, readonly=True),
        ),
        SObjectType("Profile", "00e", "profiles", True).add(
            _s("Name", 255, required=True),
            _ref("UserLicenseId", "UserLicense", "UserLicense", required=True, create_only=True),
            _s("UserType", 40, readonly=True),
            _s("Description", 255),
        ),
        SObjectType("UserRole", "00E", "user_roles", True).add(
            _s("Name", 80, required=True),
            _s("DeveloperName", 80),
            _ref("ParentRoleId", "UserRole", "ParentRole"),
        ),
        SObjectType("PermissionSet", "0PS", "permission_sets", True).add(
            _s("Name", 80, required=True),
            _s("Label", 80, required=True),
            Field("IsOwnedByProfile", "boolean", readonly=True, default=False),
            _s("Type", 40, readonly=True, default="Regular"),  # Regular, Profile, Group
            _ref("ProfileId", "Profile", "Profile", readonly=True),
            _ref("PermissionSetGroupId", "PermissionSetGroup", "PermissionSetGroup", readonly=True),
            _s("NamespacePrefix", 15, readonly=True),
            _s("Description", 255),
        ),
        SObjectType("PermissionSetGroup", "0PG", "permission_set_groups", True).add(
            _s("DeveloperName", 80, required=True),
            _s("MasterLabel", 80, required=True),
            _s("Status", 40, readonly=True, default="Updated"),
            _s("Description", 255),
        ),
        SObjectType("PermissionSetAssignment", "0Pa", "permission_set_assignments", True, deletable=True).add(
            _ref("AssigneeId", "User", "Assignee", required=True, create_only=True),
            _ref("PermissionSetId", "PermissionSet", "PermissionSet", create_only=True),
            _ref("PermissionSetGroupId", "PermissionSetGroup", "PermissionSetGroup", create_only=True),
            Field("IsActive", "boolean", readonly=True, default=True),
            Field("ExpirationDate", "datetime"),
        ),
        SObjectType("User", "005", "users", True).add(
            Field("Username", "email", 80, required=True, unique=True),
            Field("Email", "email", 128, required=True),
            _s("FirstName", 40),
            _s("LastName", 80, required=True),
            _s("Name", 121, readonly=True),
            _s("Alias", 8, required=True),
            _s("CommunityNickname", 40, unique=True),
            _s("TimeZoneSidKey", 40, required=True),
            _s("LocaleSidKey", 40, required=True),
            _s("EmailEncodingKey", 40, required=True),
            _s("LanguageLocaleKey", 40, required=True),
            _ref("ProfileId", "Profile", "Profile", required=True),
            _ref("UserRoleId", "UserRole", "UserRole"),
            _ref("ManagerId", "User", "Manager"),
            Field("IsActive", "boolean", default=True),
            _s("FederationIdentifier", 512),
            _s("EmployeeNumber", 20),
            _s("Department", 80),
            _s("Title", 80),
            _s("Division", 80),
            _s("CompanyName", 80),
            _s("Phone", 40),
            _s("MobilePhone", 40),
            _s("UserType", 40, readonly=True, default="Standard"),
            Field("LastLoginDate", "datetime", readonly=True),
            # Custom fields of the sandbox org: a hierarchy field (blocks deactivation of the
            # user it points at) and an external id the target may upsert by.
            _ref("Approver__c", "User", "Approver__r"),
            _s("EntraObjectId__c", 64, unique=True, external_id=True),
        ),
        SObjectType("UserLogin", "060", "user_logins", True, creatable=False).add(
            _ref("UserId", "User", "User", readonly=True),
            Field("IsFrozen", "boolean", default=False),
            Field("IsPasswordLocked", "boolean", readonly=True, default=False),
        ),
        SObjectType("Group", "00G", "groups", True, deletable=True).add(
            _s("Name", 40, required=True),
            _s("DeveloperName", 80),
            _s("Type", 40, create_only=True, default="Regular"),
            Field("Email", "email", 255),
            Field("DoesSendEmailToMembers", "boolean", default=False),
        ),
        SObjectType("QueueSobject", "03g", "queue_sobjects", True, deletable=True).add(
            _ref("QueueId", "Group", "Queue", required=True, create_only=True),
            _s("SobjectType", 40, required=True, create_only=True),
        ),
        SObjectType("Account", "001", "accounts", False, deletable=True).add(
            _s("Name", 255, required=True),
            _owner(queues=False),
            _s("Type", 40),
            _s("Industry", 40),
            _s("External_Id__c", 64, unique=True, external_id=True),
        ),
        SObjectType("Contact", "003", "contacts", False, deletable=True).add(
            _s("FirstName", 40),
            _s("LastName", 80, required=True),
            Field("Email", "email", 80),
            _ref("AccountId", "Account", "Account"),
            _owner(queues=False),
        ),
        SObjectType("Opportunity", "006", "opportunities", False, deletable=True).add(
            _s("Name", 120, required=True),
            _s("StageName", 40, required=True),
            Field("CloseDate", "date", required=True),
            Field("Amount", "double"),
            _ref("AccountId", "Account", "Account"),
            _owner(queues=False),
            Field("IsClosed", "boolean", readonly=True, default=False),
            Field("IsWon", "boolean", readonly=True, default=False),
        ),
        SObjectType("Lead", "00Q", "leads", False, deletable=True).add(
            _s("FirstName", 40),
            _s("LastName", 80, required=True),
            _s("Company", 255, required=True),
            Field("Email", "email", 80),
            _s("Status", 40, default="Open - Not Contacted"),
            _owner(queues=True),
            Field("IsConverted", "boolean", readonly=True, default=False),
        ),
        SObjectType("Case", "500", "cases", False, deletable=True).add(
            _s("Subject", 255),
            _s("Status", 40, default="New"),
            _s("Origin", 40),
            _ref("AccountId", "Account", "Account"),
            _ref("ContactId", "Contact", "Contact"),
            _owner(queues=True),
            Field("IsClosed", "boolean", readonly=True, default=False),
        ),
    ]
    for t in types:
        t.add(*_AUDIT)
    return {t.name: t for t in types}


#: Opportunity stages and Case statuses that count as closed (IsClosed is derived from them).
CLOSED_STAGES = frozenset({"Closed Won", "Closed Lost"})
WON_STAGES = frozenset({"Closed Won"})
CLOSED_CASE_STATUSES = frozenset({"Closed"})
