"""A Salesforce org as a :class:`~shared.core.ports.Target`, through ``simple-salesforce``.

**Users.** Read with SOQL (every value quoted by :mod:`shared.targets.salesforce.soql`); the
profile, role and manager come back as the names and the object id the rules speak
(:mod:`shared.targets.salesforce.names`). A create sends the mapped fields with ``ProfileId``,
``UserRoleId`` and ``ManagerId`` resolved. A ``Username`` taken by a user of this org is a
:class:`~shared.errors.Conflict`; one taken in *another* org (usernames are unique across all of
Salesforce) is tried with the collision suffix, ``.2`` .. ``.9`` before the ``@``, and the rules
treat those as the template's own. An update whose ``Username`` another user holds is refused for
that value alone. A licence limit stops creates for :data:`LICENCE_PAUSE_S` without calling again.

**Permission sets.** Assignments are inserted in one sObject Collections call per grant, and
deleted in one per ungrant; only the section's permission sets (and groups) are ever named.

**Leaver** (``DISABLE``, see :mod:`shared.targets.salesforce.leaver`): open records reassigned,
managed assignments removed, then ``IsActive = false``; where Salesforce refuses that, the login is
frozen and the blocker reported, and the next pass tries again.

**Errors** (:mod:`shared.targets.salesforce.client`): timeouts, 5xx and refused tokens are
transient (the breaker quarantines this target alone); a spent daily allocation is waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Final

from shared.clock import Clock
from shared.core.model import Account, Action, ActionKind
from shared.core.ports import Applied, AuditStore, Fence, StateStore
from shared.errors import Conflict, NotFound, PermanentError
from shared.mapping.model import TargetSection
from shared.targets.salesforce import soql
from shared.targets.salesforce.client import ApiError, LicenceExhausted, SalesforceClient
from shared.targets.salesforce.gather import Gatherer
from shared.targets.salesforce.leaver import Leaver
from shared.targets.salesforce.names import Names
from shared.targets.salesforce.rules import (
    CAPABILITIES,
    FEDERATION,
    FROZEN,
    LOCALE_FIELDS,
    MANAGER,
    PROFILE,
    ROLE,
    SUFFIXES,
    USERNAME,
    SalesforceOptions,
    SalesforceRules,
    owner_of,
    suffixed,
)

log = logging.getLogger("entra_sync.salesforce")

LICENCE_PAUSE_S: Final = 900.0
COLLECTION_MAX: Final = 200  # records per sObject Collections call
ALWAYS: Final = (
    "Id", "Username", "Email", "FirstName", "LastName", "Alias", "IsActive", "ProfileId", "UserRoleId",
    "ManagerId", "EmployeeNumber", FEDERATION, "CreatedDate", "LastLoginDate", *LOCALE_FIELDS,
)  # fmt: skip
MATCHER_FIELDS: Final = {
    "federation_id": FEDERATION,
    "employee_number": "EmployeeNumber",
    "email": "Email",
    "username": USERNAME,
}
READ_FRESH_S: Final = 5.0  # a deprovision uses the user record its work item's read fetched this recently
FIND_LIMIT: Final = 10  # candidates per matcher's key: two already make it ambiguous
DUPLICATE_USERNAME: Final = "DUPLICATE_USERNAME"
ASSIGNMENT: Final = ("Id", "PermissionSetId", "PermissionSetGroupId")


class SalesforceTarget:
    def __init__(
        self,
        section: TargetSection,
        client: SalesforceClient,
        *,
        clock: Clock,
        state: StateStore | None = None,
        audit: AuditStore | None = None,
    ):
        self.section = section
        self.client = client
        self.clock = clock
        self._rules = SalesforceRules(section)
        self.options: SalesforceOptions = self._rules.options
        self.names = Names(client.query, clock)
        self.leaver = Leaver(self, state, audit)
        self.licences_out_until = 0.0
        self.new_users = Gatherer(self._send_records, clock)  # see gathering()
        self.new_assignments = Gatherer(self._send_records, clock)
        self._read_now: dict[str, tuple[float, dict[str, Any]]] = {}  # see user_now()
        self.mapped = frozenset(a.target for a in section.attributes)
        self.fields = tuple(dict.fromkeys((*ALWAYS, self.options.owner_field, *sorted(self.mapped - {MANAGER}))))

    @property
    def name(self) -> str:
        return self.section.name

    @property
    def capabilities(self) -> Any:
        return CAPABILITIES

    @property
    def rules(self) -> SalesforceRules:
        return self._rules

    # -- reads ---------------------------------------------------------------------------------------

    def select(self, where: str, limit: int | None = None) -> str:
        return soql.select(self.fields, "User", where, limit)

    async def users(self, where: str, limit: int | None = None) -> list[dict[str, Any]]:
        return await self.client.query(self.select(where, limit))

    async def shape(self, user: Mapping[str, Any], managers: Mapping[str, str | None] | None = None) -> dict[str, Any]:
        """A user record with the names and ids the rules compare: profile and role names, the
        manager's object id."""
        data = {k: v for k, v in user.items() if k != "attributes"}
        data[PROFILE] = await self.names.name_of("Profile", user.get("ProfileId"))
        data[ROLE] = await self.names.name_of("UserRole", user.get("UserRoleId"))
        manager = user.get("ManagerId") if MANAGER in self.mapped else None
        if manager and managers is not None:
            data[MANAGER] = managers.get(str(manager)[:15])
        elif manager:
            query = soql.select(("Id", self.options.owner_field), "User", soql.eq("Id", str(manager)))
            rows = await self.client.query(query)
            data[MANAGER] = owner_of(rows[0].get(self.options.owner_field)) if rows else None
        else:
            data[MANAGER] = None
        return data

    async def entitlements_of(self, user_id: str) -> frozenset[str]:
        rows = await self.client.query(
            soql.select(ASSIGNMENT, "PermissionSetAssignment", soql.eq("AssigneeId", user_id))
        )
        names = [await self.names.grant_name(r) for r in rows]
        return frozenset(n for n in names if n)

    async def read(self, target_id: str, *, entitlements: bool = True) -> Account | None:
        """The user now. ``entitlements=False`` is a leaver's read (the worker's, the risk
        response's): neither its permission sets nor its login's freeze are read, since a
        deactivation needs neither (a refused one reads the login to freeze it)."""
        if not target_id:
            return None
        rows = await self.users(soql.eq("Id", target_id))
        if not rows:
            return None
        uid = str(rows[0]["Id"])
        self._read_now[soql.record_id(uid)[:15]] = (self.clock.now(), rows[0])
        held = await self.entitlements_of(uid) if entitlements else frozenset()
        data = await self.shape(rows[0])
        if entitlements:
            logins = await self.client.query(soql.select(("IsFrozen",), "UserLogin", soql.eq("UserId", uid)))
            data[FROZEN] = any(bool(x.get("IsFrozen")) for x in logins)
        return self._rules.account(data, held)

    async def user_now(self, user_id: str) -> dict[str, Any] | None:
        """The user record as :meth:`read` fetched it a moment ago for this same piece of work (taken
        once, within :data:`READ_FRESH_S`, and only while nothing was written to the user since), or
        as Salesforce has it now."""
        seen = self._read_now.pop(user_id[:15], None)
        if seen is not None and self.clock.now() - seen[0] <= READ_FRESH_S:
            return seen[1]
        rows = await self.users(soql.eq("Id", user_id))
        return rows[0] if rows else None

    async def find(self, matcher: str, key: str) -> list[Account]:
        field = MATCHER_FIELDS.get(matcher)
        if field is None or not key:
            return []
        rows = await self.users(soql.eq(field, key), limit=FIND_LIMIT)
        return [self._rules.account(await self.shape(r)) for r in rows]

    async def find_each(self, keys: Sequence[tuple[str, str]]) -> list[list[Account]]:
        """Every matcher's key in one query (``WHERE a = 'x' OR b = 'y'``), its rows dealt out to the
        keys as SOQL compares strings (without regard to case). A full page may hide some key's rows:
        then each key is asked alone, as :meth:`find` would."""
        asked = [(MATCHER_FIELDS.get(m), k) for m, k in keys]
        wanted = [(f, k) for f, k in asked if f is not None and k]
        limit = FIND_LIMIT * max(1, len(wanted))
        rows = await self.users(" OR ".join(soql.eq(f, k) for f, k in wanted), limit=limit) if wanted else []
        if len(rows) >= limit:
            return [await self.find(m, k) for m, k in keys]
        shaped = [(r, self._rules.account(await self.shape(r))) for r in rows]
        return [
            [a for r, a in shaped if f is not None and k and str(r.get(f) or "").casefold() == k.casefold()]
            for f, k in asked
        ]

    async def accounts(self) -> AsyncIterator[Account]:
        """Every standard user but the integration user itself, with its managed assignments: one
        query for the users, one for the assignments."""
        own = self.client.own_user_id[:15]
        users = [u for u in await self.users("UserType = 'Standard'") if not own or str(u["Id"])[:15] != own]
        owners = {str(u["Id"])[:15]: owner_of(u.get(self.options.owner_field)) for u in users}
        held: dict[str, set[str]] = {}
        if self.section.managed:
            rows = await self.client.query(soql.select(("AssigneeId", *ASSIGNMENT[1:]), "PermissionSetAssignment"))
            for row in rows:
                name = await self.names.grant_name(row)
                if name in self.section.managed:
                    held.setdefault(str(row["AssigneeId"])[:15], set()).add(name)
        frozen = await self.client.query(soql.select(("UserId",), "UserLogin", "IsFrozen = true"))
        frozen_ids = {str(x["UserId"])[:15] for x in frozen}
        for user in users:
            data = await self.shape(user, owners)
            data[FROZEN] = str(user["Id"])[:15] in frozen_ids
            yield self._rules.account(data, frozenset(held.get(str(user["Id"])[:15], ())))

    # -- writes --------------------------------------------------------------------------------------

    async def fields_of(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The rules' payload as User fields: names and object ids resolved to the org's ids."""
        out: dict[str, Any] = {}
        for key, value in payload.items():
            if key == PROFILE:
                out["ProfileId"] = await self.names.id_of("Profile", str(value))
            elif key == ROLE:
                out["UserRoleId"] = await self.names.id_of("UserRole", str(value)) if value else None
            elif key == MANAGER:
                out["ManagerId"] = await self._manager_id(value)
            else:
                out[key] = value
        return out

    async def _manager_id(self, object_id: Any) -> str | None:
        if not object_id:
            return None
        field = self.options.owner_field
        rows = await self.client.query(soql.select(("Id",), "User", soql.eq(field, str(object_id)), limit=2))
        return str(rows[0]["Id"]) if len(rows) == 1 else None  # a manager not (yet) in Salesforce: none

    async def apply(self, target_id: str, action: Action, fence: Fence) -> Applied:
        kind = action.kind
        if kind is not ActionKind.DISABLE:
            self._read_now.pop(target_id[:15], None)  # written: a deprovision after this reads afresh
        if kind is ActionKind.CREATE:
            return await self.create(action.payload, fence)
        if kind is ActionKind.UPDATE:
            return await self.update(target_id, action.payload, fence)
        if kind is ActionKind.DISABLE:
            return await self.leaver.deprovision(target_id, fence)
        if kind is ActionKind.ENABLE:
            return await self.leaver.reactivate(target_id, fence)
        if kind is ActionKind.GRANT:
            await self.grant(target_id, list(action.entitlements), fence)
            return Applied()
        if kind is ActionKind.UNGRANT:
            await self.ungrant(target_id, list(action.entitlements), fence)
            return Applied()
        fence()
        raise PermanentError(f"Salesforce users cannot be {kind.value}d: deactivate them (the mapping's deprovision)")

    @contextlib.contextmanager
    def gathering(self, seconds: float) -> Iterator[None]:
        """For bulk work (a backfill): creates, and permission set assignments, of the identities in
        flight go together, up to 200 in one sObject Collections call (see :mod:`.gather`)."""
        previous = self.new_users.linger_s
        self.new_users.linger_s = self.new_assignments.linger_s = seconds
        try:
            yield
        finally:
            self.new_users.linger_s = self.new_assignments.linger_s = previous

    async def _send_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answer = await self.client.rest("POST", "composite/sobjects", json={"allOrNone": False, "records": records})
        return list(answer or [])

    def _licences_out(self) -> LicenceExhausted:
        self.licences_out_until = self.clock.now() + LICENCE_PAUSE_S
        return LicenceExhausted("Salesforce: no free user licence; creates stop until one is freed")

    async def create(self, payload: Mapping[str, Any], fence: Fence) -> Applied:
        if self.clock.now() < self.licences_out_until:
            raise LicenceExhausted(
                "Salesforce: no free user licence (seen in the last 15 minutes); creates wait for one"
            )
        fields = await self.fields_of(payload)
        username = str(fields[USERNAME])
        if self.new_users.linger_s:  # bulk work: with the others' creates, in one call
            result = await self.new_users.submit({"attributes": {"type": "User"}, **fields}, fence)
            if result.get("success"):
                return Applied(target_id=str(result["id"]))
            errors = result.get("errors") or []
            codes = {str(e.get("statusCode")) for e in errors}
            if "LICENSE_LIMIT_EXCEEDED" in codes:
                raise self._licences_out()
            if DUPLICATE_USERNAME not in codes:
                raise ApiError(",".join(sorted(codes)), "; ".join(str(e.get("message")) for e in errors))
            # A username taken: the suffix rule or a conflict, a call at a time as below.
        for n in (None, *SUFFIXES):
            fields[USERNAME] = username if n is None else suffixed(username, n)
            fence()
            try:
                created = await self.client.rest("POST", "sobjects/User", json=fields)
                return Applied(target_id=str(created["id"]))
            except LicenceExhausted:
                raise self._licences_out() from None
            except ApiError as exc:
                if exc.code != DUPLICATE_USERNAME:
                    raise
                if await self.users(soql.eq(USERNAME, fields[USERNAME]), limit=1):
                    raise Conflict(f"a user of this org already has the Username {fields[USERNAME]!r}") from exc
        raise PermanentError(f"Username {username!r} and its suffixes .2 to .9 are all taken in other orgs")

    async def update(self, target_id: str, payload: Mapping[str, Any], fence: Fence) -> Applied:
        if FROZEN in payload:
            await self.leaver.freeze(target_id, fence, frozen=bool(payload[FROZEN]))
            payload = {k: v for k, v in payload.items() if k != FROZEN}
            if not payload:
                return Applied()
        fields = await self.fields_of(payload)
        refused: dict[str, Any] = {}
        fence()
        try:
            await self.client.rest("PATCH", f"sobjects/User/{soql.record_id(target_id)}", json=fields)
        except ApiError as exc:
            if exc.code != DUPLICATE_USERNAME or USERNAME not in fields:
                raise
            refused[USERNAME] = payload[USERNAME]
            rest = {k: v for k, v in fields.items() if k != USERNAME}
            if rest:
                fence()
                await self.client.rest("PATCH", f"sobjects/User/{soql.record_id(target_id)}", json=rest)
        except NotFound:
            raise NotFound(f"Salesforce user {target_id} is gone") from None
        return Applied(refused=refused)

    async def collection(self, method: str, records: list[dict[str, Any]], fence: Fence) -> list[dict[str, Any]]:
        """sObject Collections, up to 200 a call (``allOrNone`` false); each record's result."""
        results: list[dict[str, Any]] = []
        for start in range(0, len(records), COLLECTION_MAX):
            chunk = records[start : start + COLLECTION_MAX]
            fence()
            answer = await self.client.rest(method, "composite/sobjects", json={"allOrNone": False, "records": chunk})
            results += list(answer or [])
        return results

    async def grant(self, target_id: str, names: list[str], fence: Fence) -> None:
        ids = await self.names.grant_ids(names)
        records = [
            {"attributes": {"type": "PermissionSetAssignment"}, "AssigneeId": target_id, field: value}
            for field, value in ids.values()
        ]
        if self.new_assignments.linger_s:  # bulk work: with the others' assignments, in one call
            results = await asyncio.gather(*(self.new_assignments.submit(r, fence) for r in records))
        else:
            results = await self.collection("POST", records, fence)
        for result in results:
            errors = result.get("errors") or []
            codes = {str(e.get("statusCode")) for e in errors}
            if not result.get("success") and codes - {"DUPLICATE_VALUE"}:  # already assigned is done
                raise ApiError(",".join(sorted(codes)), "; ".join(str(e.get("message")) for e in errors))

    async def assignments(self, target_id: str, names: list[str]) -> list[str]:
        """The ids of ``target_id``'s assignments of ``names``."""
        ids = await self.names.grant_ids(names, missing_ok=True)
        wanted = {value[:15] for _, value in ids.values()}
        query = soql.select(ASSIGNMENT, "PermissionSetAssignment", soql.eq("AssigneeId", target_id))
        rows = await self.client.query(query)
        return [
            str(r["Id"])
            for r in rows
            if str(r.get("PermissionSetGroupId") or r.get("PermissionSetId") or "")[:15] in wanted
        ]

    async def ungrant(self, target_id: str, names: list[str], fence: Fence) -> int:
        found = await self.assignments(target_id, names)
        for start in range(0, len(found), COLLECTION_MAX):
            fence()
            ids = ",".join(found[start : start + COLLECTION_MAX])
            await self.client.rest("DELETE", "composite/sobjects", params={"ids": ids, "allOrNone": "false"})
        if not found:
            fence()  # nothing to remove: still no write without the lease
        return len(found)

    # -- reconciliation --------------------------------------------------------------------------------

    async def live_check(self) -> tuple[list[str], list[str]]:
        """The profiles, roles, permission sets (and groups) and queue the section names, and its
        fallback user, looked up in the org; and the licences in use (``entra-sync check``)."""
        ran: list[str] = []
        problems: list[str] = []
        o = self.options
        wanted = {
            ("Profile", "profile"): {p.value for p in o.profiles}
            | ({o.default_profile} if o.default_profile else set()),
            ("UserRole", "role"): {r.value for r in o.roles},
            ("Queue", "queue"): {o.reassign.queue} if o.reassign.queue else set(),
        }
        for (kind, word), names in wanted.items():
            missing = []
            for name in sorted(names):
                try:
                    await self.names.id_of(kind, name)
                except PermanentError:
                    missing.append(name)
            if names:
                ran.append(f"{word}s: {len(names) - len(missing)} of {len(names)} the mapping names exist in the org")
            problems += [
                f"{self.name}: the mapping names the {word} {n!r}, which the org does not have" for n in missing
            ]
        managed = sorted(self.section.managed)
        found = await self.names.grant_ids(managed, missing_ok=True)
        ran.append(f"permission sets: {len(found)} of {len(managed)} the mapping grants exist in the org")
        problems += [
            f"{self.name}: the mapping grants {n!r}, which the org does not have" for n in managed if n not in found
        ]
        if o.reassign.fallback_user:
            rows = await self.client.query(
                soql.select(["Id"], "User", soql.eq("Username", o.reassign.fallback_user.lower()))
            )
            if rows:
                ran.append(f"fallback user {o.reassign.fallback_user!r} exists in the org")
            else:
                problems.append(f"{self.name}: the fallback user {o.reassign.fallback_user!r} is not a user of the org")
        for lic in await self.client.query("SELECT Name, TotalLicenses, UsedLicenses FROM UserLicense"):
            if lic.get("TotalLicenses"):
                ran.append(f"licences: {lic['Name']} {lic['UsedLicenses']} of {lic['TotalLicenses']} in use")
        return ran, problems

    async def tidy(self, apply: bool, fence: Fence | None = None) -> list[str]:
        """What reconciliation reports beside drift: frozen users awaiting an admin, and licence use."""
        return await self.leaver.findings()
