"""What the section calls by name, as the org's ids: profiles, roles, permission sets, permission set
groups and queues. Each table is read whole (an org has hundreds of these, not millions) on first
use and again after :data:`TTL_S`, or at once when a name is missing (an admin just made it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from shared.clock import Clock
from shared.errors import PermanentError
from shared.targets.salesforce.rules import PERMISSION_SET_GROUP

TTL_S: Final = 600.0
QUERIES: Final = {
    "Profile": "SELECT Id, Name FROM Profile",
    "UserRole": "SELECT Id, Name FROM UserRole",
    "PermissionSet": "SELECT Id, Name FROM PermissionSet WHERE IsOwnedByProfile = false",
    "PermissionSetGroup": "SELECT Id, DeveloperName FROM PermissionSetGroup",
    "Queue": "SELECT Id, DeveloperName FROM Group WHERE Type = 'Queue'",
}
NAME_FIELD: Final = {"PermissionSetGroup": "DeveloperName", "Queue": "DeveloperName"}


@dataclass
class _Table:
    by_name: dict[str, str] = field(default_factory=dict)
    by_id: dict[str, str] = field(default_factory=dict)
    read_at: float = -1.0


class Names:
    """Name <-> id of the org's profiles, roles, permission sets (and groups) and queues."""

    def __init__(self, query: Callable[[str], Awaitable[list[dict[str, Any]]]], clock: Clock):
        self.query = query
        self.clock = clock
        self.tables: dict[str, _Table] = {}

    async def _table(self, kind: str, *, fresh: bool = False) -> _Table:
        table = self.tables.get(kind)
        if table is None or fresh or self.clock.now() - table.read_at > TTL_S:
            rows = await self.query(QUERIES[kind])
            key = NAME_FIELD.get(kind, "Name")
            table = _Table(read_at=self.clock.now())
            for row in rows:
                table.by_name[str(row[key]).casefold()] = str(row["Id"])
                table.by_id[str(row["Id"])[:15]] = str(row[key])
            self.tables[kind] = table
        return table

    async def id_of(self, kind: str, name: str) -> str:
        """The id of ``name``; a name the org does not have is a permanent error naming it."""
        table = await self._table(kind)
        found = table.by_name.get(name.casefold())
        if found is None:
            table = await self._table(kind, fresh=True)
            found = table.by_name.get(name.casefold())
        if found is None:
            raise PermanentError(f"the Salesforce org has no {kind} named {name!r} (the mapping names it)")
        return found

    async def name_of(self, kind: str, record_id: str | None) -> str | None:
        if not record_id:
            return None
        table = await self._table(kind)
        return table.by_id.get(str(record_id)[:15])

    async def grant_ids(self, names: list[str], *, missing_ok: bool = False) -> dict[str, tuple[str, str]]:
        """Entitlement name -> (the assignment's field, the id): a permission set by API name, a
        permission set group as ``group:<DeveloperName>``. With ``missing_ok`` a name the org does
        not have is left out (nobody can hold it) instead of an error."""
        out = {}
        for name in names:
            group = name.startswith(PERMISSION_SET_GROUP)
            kind, field = (
                ("PermissionSetGroup", "PermissionSetGroupId") if group else ("PermissionSet", "PermissionSetId")
            )
            try:
                out[name] = (field, await self.id_of(kind, name.removeprefix(PERMISSION_SET_GROUP)))
            except PermanentError:
                if not missing_ok:
                    raise
        return out

    async def grant_name(self, assignment: dict[str, Any]) -> str | None:
        """The entitlement name of a PermissionSetAssignment row."""
        group = assignment.get("PermissionSetGroupId")
        if group:
            name = await self.name_of("PermissionSetGroup", group)
            return None if name is None else PERMISSION_SET_GROUP + name
        return await self.name_of("PermissionSet", assignment.get("PermissionSetId"))
