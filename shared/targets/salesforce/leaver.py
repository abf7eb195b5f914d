"""A Salesforce leaver: records reassigned, managed permission sets removed, then deactivated.

The order makes a crash harmless. Open records the leaver owns (Opportunities, Leads and Cases, and
Accounts and Contacts where the section says) go first, to the first owner of the section's ``to``
that can take them: the leaver's manager while active, the fallback user while active, the queue
(Leads and Cases only: Salesforce lets queues own nothing else). Then the managed permission set
assignments come off. ``IsActive = false`` goes last: until it lands the user is still active, so
the redelivered leaver plans the deactivation again and the reassignment goes on where it stopped.

**Never twice, always audited.** A record is chosen by ``OwnerId`` = the leaver, so one already
moved is never chosen again. Before each batch is sent, the batch (object, new owner, ids, or the
Bulk API job) is written to the state store; after it, its audit row (one per batch, the ids in
it) is written and the entry removed. A batch found there on the next attempt was cut off between
the two: the records it shows moved are audited as ``recovered``, the rest are chosen again.

**Batches.** sObject Collections, 200 records a call (Setup objects never mixed in: a batch holds
one object), or one Bulk API 2.0 ingest job for an object with more than ``bulk_over`` records.

**Refusals.** Salesforce refuses to deactivate a default owner (of leads, cases, ...), a workflow
or alert recipient, or a user a custom hierarchy field points at. Then the login is frozen
(``UserLogin.IsFrozen``), the blocker is named in the action's warning (its audit row), and the
user stays active, so the next pass (the next change, the nightly reconciliation) tries again.
A deactivation frees the user's licence: an audit row ``licence_freed`` counts it, and the nightly
report sums those of the last day.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from shared.core.ports import Applied, AuditStore, Fence, StateStore
from shared.core.work import current_item
from shared.errors import NotFound, PermanentError, TransientError
from shared.stores.audit import AuditQuery, AuditRow
from shared.stores.keys import utc_text, utcnow
from shared.targets.salesforce import soql
from shared.targets.salesforce.client import ApiError
from shared.targets.salesforce.rules import REASSIGNABLE, USERNAME, owner_of

if TYPE_CHECKING:
    from shared.targets.salesforce.target import SalesforceTarget

LEDGER: Final = "salesforce_reassign"
BATCH: Final = 200
FREED_WINDOW_H: Final = 24  # the report counts the licences deactivations freed this long back
FREED_LIMIT: Final = 10_000
POLL_S: Final = 2.0
MAX_POLLS: Final = 150  # a Bulk API job watched for up to five minutes, then the next attempt goes on
OPEN: Final = {
    "Opportunity": " AND IsClosed = false",
    "Lead": " AND IsConverted = false",
    "Case": " AND IsClosed = false",
    "Account": "",
    "Contact": "",
}
BLOCKERS: Final = (
    (("default", "owner"), "default owner (a default lead or case owner, a web-to-lead or web-to-case creator)"),
    (("default", "creator"), "default owner (a default lead or case owner, a web-to-lead or web-to-case creator)"),
    (("automated case user",), "default owner (the Automated Case User)"),
    (("workflow",), "workflow or alert recipient"),
    (("alert",), "workflow or alert recipient"),
    (("hierarchy",), "a custom hierarchy field points at the user"),
)


def blocker(exc: ApiError) -> str:
    """What keeps Salesforce from deactivating a user, in the admin's words."""
    text = f"{exc.code} {exc.detail}".casefold()
    for words, name in BLOCKERS:
        if all(w in text for w in words):
            return name
    return "a blocker Salesforce names"


class Leaver:
    def __init__(self, target: SalesforceTarget, state: StateStore | None, audit: AuditStore | None):
        self.target = target
        self.state = state
        self.audit = audit

    @property
    def client(self) -> Any:
        return self.target.client

    # -- the steps --------------------------------------------------------------------------------

    async def deprovision(self, user_id: str, fence: Fence) -> Applied:
        user = await self.target.user_now(soql.record_id(user_id))
        if user is None:
            raise NotFound(f"Salesforce user {user_id} is gone")
        uid = str(user["Id"])
        identity = owner_of(user.get(self.target.options.owner_field)) or ""
        await self.resume(uid, identity)
        notes = await self.reassign(user, identity, fence)
        managed = sorted(self.target.section.managed)
        if managed:
            await self.target.ungrant(uid, managed, fence)
        if user.get("IsActive"):
            fence()
            try:
                await self.client.rest("PATCH", f"sobjects/User/{soql.record_id(uid)}", json={"IsActive": False})
            except ApiError as exc:
                why = blocker(exc)
                await self.freeze(uid, fence, frozen=True)
                notes.insert(
                    0,
                    f"Salesforce refused to deactivate {user.get(USERNAME)}: {why} ({exc.code}: {exc.detail}). "
                    "Its login is frozen (it still holds a licence); once an admin clears the blocker the next "
                    "pass deactivates it",
                )
                return Applied(warning="; ".join(notes))
            await self._row(identity, uid, "licence_freed", "ok", detail=f"{user.get(USERNAME)} deactivated")
        return Applied(warning="; ".join(notes))

    async def reactivate(self, user_id: str, fence: Fence) -> Applied:
        fence()
        await self.client.rest("PATCH", f"sobjects/User/{soql.record_id(user_id)}", json={"IsActive": True})
        await self.freeze(user_id, fence, frozen=False)
        return Applied()

    async def freeze(self, user_id: str, fence: Fence, *, frozen: bool) -> None:
        logins = await self.client.query(soql.select(("Id", "IsFrozen"), "UserLogin", soql.eq("UserId", user_id)))
        for login in logins:
            if bool(login.get("IsFrozen")) != frozen:
                fence()
                path = f"sobjects/UserLogin/{soql.record_id(str(login['Id']))}"
                await self.client.rest("PATCH", path, json={"IsFrozen": frozen})

    # -- reassignment -------------------------------------------------------------------------------

    async def owners(self, user: Mapping[str, Any]) -> dict[str, str]:
        """The section's new owners that can take records now, by kind, in its order."""
        policy = self.target.options.reassign
        found: dict[str, str] = {}
        for kind in policy.to:
            if kind == "manager" and user.get("ManagerId"):
                where = f"{soql.eq('Id', str(user['ManagerId']))} AND IsActive = true"
                rows = await self.client.query(soql.select(("Id",), "User", where))
                if rows:
                    found[kind] = str(rows[0]["Id"])
            elif kind == "fallback_user" and policy.fallback_user:
                where = f"{soql.eq(USERNAME, policy.fallback_user)} AND IsActive = true"
                rows = await self.client.query(soql.select(("Id",), "User", where))
                if rows:
                    found[kind] = str(rows[0]["Id"])
            elif kind == "queue" and policy.queue:
                found[kind] = await self.target.names.id_of("Queue", policy.queue)
        return found

    async def reassign(self, user: Mapping[str, Any], identity: str, fence: Fence) -> list[str]:
        """Every open record of the leaver's, to its new owner; what could not be done, a line each."""
        policy = self.target.options.reassign
        uid = str(user["Id"])
        notes: list[str] = []
        owners: dict[str, str] | None = None
        for obj in policy.objects:
            where = f"{soql.eq('OwnerId', uid)}{OPEN[obj]}"
            first = await self.client.query(soql.select(("Id",), obj, where, policy.bulk_over + 1))
            if not first:
                continue
            if owners is None:
                owners = await self.owners(user)
            to = next((i for k, i in owners.items() if k != "queue" or REASSIGNABLE[obj]), None)
            if to is None:
                notes.append(
                    f"{len(first)}{'+' if len(first) > policy.bulk_over else ''} open {obj} records stay with "
                    f"{user.get(USERNAME)}: no active manager, fallback user or queue can own them"
                )
                continue
            if len(first) > policy.bulk_over:
                ids = [str(r["Id"]) for r in await self.client.query(soql.select(("Id",), obj, where))]
                await self.bulk(obj, ids, to, uid, identity, fence)
                continue
            # The first query held them all (at most bulk_over): moved in batches, not chosen again.
            ids = [str(r["Id"]) for r in first]
            for start in range(0, len(ids), BATCH):
                if not await self.move(obj, ids[start : start + BATCH], to, uid, identity, fence):
                    notes.append(f"some open {obj} records of {user.get(USERNAME)} could not be reassigned (audited)")
                    break
        return notes

    def _key(self, uid: str) -> str:
        return f"{self.target.name}|{uid}"

    async def move(self, obj: str, ids: list[str], to: str, uid: str, identity: str, fence: Fence) -> bool:
        """One collections call; whether every record moved."""
        await self._note(uid, {"object": obj, "to": to, "ids": ids, "at": utcnow()})
        records = [{"attributes": {"type": obj}, "id": i, "OwnerId": to} for i in ids]
        results = await self.target.collection("PATCH", records, fence)
        moved = [i for i, r in zip(ids, results, strict=False) if r.get("success")]
        failed = {
            i: "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in r.get("errors") or ())
            for i, r in zip(ids, results, strict=False)
            if not r.get("success")
        }
        await self._moved(identity, uid, obj, to, moved, "ok")
        if failed:
            await self._row(identity, uid, "reassign", "failed", {"object": obj, "to": to, "records": failed})
        await self._done(uid)
        return not failed

    async def bulk(self, obj: str, ids: list[str], to: str, uid: str, identity: str, fence: Fence) -> None:
        """One Bulk API 2.0 update job of every record, watched to its end; audited by its results."""
        fence()
        job = await self.client.rest(
            "POST", "jobs/ingest", json={"object": obj, "operation": "update", "contentType": "CSV", "lineEnding": "LF"}
        )
        job_id = str(job["id"])
        await self._note(uid, {"object": obj, "to": to, "job": job_id, "at": utcnow()})
        body = "Id,OwnerId\n" + "".join(f"{i},{to}\n" for i in ids)
        fence()
        await self.raw("PUT", f"jobs/ingest/{job_id}/batches", data=body.encode(), headers={"Content-Type": "text/csv"})
        fence()
        await self.client.rest("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
        await self.settle_job(obj, job_id, to, uid, identity, "ok")

    async def settle_job(self, obj: str, job_id: str, to: str, uid: str, identity: str, outcome: str) -> None:
        for _ in range(MAX_POLLS):
            job = await self.client.rest("GET", f"jobs/ingest/{job_id}")
            state = str((job or {}).get("state"))
            if state in {"JobComplete", "Failed", "Aborted"}:
                break
            if state == "Open":  # cut off before its upload completed: it did nothing
                await self.client.rest("PATCH", f"jobs/ingest/{job_id}", json={"state": "Aborted"})
                await self._done(uid)
                return
            await self.target.clock.sleep(POLL_S)
        else:
            raise TransientError(f"Salesforce Bulk API job {job_id} is still running; the next attempt goes on")
        text = await self.raw("GET", f"jobs/ingest/{job_id}/successfulResults")
        moved = [row["Id"] for row in csv.DictReader(io.StringIO(text)) if row.get("Id")]
        for start in range(0, len(moved), BATCH):
            await self._moved(identity, uid, obj, to, moved[start : start + BATCH], outcome, job_id)
        await self._done(uid)

    async def raw(self, method: str, path: str, **kwargs: Any) -> str:
        """A call whose answer is not JSON (Bulk API CSV)."""

        def run(sf: Any) -> str:
            return str(sf._call_salesforce(method, sf.base_url + path, name=path, **kwargs).text)

        return str(await self.client.call(run))

    async def resume(self, uid: str, identity: str) -> None:
        """A batch an earlier attempt sent and never recorded: audit what it moved (see the module docs)."""
        if self.state is None:
            return
        left = await self.state.get(LEDGER, self._key(uid))
        if not left:
            return
        obj, to = str(left["object"]), str(left["to"])
        if left.get("job"):
            await self.settle_job(obj, str(left["job"]), to, uid, identity, "recovered")
            return
        ids = [str(i) for i in left.get("ids") or ()]
        if ids:
            rows = await self.client.query(soql.select(("Id", "OwnerId"), obj, soql.within("Id", ids)))
            moved = [str(r["Id"]) for r in rows if str(r.get("OwnerId"))[:15] == to[:15]]
            await self._moved(identity, uid, obj, to, moved, "recovered")
        await self._done(uid)

    async def _note(self, uid: str, entry: Mapping[str, Any]) -> None:
        if self.state is not None:
            await self.state.put(LEDGER, self._key(uid), entry)

    async def _done(self, uid: str) -> None:
        if self.state is not None:
            await self.state.delete(LEDGER, self._key(uid))

    async def _moved(
        self, identity: str, uid: str, obj: str, to: str, ids: list[str], outcome: str, job: str = ""
    ) -> None:
        if not ids:
            return
        how = f"Bulk API job {job}" if job else "sObject Collections"
        detail = f"{len(ids)} open {obj} records to {to} ({how})"
        if outcome == "recovered":
            detail += "; an earlier attempt moved them and stopped before recording it"
        await self._row(identity, uid, "reassign", outcome, {"object": obj, "to": to, "records": ids}, detail)

    async def _row(
        self,
        identity: str,
        uid: str,
        action: str,
        outcome: str,
        diff: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        if self.audit is None:
            return
        item = current_item()  # the worker's work item: its correlation id, where it came from
        if item is not None and item.id == identity:
            row = AuditRow.for_item(item, self.target.name, action, outcome, uid, diff, detail)
        else:
            row = AuditRow(
                "", "leaver", uid, identity, self.target.name, uid, action, outcome, diff, detail,
                identity_source=self.target.section.source,
            )  # fmt: skip
        await self.audit.write(row)

    # -- reconciliation's findings ---------------------------------------------------------------------

    async def findings(self) -> list[str]:
        """Frozen users still active (a blocker awaits an admin), licences freed by deactivations in
        the last :data:`FREED_WINDOW_H` hours (from the audit trail), and licence use against the limit."""
        lines = []
        frozen = await self.client.query(soql.select(("UserId",), "UserLogin", "IsFrozen = true"))
        ids = [str(r["UserId"]) for r in frozen]
        if ids:
            where = f"{soql.within('Id', ids[:200])} AND IsActive = true"
            users = await self.client.query(soql.select(("Id", USERNAME), "User", where))
            for u in users:
                lines.append(f"frozen, awaiting an admin to clear what blocks its deactivation: {u.get(USERNAME)}")
        try:
            licences = await self.client.query(soql.select(("Name", "TotalLicenses", "UsedLicenses"), "UserLicense"))
        except PermanentError:
            licences = []
        for lic in licences:
            lines.append(f"licences {lic.get('Name')}: {lic.get('UsedLicenses')} used of {lic.get('TotalLicenses')}")
        if self.audit is not None:
            since = utc_text(datetime.now(UTC) - timedelta(hours=FREED_WINDOW_H))
            rows = await self.audit.search(AuditQuery(
                since=since, target=self.target.name, action="licence_freed", outcome="ok",
                limit=FREED_LIMIT,
            ))  # fmt: skip
            shown = ", ".join(sorted({str(r.get("detail", "")).split(" ", 1)[0] for r in rows})[:20])
            more = " (at least)" if len(rows) >= FREED_LIMIT else ""
            lines.append(
                f"licences freed by deactivations in the last {FREED_WINDOW_H} hours: {len(rows)}{more}"
                + (f": {shown}" if shown else "")
            )
        return lines
