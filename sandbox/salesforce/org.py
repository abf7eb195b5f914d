"""One Salesforce org's records and the rules Salesforce applies when they are written.

No HTTP here: :class:`Org` is what the REST, Collections and Bulk layers of the emulator share, so
a rule (a duplicate username, a licence that runs out, an inactive owner) answers the same way on
every path. Every write goes through :meth:`Org.create`, :meth:`Org.update` or
:meth:`Org.delete`; :meth:`Org.transaction` rolls a group of writes back (``allOrNone``).

The rules, with Salesforce's error codes (see :class:`~sandbox.salesforce.schema.SfError`):

* unknown field ``INVALID_FIELD``; read-only field ``INVALID_FIELD_FOR_INSERT_UPDATE``; a value of
  the wrong type ``INVALID_TYPE_ON_FIELD_IN_RECORD``; a text too long ``STRING_TOO_LONG``; a
  required field missing ``REQUIRED_FIELD_MISSING`` (naming every missing field); an email-shaped
  field that is not ``INVALID_EMAIL_ADDRESS``; a reference to nothing ``INVALID_CROSS_REFERENCE_KEY``
  (a malformed id ``MALFORMED_ID``, an id of the wrong type ``FIELD_INTEGRITY_EXCEPTION``).
* User: ``Username`` is stored lower-case and unique across this org *and* the usernames other
  orgs hold (:meth:`Org.add_other_org_usernames`): ``DUPLICATE_USERNAME``; ``CommunityNickname`` is
  generated when absent and unique per org: ``DUPLICATE_COMM_NICKNAME``; an active user holds a
  licence of its profile's UserLicense, and none left is ``LICENSE_LIMIT_EXCEEDED`` (deactivating
  frees one; a frozen user keeps it); deactivating a user that is a default owner, the default
  workflow user or an alert recipient (:attr:`Org.blockers`), or the value of another active
  user's hierarchy field ``Approver__c``, is ``FIELD_INTEGRITY_EXCEPTION`` naming the blocker.
  Every user has a UserLogin (``IsFrozen``) and a PermissionSetAssignment of its profile's own
  permission set (``PermissionSet.IsOwnedByProfile = true``, ``Type = 'Profile'``), as in a real
  org; a permission set group has an aggregate permission set (``Type = 'Group'``) that its
  assignments name in ``PermissionSetId``.
* Records with owners: an ``OwnerId`` set to an inactive user is ``INACTIVE_OWNER_OR_USER``; a
  queue may own only the types its QueueSobject rows list (Leads and Cases here).
* PermissionSetAssignment: one of ``PermissionSetId`` / ``PermissionSetGroupId``; a second
  assignment of the same set to the same user is ``DUPLICATE_VALUE``; the profile's own
  assignment cannot be deleted.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from .schema import (
    CLOSED_CASE_STATUSES,
    CLOSED_STAGES,
    ID_ALPHABET,
    WON_STAGES,
    Field,
    SfError,
    SObjectType,
    build_types,
    normalise_id,
    with_suffix,
)

Record = dict[str, Any]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_LOCALE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2}(_[A-Za-z0-9]+)?)?$")
_TIME_ZONE = re.compile(r"^(GMT|[A-Z][A-Za-z_]+(/[A-Za-z0-9_\-+]+)+)$")
ENCODINGS = frozenset({"UTF-8", "ISO-8859-1", "Shift_JIS", "ISO-2022-JP", "EUC-JP", "ks_c_5601-1987", "Big5", "GB2312"})
#: What blocks a deactivation (set per user with :meth:`Org.set_blockers`) and Salesforce's words.
BLOCKERS = {
    "default_case_owner": "You cannot deactivate a user who is the default owner of cases.",
    "default_lead_owner": "You cannot deactivate a user who is the default lead owner.",
    "default_lead_creator": "You cannot disable the Web to Lead Default Creator.",
    "automated_case_user": "You cannot deactivate a user who is the Automated Case User.",
    "workflow_user": "You cannot deactivate the Default Workflow User.",
    "alert_recipient": "You cannot deactivate a user who is the only recipient of a workflow email alert.",
}
OWNER_TYPES = ("Account", "Contact", "Opportunity", "Lead", "Case")
#: Fields with a value index (unique fields and Ids are always indexed): what matching and
#: reassignment filter on, so that a query over 10,000 users does not scan them all.
INDEXED = {
    "User": ("Email", "FederationIdentifier", "EmployeeNumber", "ManagerId", "ProfileId"),
    "PermissionSetAssignment": ("AssigneeId",),
    "UserLogin": ("UserId",),
    **dict.fromkeys(OWNER_TYPES, ("OwnerId",)),
}


def sf_datetime(ts: float) -> str:
    """Salesforce's datetime format: ``2026-01-02T03:04:05.000+0000``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class Org:
    def __init__(self, now: Callable[[], float] = time.time, seed: int = 0):
        self.now = now
        self.types = build_types()
        self.records: dict[str, dict[str, Record]] = {name: {} for name in self.types}
        self._index: dict[tuple[str, str], dict[Any, set[str]]] = {}
        for t in self.types.values():
            for f in t.fields.values():
                if f.unique or f.name == "Id" or f.name in INDEXED.get(t.name, ()):
                    self._index[(t.name, f.name)] = {}
        self._ids = random.Random(f"salesforce-ids-{seed}")
        self._journal: list[tuple[str, str, Record | None]] | None = None
        self._other_orgs: set[str] = set()  # usernames held by other orgs, case-folded
        #: user id -> what blocks its deactivation (keys of BLOCKERS)
        self.blockers: dict[str, list[str]] = {}
        self.integration_user_id = ""

    # -- ids and lookups -----------------------------------------------------------------------

    def new_key(self, prefix: str) -> str:
        """A fresh 18-character id with key prefix ``prefix`` (jobs and query locators too)."""
        body = "".join(self._ids.choice(ID_ALPHABET) for _ in range(10))
        return with_suffix(prefix + "5g" + body)

    def new_id(self, sobject: str) -> str:
        while True:
            candidate = self.new_key(self.types[sobject].prefix)
            if candidate not in self.records[sobject]:
                return candidate

    def type_of(self, record_id: str) -> str | None:
        """The type whose key prefix ``record_id`` carries, if the emulator serves it."""
        for t in self.types.values():
            if record_id.startswith(t.prefix):
                return t.name
        return None

    def sobject(self, name: str) -> SObjectType:
        for t in self.types.values():
            if t.name.casefold() == name.casefold():
                return t
        raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)

    def get(self, sobject: str, record_id: str) -> Record | None:
        full = normalise_id(record_id)
        return self.records[sobject].get(full) if full else None

    def require(self, sobject: str, record_id: str) -> Record:
        record = self.get(sobject, record_id)
        if record is None:
            raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
        return record

    def any_record(self, record_id: str) -> tuple[str, Record] | None:
        full = normalise_id(record_id)
        sobject = self.type_of(full) if full else None
        if full is None or sobject is None:
            return None
        record = self.records[sobject].get(full)
        return (sobject, record) if record is not None else None

    def indexed(self, sobject: str, field_name: str) -> bool:
        return (sobject, field_name) in self._index

    def lookup(self, sobject: str, field_name: str, value: Any) -> set[str]:
        """Ids of the records whose indexed ``field_name`` equals ``value`` (case-insensitively)."""
        return set(self._index[(sobject, field_name)].get(_key(value), ()))

    def find_external(self, sobject: str, field_name: str, value: str) -> list[str]:
        """Ids matching an external id (upsert): ``Id`` or a field marked ``external_id``."""
        t = self.sobject(sobject)
        f = t.field(field_name)
        if f is None or not (f.external_id or f.name == "Id"):
            raise SfError(
                "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field_name}", status=404
            )
        if f.name == "Id":
            full = normalise_id(value)
            return [full] if full and full in self.records[t.name] else []
        return sorted(self.lookup(t.name, f.name, value))

    # -- the journal (allOrNone) ---------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Writes inside are undone if the block raises (nested blocks join the outer one)."""
        if self._journal is not None:
            yield
            return
        journal: list[tuple[str, str, Record | None]] = []
        self._journal = journal
        try:
            yield
        except BaseException:
            self._journal = None
            for sobject, record_id, old in reversed(journal):
                self._put(sobject, record_id, old)
            raise
        finally:
            self._journal = None

    def _put(self, sobject: str, record_id: str, new: Record | None) -> None:
        table = self.records[sobject]
        old = table.get(record_id)
        if self._journal is not None:
            self._journal.append((sobject, record_id, old))
        for (indexed_type, field_name), index in self._index.items():
            if indexed_type != sobject:
                continue
            if old is not None and old.get(field_name) is not None:
                ids = index.get(_key(old[field_name]))
                if ids is not None:
                    ids.discard(record_id)
                    if not ids:
                        del index[_key(old[field_name])]
            if new is not None and new.get(field_name) is not None:
                index.setdefault(_key(new[field_name]), set()).add(record_id)
        if new is None:
            table.pop(record_id, None)
        else:
            table[record_id] = new
        if sobject == "User":
            self._count_licence(old, new)

    def _licence_of(self, user: Record | None) -> str | None:
        if user is None or not user.get("IsActive"):
            return None
        profile = self.records["Profile"].get(user.get("ProfileId") or "")
        return profile.get("UserLicenseId") if profile else None

    def _count_licence(self, old: Record | None, new: Record | None) -> None:
        before, after = self._licence_of(old), self._licence_of(new)
        if before == after:
            return
        for licence_id, delta in ((before, -1), (after, 1)):
            licence = self.records["UserLicense"].get(licence_id or "")
            if licence is not None:
                self._put("UserLicense", licence["Id"], {**licence, "UsedLicenses": licence["UsedLicenses"] + delta})

    # -- writes --------------------------------------------------------------------------------

    def create(self, sobject: str, values: Record, trusted: bool = False) -> str:
        """A new record; ``trusted`` (seeding) may set fields the API may not."""
        t = self.sobject(sobject)
        if not t.creatable and not trusted:
            raise SfError("INVALID_TYPE", f"entity type {t.name} does not support create", status=400)
        if any(k.casefold() == "id" for k in values):
            raise SfError("INVALID_FIELD_FOR_INSERT_UPDATE", "Cannot specify Id in an insert call", ["Id"])
        changes = self._coerce(t, values, creating=True, trusted=trusted)
        record_id = self.new_id(t.name)
        stamp = sf_datetime(self.now())
        actor = self.integration_user_id or None
        record: Record = {f.name: f.default for f in t.fields.values()}
        record.update(
            Id=record_id,
            CreatedDate=stamp,
            LastModifiedDate=stamp,
            SystemModstamp=stamp,
            CreatedById=actor,
            LastModifiedById=actor,
        )
        if "OwnerId" in t.fields:
            record["OwnerId"] = actor
        record.update(changes)
        self._check(t, None, record, changes, trusted)
        with self.transaction():
            self._put(t.name, record_id, record)
            self._after_write(t, None, record)
        return record_id

    def update(self, sobject: str, record_id: str, values: Record, trusted: bool = False) -> None:
        t = self.sobject(sobject)
        old = self.require(t.name, record_id)
        changes = self._coerce(t, values, creating=False, trusted=trusted)
        new = {**old, **changes}
        new.update(LastModifiedDate=sf_datetime(self.now()), SystemModstamp=sf_datetime(self.now()))
        self._check(t, old, new, changes, trusted)
        with self.transaction():
            self._put(t.name, old["Id"], new)
            self._after_write(t, old, new)

    def delete(self, sobject: str, record_id: str) -> None:
        t = self.sobject(sobject)
        record = self.require(t.name, record_id)
        if not t.deletable:
            raise SfError(
                "METHOD_NOT_ALLOWED", "HTTP Method 'DELETE' not allowed. Allowed are GET,PATCH,HEAD", status=405
            )
        if t.name == "PermissionSetAssignment":
            ps = self.records["PermissionSet"].get(record.get("PermissionSetId") or "")
            if ps is not None and ps.get("IsOwnedByProfile"):
                raise SfError(
                    "INVALID_CROSS_REFERENCE_KEY", "You can't delete a permission set assignment owned by a profile."
                )
        self._put(t.name, record["Id"], None)

    # -- validation ----------------------------------------------------------------------------

    def _coerce(self, t: SObjectType, values: Record, creating: bool, trusted: bool) -> Record:
        """Canonical names and typed values; unknown, read-only and mistyped fields refused."""
        out: Record = {}
        locked: list[str] = []
        for name, value in values.items():
            if name == "attributes":
                continue
            f = t.field(name)
            if f is None:
                raise SfError("INVALID_FIELD", f"No such column '{name}' on sobject of type {t.name}", [name])
            if not trusted and (f.readonly or (f.create_only and not creating)):
                locked.append(f.name)
                continue
            out[f.name] = _typed(f, value)
        if locked:
            raise SfError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(locked)}. Please check the security settings of this "
                "field and verify that it is read/write for your profile or permission set.",
                locked,
            )
        return out

    def _check(self, t: SObjectType, old: Record | None, new: Record, changes: Record, trusted: bool) -> None:
        if t.name == "User":
            self._prepare_user(old, new)
        missing = [f.name for f in t.fields.values() if f.required and new.get(f.name) in (None, "")]
        if missing:
            raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        for name in changes:
            f = t.fields[name]
            value = new.get(name)
            if value is None:
                continue
            if f.length is not None and isinstance(value, str) and len(value) > f.length:
                raise SfError(
                    "STRING_TOO_LONG", f"{f.name}: data value too large: {value} (max length={f.length})", [f.name]
                )
            if f.kind == "email" and not _EMAIL.match(value):
                raise SfError("INVALID_EMAIL_ADDRESS", f"{f.name}: invalid email address: {value}", [f.name])
            if f.kind == "reference":
                new[name] = self._reference(f, value)
            if f.unique:
                holders = self.lookup(t.name, f.name, new[name]) - {new["Id"]}
                if holders or (f.name == "Username" and _key(value) in self._other_orgs):
                    raise _duplicate(t, f, value)
        derive = _DERIVED.get(t.name)
        if derive is not None:
            derive(new)
        if "OwnerId" in changes or (old is None and "OwnerId" in t.fields):
            self._check_owner(t, new.get("OwnerId"))
        if t.name == "User":
            self._check_user(old, new)
        elif t.name == "PermissionSetAssignment":
            self._check_assignment(new, trusted)
        elif t.name == "Group" and new.get("Type") not in {"Queue", "Regular"}:
            raise SfError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"Type: bad value for restricted picklist field: {new.get('Type')}",
                ["Type"],
            )
        elif t.name == "QueueSobject":
            self._check_queue_sobject(new)

    def _reference(self, f: Field, value: Any) -> str:
        full = normalise_id(str(value))
        if full is None:
            raise SfError("MALFORMED_ID", f"{f.name}: id value of incorrect type: {value}", [f.name])
        target = self.type_of(full)
        if target not in f.refs:
            raise SfError("FIELD_INTEGRITY_EXCEPTION", f"{f.name}: id value of incorrect type: {value}", [f.name])
        if full not in self.records[target]:
            raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [f.name])
        return full

    def _check_owner(self, t: SObjectType, owner_id: str | None) -> None:
        if owner_id is None:
            return
        user = self.records["User"].get(owner_id)
        if user is not None:
            if not user.get("IsActive"):
                raise SfError(
                    "INACTIVE_OWNER_OR_USER",
                    f"operation performed with inactive user [{owner_id}] as owner of {t.name.lower()}",
                    ["OwnerId"],
                )
            return
        queue = self.records["Group"].get(owner_id)
        serves = (
            queue is not None
            and queue.get("Type") == "Queue"
            and any(
                q["SobjectType"] == t.name for q in self.records["QueueSobject"].values() if q["QueueId"] == owner_id
            )
        )
        if not serves:
            raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["OwnerId"])

    def _prepare_user(self, old: Record | None, new: Record) -> None:
        if isinstance(new.get("Username"), str):
            new["Username"] = new["Username"].lower()
        if old is None and not new.get("CommunityNickname") and isinstance(new.get("Email"), str):
            base = new["Email"].split("@")[0][:32] or "user"
            nickname, n = base, 0
            while self.lookup("User", "CommunityNickname", nickname):
                n += 1
                nickname = f"{base}{n}"
            new["CommunityNickname"] = nickname
        new["Name"] = " ".join(p for p in (new.get("FirstName"), new.get("LastName")) if p)

    def _check_user(self, old: Record | None, new: Record) -> None:
        for name, pattern in (
            ("LocaleSidKey", _LOCALE),
            ("LanguageLocaleKey", _LOCALE),
            ("TimeZoneSidKey", _TIME_ZONE),
        ):
            if not pattern.match(str(new.get(name))):
                raise _picklist(name, new.get(name))
        if new.get("EmailEncodingKey") not in ENCODINGS:
            raise _picklist("EmailEncodingKey", new.get("EmailEncodingKey"))
        licence_id = self._licence_of(new)
        if licence_id is not None and licence_id != self._licence_of(old):
            licence = self.records["UserLicense"][licence_id]
            if licence["UsedLicenses"] >= licence["TotalLicenses"]:
                raise SfError("LICENSE_LIMIT_EXCEEDED", "License Limit Exceeded", [])
        if old is not None and old.get("IsActive") and not new.get("IsActive"):
            self._check_deactivation(new["Id"])

    def _check_deactivation(self, user_id: str) -> None:
        for blocker in self.blockers.get(user_id, []):
            raise SfError("FIELD_INTEGRITY_EXCEPTION", BLOCKERS[blocker], [])
        for other in self.records["User"].values():
            if other.get("IsActive") and other.get("Approver__c") == user_id and other["Id"] != user_id:
                raise SfError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"Cannot inactivate user that is the value of a hierarchy field: Approver : {other['Name']}",
                    [],
                )

    def _check_assignment(self, new: Record, trusted: bool) -> None:
        """One of a permission set or a group (whose aggregate permission set the row then names,
        as Salesforce fills it in); never a profile's or a group's own set directly; no doubles."""
        ps: str | None = new.get("PermissionSetId")
        psg: str | None = new.get("PermissionSetGroupId")
        if ps is None and psg is None:
            raise SfError(
                "REQUIRED_FIELD_MISSING", "Required fields are missing: [PermissionSetId]", ["PermissionSetId"]
            )
        if ps is not None and psg is not None:
            raise SfError(
                "FIELD_INTEGRITY_EXCEPTION",
                "Specify either a permission set or a permission set group, not both.",
                ["PermissionSetId", "PermissionSetGroupId"],
            )
        if psg is not None:
            new["PermissionSetId"] = ps = self._aggregate_permission_set(psg)
        elif not trusted and self.records["PermissionSet"][ps or ""].get("Type") in {"Profile", "Group"}:
            raise SfError(
                "FIELD_INTEGRITY_EXCEPTION",
                "You can't assign or unassign this permission set because it's owned by a profile or a "
                "permission set group.",
                ["PermissionSetId"],
            )
        for other_id in self.lookup("PermissionSetAssignment", "AssigneeId", new["AssigneeId"]) - {new["Id"]}:
            if self.records["PermissionSetAssignment"][other_id].get("PermissionSetId") == ps:
                raise SfError(
                    "DUPLICATE_VALUE", f"Duplicate PermissionSetAssignment: id value on record: {other_id}", []
                )

    def _aggregate_permission_set(self, group_id: str) -> str | None:
        for ps in self.records["PermissionSet"].values():
            if ps.get("PermissionSetGroupId") == group_id and ps.get("Type") == "Group":
                return str(ps["Id"])
        return None

    def _check_queue_sobject(self, new: Record) -> None:
        queue = self.records["Group"][new["QueueId"]]
        if queue.get("Type") != "Queue":
            raise SfError("FIELD_INTEGRITY_EXCEPTION", "Queue: only a queue can own records", ["QueueId"])
        if new["SobjectType"] not in {"Lead", "Case"}:
            raise _picklist("SobjectType", new["SobjectType"])

    def _after_write(self, t: SObjectType, old: Record | None, new: Record) -> None:
        """What Salesforce does beside the write itself for users and profiles."""
        if t.name == "Profile" and old is None:
            own = {"IsOwnedByProfile": True, "ProfileId": new["Id"], "Type": "Profile"}
            self.create("PermissionSet", {"Name": f"X00e_{new['Id'][3:12]}", "Label": new["Name"], **own}, True)
        if t.name == "PermissionSetGroup" and old is None:
            aggregate = {"PermissionSetGroupId": new["Id"], "Type": "Group"}
            self.create(
                "PermissionSet", {"Name": f"X0PG_{new['Id'][3:12]}", "Label": new["MasterLabel"], **aggregate}, True
            )
        if t.name != "User":
            return
        owned = self._profile_permission_set(new["ProfileId"])
        if old is None:
            self.create("UserLogin", {"UserId": new["Id"]}, trusted=True)
            if owned is not None:
                self.create(
                    "PermissionSetAssignment", {"AssigneeId": new["Id"], "PermissionSetId": owned}, trusted=True
                )
        elif old["ProfileId"] != new["ProfileId"]:
            before = self._profile_permission_set(old["ProfileId"])
            for psa_id in self.lookup("PermissionSetAssignment", "AssigneeId", new["Id"]):
                psa = self.records["PermissionSetAssignment"][psa_id]
                if psa.get("PermissionSetId") == before:
                    self._put("PermissionSetAssignment", psa_id, {**psa, "PermissionSetId": owned})

    def _profile_permission_set(self, profile_id: str) -> str | None:
        for ps in self.records["PermissionSet"].values():
            if ps.get("ProfileId") == profile_id and ps.get("IsOwnedByProfile"):
                return str(ps["Id"])
        return None

    def add_other_org_usernames(self, usernames: list[str]) -> list[str]:
        """Usernames taken in other orgs (Usernames are unique across all orgs); all of them."""
        self._other_orgs |= {_key(u) for u in usernames}
        return sorted(self._other_orgs)

    def set_blockers(self, user_id: str, blockers: list[str]) -> None:
        unknown = [b for b in blockers if b not in BLOCKERS]
        if unknown:
            raise ValueError(f"unknown deactivation blockers {unknown}; known: {sorted(BLOCKERS)}")
        self.require("User", user_id)
        full = normalise_id(user_id) or user_id
        if blockers:
            self.blockers[full] = list(blockers)
        else:
            self.blockers.pop(full, None)

    # -- reads ---------------------------------------------------------------------------------

    def resolve(self, sobject: str, record: Record | None, path: str) -> Any:
        """The value at ``path`` (``Manager.Email``, ``Profile.UserLicense.Name``) from ``record``."""
        t = self.types[sobject]
        head, _, rest = path.partition(".")
        if record is None:
            return None
        if not rest:
            f = t.field(head)
            return record.get(f.name) if f else None
        ref = t.relationship(head)
        if ref is None:
            return None
        parent = self.any_record(record.get(ref.name) or "")
        return self.resolve(parent[0], parent[1], rest) if parent else None

    def check_path(self, sobject: str, path: str) -> None:
        """``INVALID_FIELD`` unless ``path`` names a field (through relationships) of ``sobject``."""
        t = self.types[sobject]
        head, _, rest = path.partition(".")
        if not rest:
            if t.field(head) is None:
                raise SfError("INVALID_FIELD", f"No such column '{head}' on entity '{t.name}'.")
            return
        ref = t.relationship(head)
        if ref is None:
            raise SfError("INVALID_FIELD", f"Didn't understand relationship '{head}' in field path '{path}'.")
        for target in ref.refs:
            try:
                self.check_path(target, rest)
                return
            except SfError:
                continue
        raise SfError("INVALID_FIELD", f"No such column '{rest}' on entity '{ref.refs[0]}'.")

    def relation(self, sobject: str, head: str) -> Field | None:
        return self.types[sobject].relationship(head)


def _key(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _typed(f: Field, value: Any) -> Any:
    if value is None or value == "":
        return None
    ok = {
        "boolean": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "double": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(f.kind, isinstance(value, str))
    if f.kind == "date" and isinstance(value, str):
        try:
            date.fromisoformat(value)
        except ValueError:
            ok = False
    if not ok:
        raise SfError("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{f.name}: value not of required type: {value}", [f.name])
    return value


def _picklist(name: str, value: Any) -> SfError:
    return SfError(
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", f"{name}: bad value for restricted picklist field: {value}", [name]
    )


def _duplicate(t: SObjectType, f: Field, value: Any) -> SfError:
    if f.name == "Username":
        return SfError(
            "DUPLICATE_USERNAME",
            "Duplicate Username.<br>The username already exists in this or another Salesforce organization. "
            "Usernames must be unique across all Salesforce organizations. To resolve, use a different username "
            "(it doesn't need to match the user's email address). ",
            ["Username"],
        )
    if f.name == "CommunityNickname":
        return SfError(
            "DUPLICATE_COMM_NICKNAME",
            "Duplicate Nickname.<br>Another user has already selected this nickname.<br>Please select another.",
            ["CommunityNickname"],
        )
    return SfError(
        "DUPLICATE_VALUE", f"duplicate value found: {f.name} duplicates value on record with id: {value}", [f.name]
    )


def _derive_opportunity(record: Record) -> None:
    record["IsClosed"] = record.get("StageName") in CLOSED_STAGES
    record["IsWon"] = record.get("StageName") in WON_STAGES


def _derive_case(record: Record) -> None:
    record["IsClosed"] = record.get("Status") in CLOSED_CASE_STATUSES


_DERIVED: dict[str, Callable[[Record], None]] = {"Opportunity": _derive_opportunity, "Case": _derive_case}
