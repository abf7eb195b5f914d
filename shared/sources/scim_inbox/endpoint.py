"""The inbound SCIM endpoint: a request in (method, path, query, headers, body), a reply out.

Per request, in this order: the source's bearer token (compared in constant time; a missing or
wrong one, or a source this app does not serve, is a 401 with a SCIM error body before anything
else is read), the body's size, the query (Entra's ``aadOptscim062020`` flag dropped, the filter's
length capped), the body's JSON and Entra's quirks (:func:`.schema.normalise_body`), then
scim2-server's protocol over :class:`.storage.InboxStorage` under the Entra-tolerant policy.
Every accepted change enqueues the users it touched on the lane: a user's own change as
``WorkItem("user", id, "push", identity_source=<source>)``, a membership change as ``group`` items
naming up to :data:`~shared.core.work.MAX_ITEM_USERS` of its users each, which the worker converges
in one invocation (:meth:`shared.services.worker.Worker.sync_members`). A change that could not be
enqueued answers 503, so Entra retries it, and the retry enqueues again (a repeated create or a
PATCH that changes nothing still names its user).

Trusted for: no reply is a 500 for anything a caller sends (a storage or queue failure is a 503);
nothing a request says reaches a log or audit row except ids this store issued, a userName-free
reason and counts; the token never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, cast

from scim2_models import (
    InvalidSyntaxException,
    PatchOp,
    PatchOperation,
    PayloadTooLargeException,
    PreconditionFailedException,
    Resource,
    ResourceType,
    SCIMException,
    UnauthorizedException,
)
from scim2_models.path import CompareOperator, Comparison
from scim2_server.conditions import Conditions
from scim2_server.handler import AsyncScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import ScimResponse
from scim2_server.service import ScimService

from shared.core.ports import AuditStore, WorkQueue
from shared.core.work import MAX_ITEM_USERS, WorkItem, parse_json
from shared.errors import BadInput
from shared.settings import Secret
from shared.sources.scim_inbox import schema
from shared.sources.scim_inbox.storage import TOUCHED, InboxStorage, Replayed, Touched, touch
from shared.stores.audit import AuditRow

log = logging.getLogger("entra_sync.scim_inbox")

PATCH_ATTEMPTS: Final = 8  # a PATCH re-read and re-applied after a concurrent write to its resource
# Whether the current PATCH asked for a body (``attributes`` or ``excludedAttributes``): then the
# whole group is read and answered, not only the members it names.
ANSWERS_WITH_BODY: contextvars.ContextVar[bool] = contextvars.ContextVar("scim_inbox_patch_body", default=False)
SECURITY_HEADERS: Final = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "" if self.body is None else json.dumps(self.body, separators=(",", ":"))


class Turns:
    """One turn at a time per key, within this process: a lock per key that exists only while a
    request holds it or waits for it (the map never outgrows the requests in flight)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        lock, waiting = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, waiting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, waiting = self._locks[key]
            if waiting == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, waiting - 1)


class InboxHandler(AsyncScimHandler):
    """scim2-server's handler with what this store needs: a PATCH re-applied when its resource was
    written meanwhile (the group's members it read are what its change is taken against), PATCHes of
    one resource taking turns within the process, and a repeated user create answered with the
    stored user."""

    storage: InboxStorage

    def __init__(self, service: ScimService, storage: InboxStorage, on_replay: Any = None):
        super().__init__(service, storage)
        self.on_replay = on_replay
        self.turns = Turns()

    async def create(self, request: ScimRequest) -> ScimResponse:
        try:
            return await super().create(request)
        except Replayed as replay:
            touch([replay.stored.id or ""])
            if self.on_replay is not None:
                await self.on_replay(replay.stored)
            return self.service.creation_response(request.base_url, replay.stored)

    async def patch(self, request: ScimRequest) -> ScimResponse:
        token = ANSWERS_WITH_BODY.set(
            any(key.casefold() in ("attributes", "excludedattributes") for key in request.query)
        )
        try:
            return await super().patch(request)
        finally:
            ANSWERS_WITH_BODY.reset(token)

    async def patch_resource(
        self, resource_type: ResourceType, resource_id: str, patch_op: PatchOp[Any], conditions: Conditions
    ) -> Resource[Any]:
        """Entra sends PATCHes of one group in parallel (an initial cycle adds members 50 at a time).
        Each writes over the version it read, so two at once conflict and one reads and applies
        again; under load, with seconds between read and write, they could conflict until their
        attempts ran out. Within this process they take turns instead: only PATCHes arriving at other
        instances meet a conflict, and the ETag decides those."""
        async with self.turns.turn(f"{resource_type.name}|{resource_id}"):
            return await self._patch_resource(resource_type, resource_id, patch_op, conditions)

    async def _patch_resource(
        self, resource_type: ResourceType, resource_id: str, patch_op: PatchOp[Any], conditions: Conditions
    ) -> Resource[Any]:
        delta = member_delta(patch_op) if resource_type.name == "Group" else None
        if delta is not None and conditions == Conditions() and not ANSWERS_WITH_BODY.get():
            return await self._patch_members(resource_id, *delta)
        for attempt in range(PATCH_ATTEMPTS):
            current, row = await self.storage.read(resource_type, resource_id)
            previous = current.model_copy(deep=True)
            assert current.meta is not None
            patched = self.service.apply_patch(current, patch_op, conditions)
            if patched is None:
                if resource_type.name == "User":
                    touch([resource_id])  # a retried PATCH whose first answer was lost: enqueue again
                return previous
            try:
                return await self.storage.update(
                    resource_type, patched, expected_version=current.meta.version, previous=previous, read=row
                )
            except PreconditionFailedException:
                if conditions.if_match is not None or attempt == PATCH_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _patch_members(self, group_id: str, added: dict[str, dict[str, Any]], removed: set[str]) -> Resource[Any]:
        """A PATCH that only adds and removes named members: their rows and the group's version, and
        the answer a 204 (nothing asked for a body), whatever the group's size."""
        for attempt in range(PATCH_ATTEMPTS):
            try:
                return await self.storage.change_members(group_id, added, removed)
            except PreconditionFailedException:
                if attempt == PATCH_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


def member_delta(patch_op: PatchOp[Any]) -> tuple[dict[str, dict[str, Any]], set[str]] | None:
    """(members added: id -> type and display, members removed) when every operation of a group's
    PATCH adds or removes members it names, in any of the forms Entra sends: ``add`` with path
    ``members`` and a value list, ``remove`` with ``members[value eq "id"]``, ``remove`` with path
    ``members`` and a value list. Operations apply in order (an add then a remove of one member
    removes it). None for anything else (a rename, a replace of the list, a remove of every member,
    a value of another shape): scim2-server applies those to the whole group."""
    added: dict[str, dict[str, Any]] = {}
    removed: set[str] = set()
    for operation in patch_op.operations or []:
        path = operation.path
        if path is None or str(path).casefold().split("[", 1)[0] != "members":
            return None
        value_filter = path.value_filter
        if operation.op == PatchOperation.Op.add and value_filter is None:
            entries = _member_values(operation.value)
            if entries is None:
                return None
            for member_id, entry in entries.items():
                added[member_id] = entry
                removed.discard(member_id)
        elif operation.op == PatchOperation.Op.remove:
            if value_filter is None:
                entries = _member_values(operation.value)
                if not entries:
                    return None
                ids = set(entries)
            elif _is_value_eq(value_filter) and operation.value is None and str(path).endswith("]"):
                ids = {str(cast(Comparison, value_filter).value)}
            else:
                return None
            for member_id in ids:
                removed.add(member_id)
                added.pop(member_id, None)
        else:
            return None
    return added, removed


def _member_values(value: Any) -> dict[str, dict[str, Any]] | None:
    """id -> {type, display} of a list of member objects each with a string ``value``; else None."""
    if not isinstance(value, list):
        return None
    entries: dict[str, dict[str, Any]] = {}
    for member in value:
        if not isinstance(member, dict):
            return None
        keys = {k.casefold(): v for k, v in member.items()}
        if not isinstance(keys.get("value"), str) or set(keys) - {"value", "type", "display", "$ref"}:
            return None
        entries[keys["value"]] = {"type": keys.get("type"), "display": keys.get("display")}
    return entries


def _is_value_eq(node: Any) -> bool:
    return (
        isinstance(node, Comparison)
        and node.op == CompareOperator.eq
        and node.attr_path.sub_attr is None
        and node.attr_path.attr.casefold() == "value"
        and isinstance(node.value, str)
    )


class InboxEndpoint:
    """One inbound source's endpoint: its name, token, storage, and the queue its changes go to."""

    def __init__(
        self,
        name: str,
        token: Secret,
        storage: InboxStorage,
        queue: WorkQueue,
        audit: AuditStore | None = None,
    ):
        self.name = name
        self.token = token
        self.storage = storage
        self.queue = queue
        self.audit = audit
        self.service = ScimService(storage.provider)
        self.handler = InboxHandler(self.service, storage, on_replay=self._audit_replay)

    def authentic(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries this source's token (constant time)."""
        return bearer_matches(authorization, self.token)

    async def handle(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes, base_url: str
    ) -> Reply:
        """Serve one request whose token was checked (:meth:`authentic`)."""
        if len(body) > schema.MAX_BODY_BYTES:
            return self._error(
                PayloadTooLargeException(detail=f"a request body is limited to {schema.MAX_BODY_BYTES} bytes")
            )
        try:
            request = ScimRequest(
                method=method.upper(),
                base_url=base_url,
                path=path,
                query=schema.normalise_query(query),
                headers=dict(headers),
                body=_normalised(body),
            )
        except SCIMException as exc:
            return self._error(exc)
        touched = Touched()
        token = TOUCHED.set(touched)
        try:
            response = await self.handler.handle(request)
        except SCIMException as exc:
            return self._error(exc)
        except Exception:
            log.exception("the %s inbound store failed a %s request", self.name, request.method)
            return self._unavailable("the store is unavailable; retry later")
        finally:
            TOUCHED.reset(token)
        if touched.users and not await self._enqueue(touched):
            return self._unavailable("the change is stored but could not be queued; retry the request")
        return Reply(int(response.status), response.body, {**response.headers, **SECURITY_HEADERS})

    async def _enqueue(self, touched: Touched) -> bool:
        ref = f"scim:{self.name}"
        ids = sorted(touched.users)
        if touched.group and len(ids) > 1:  # a membership change: its users in items of a few each
            items = [
                WorkItem("group", touched.group, "push", ref, identity_source=self.name, users=tuple(chunk))
                for chunk in (ids[i : i + MAX_ITEM_USERS] for i in range(0, len(ids), MAX_ITEM_USERS))
            ]
        else:
            items = [WorkItem("user", uid, "push", ref, identity_source=self.name) for uid in ids]
        try:
            await self.queue.send(items)
        except Exception:
            log.exception("could not enqueue %d users pushed to %s", len(ids), self.name)
            return False
        return True

    async def _audit_replay(self, stored: Resource[Any]) -> None:
        if self.audit is None:
            return
        await self.audit.write(
            AuditRow(
                correlation_id=uuid.uuid4().hex, source="push", source_ref=f"scim:{self.name}",
                identity=str(stored.id), target="", target_id="", action="replay", outcome="ok",
                detail="a create repeated a stored user (same userName and externalId): answered with the stored user",
            )
        )  # fmt: skip

    def _error(self, exc: SCIMException) -> Reply:
        response = self.service.error_response(exc)
        return Reply(int(response.status), response.body, {**response.headers, **SECURITY_HEADERS})

    def _unavailable(self, detail: str) -> Reply:
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "503", "detail": detail}
        return Reply(
            int(HTTPStatus.SERVICE_UNAVAILABLE),
            body,
            {"Content-Type": "application/scim+json", "Retry-After": "5", **SECURITY_HEADERS},
        )


class InboxEndpoints:
    """Every inbound source this app serves, by name: where a request is authenticated."""

    def __init__(self, endpoints: Mapping[str, InboxEndpoint]):
        self.endpoints = dict(endpoints)
        self._decoy = Secret(uuid.uuid4().hex)  # what a request to an unknown source is compared with

    async def handle(
        self,
        source: str,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        base_url: str,
    ) -> Reply:
        """A request to ``source``: 401 unless it carries that source's token. A source this app
        does not serve answers the same 401 as a wrong token (after the same comparison), so the
        names of the sources are not revealed to whoever holds no token."""
        endpoint = self.endpoints.get(source)
        authorization = next((v for k, v in headers.items() if k.casefold() == "authorization"), None)
        token = endpoint.token if endpoint is not None else self._decoy
        if not bearer_matches(authorization, token) or endpoint is None:
            log.warning("refused a SCIM request to an inbound source: missing or wrong bearer token")
            return unauthorized()
        return await endpoint.handle(method, path, query, headers, body, base_url)


def bearer_matches(authorization: str | None, token: Secret) -> bool:
    """Whether an Authorization header is ``Bearer <token>``: the token compared in constant time
    (and always compared, so the scheme's check tells nothing about the token)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    ok = hmac.compare_digest(given.strip().encode(), token.reveal().encode())
    return ok and scheme.casefold() == "bearer"


def unauthorized() -> Reply:
    error = UnauthorizedException(detail="a valid bearer token is required")
    body = error.to_error().model_dump()
    return Reply(
        401,
        body,
        {"Content-Type": "application/scim+json", "WWW-Authenticate": 'Bearer realm="SCIM"', **SECURITY_HEADERS},
    )


def _normalised(body: bytes) -> bytes:
    if not body.strip():
        return body
    try:
        parsed = parse_json(body, "request body")
    except BadInput as exc:
        raise InvalidSyntaxException(detail=f"the request body is not JSON: {exc}") from exc
    return json.dumps(schema.normalise_body(parsed)).encode()
