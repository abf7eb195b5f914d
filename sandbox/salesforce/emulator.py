"""The Salesforce REST API (v61.0 shapes) on loopback, driven by simple-salesforce in tests.

Served (any ``vNN.N`` in the path), on the ground of :mod:`sandbox.server`:

* ``POST /services/oauth2/token``: OAuth 2.0 client credentials (form body); answers
  ``access_token``, ``instance_url`` (``https://127.0.0.1:<port>``), ``token_type: Bearer``. Bad
  credentials: 400 ``invalid_client``; another grant: 400 ``unsupported_grant_type``.
* Every other call needs ``Authorization: Bearer <token>`` (an issued token before it expires, or
  the static token); otherwise 401 ``[{"message": "Session expired or invalid", "errorCode":
  "INVALID_SESSION_ID"}]``. Issued tokens live ``token_ttl_s`` on the emulator's clock and
  :meth:`SalesforceEmulator.expire_tokens` ends them all at once.
* ``/sobjects/<Type>``: create (201 ``{id, success, errors}``), get by id (``?fields=``), PATCH
  (204), DELETE (204; assignments, queues and CRM records), get and upsert by external id
  (``/sobjects/<Type>/<Field>/<value>``: 201 created, 200 ``created: false`` updated, 300 when
  several match), ``/sobjects/<Type>/describe`` (fields only).
* ``/query?q=`` and ``/queryAll``: the SOQL of :mod:`sandbox.soql`, paged by ``batch_size``
  (default 2,000; ``Sforce-Query-Options: batchSize=N`` lowers it) with ``done: false`` and
  ``nextRecordsUrl`` (``/services/data/vNN.N/query/01g...-2000``).
* ``/composite/sobjects``: POST (create), PATCH (update), DELETE (``?ids=``), GET by type: at
  most 200 records (else 400 ``EXCEEDED_ID_LIMIT``), ``allOrNone`` (every other record answers
  ``ALL_OR_NONE_OPERATION_ROLLED_BACK`` and nothing is written), Setup objects never with others
  in one call (the later kind fails with ``MIXED_DML_OPERATION``).
* ``/jobs/ingest``: Bulk API 2.0 ingest (:mod:`sandbox.salesforce.bulk`).
* ``/limits``: ``DailyApiRequests`` ``Max`` / ``Remaining``.

Every API answer carries ``Sforce-Limit-Info: api-usage=<used>/<max>``. Each authenticated call
(a query page, a collection, a bulk step: one each) uses one request of a rolling 24-hour daily
allocation (``daily_limit``, default 100,000); none left is 403 ``REQUEST_LIMIT_EXCEEDED``.

Route names (request log, rate limits, faults): ``salesforce.oauth.token``,
``salesforce.<plural>.create|get|update|upsert|delete|describe`` (``users``, ``profiles``,
``user_roles``, ``permission_sets``, ``permission_set_groups``, ``permission_set_assignments``,
``user_logins``, ``groups``, ``queue_sobjects``, ``accounts``, ``contacts``, ``opportunities``,
``leads``, ``cases``, ``user_licenses``), ``salesforce.sobjects.unknown``, ``salesforce.query``,
``salesforce.query.more``, ``salesforce.collections.create|update|delete|get``,
``salesforce.bulk.create|upload|state|get|results|delete``, ``salesforce.limits``. An injected
fault answers in Salesforce's error shape (503 ``SERVER_UNAVAILABLE``, 500 ``UNKNOWN_EXCEPTION``).

Control endpoints (besides the base's reset, requests, limits, faults): ``seed``, ``snapshot``,
``other-orgs``, ``blockers``, ``api-limit``, ``clock``, ``tokens/expire``, ``token``, ``query``,
``licenses``, ``bulk``, ``bulk/process`` (see :meth:`SalesforceEmulator._register_controls`).
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import requests
from simple_salesforce.api import Salesforce

from .. import soql
from ..server import Emulator, HttpError, Request, Response
from .bulk import BulkJobs
from .org import Org, Record
from .schema import SfError, normalise_id
from .seed import seed_org
from .session import loopback_session

V = r"/services/data/v(?P<v>\d+\.\d+)"
DEFAULT_VERSION = "61.0"
TOKEN_TTL_S = 7200.0  # Salesforce's default session timeout: two hours
DAILY_LIMIT = 100_000
BATCH_SIZE = 2000
MAX_COLLECTION = 200
MAX_OPEN_CURSORS = 100
_FAULT_CODES = {503: "SERVER_UNAVAILABLE", 500: "UNKNOWN_EXCEPTION", 502: "SERVER_UNAVAILABLE"}
_ROLLED_BACK = SfError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)


class _Rollback(Exception):
    pass


class SalesforceEmulator(Emulator):
    name = "salesforce"
    api_prefix = "/services/data/v" + DEFAULT_VERSION

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "sandbox-consumer-key",
        client_secret: str = "sandbox-consumer-secret",
        token: str = "sandbox-salesforce-token",
        daily_limit: int = DAILY_LIMIT,
        batch_size: int = BATCH_SIZE,
        token_ttl_s: float = TOKEN_TTL_S,
        now: Callable[[], float] = time.time,
        fault_seed: int = 0,
    ):
        super().__init__(host, port, fault_seed)
        self.client_id = client_id
        self.client_secret = client_secret
        self.static_token = token
        self.token_ttl_s = token_ttl_s
        self._clock = now
        self._offset = 0.0
        self._defaults = (daily_limit, batch_size)
        self._tokens: dict[str, float] = {}
        self._init_state()
        self._register_routes()
        self._register_controls()

    # -- state -------------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's clock: the injected one plus what ``/_control/clock`` advanced."""
        return self._clock() + self._offset

    def _init_state(self) -> None:
        self.daily_limit, self.batch_size = self._defaults
        self._usage: dict[int, int] = {}  # hour since epoch -> API requests used in it
        self._fresh_org({})

    def _fresh_org(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._generation = getattr(self, "_generation", 0) + 1
        self.org = Org(now=self.now, seed=self._generation)
        self.bulk = BulkJobs(self.org)
        self._cursors: OrderedDict[str, tuple[str, list[Record]]] = OrderedDict()
        return seed_org(self.org, spec)

    def reset(self) -> None:
        """Forget every record, job, cursor, token and API use; the integration user and its
        licence come back, as does the constructor's allocation and batch size."""
        with self.lock:
            self._tokens.clear()
            self._offset = 0.0
            self._init_state()

    def seed(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Replace the org's records with the defaults plus ``spec`` (:mod:`.seed`); tokens,
        API use and settings stay."""
        with self.lock:
            auto = self.bulk.auto_process
            summary = self._fresh_org(spec)
            self.bulk.auto_process = auto
            return summary

    # -- what clients need -------------------------------------------------------------------

    @property
    def instance_url(self) -> str:
        """The https URL simple-salesforce is given; :func:`loopback_session` carries it here."""
        return f"https://{self.host}:{self.port}"

    def session(self) -> requests.Session:
        return loopback_session(self.instance_url)

    def client(self, token: str | None = None) -> Salesforce:
        """simple-salesforce on this emulator (the static token unless ``token`` is given)."""
        return Salesforce(
            instance_url=self.instance_url,
            session_id=token or self.static_token,
            session=self.session(),
            version=DEFAULT_VERSION,
        )

    def issue_token(self) -> str:
        token = "00D5g000000sbx!" + secrets.token_urlsafe(32)
        with self.lock:
            self._tokens[token] = self.now() + self.token_ttl_s
        return token

    def expire_tokens(self) -> int:
        """End every issued token now (the static token stays); how many were live."""
        with self.lock:
            live = sum(1 for expiry in self._tokens.values() if expiry > self.now())
            self._tokens.clear()
        return live

    def advance(self, seconds: float) -> None:
        with self.lock:
            self._offset += seconds

    # -- daily allocation --------------------------------------------------------------------

    def api_used(self) -> int:
        """API requests used in the last 24 hours (hour buckets, as Salesforce's rolling window)."""
        with self.lock:
            hour = int(self.now() // 3600)
            return sum(n for h, n in self._usage.items() if h > hour - 24)

    def set_api_usage(self, used: int | None = None, limit: int | None = None) -> None:
        with self.lock:
            if limit is not None:
                self.daily_limit = int(limit)
            if used is not None:
                self._usage = {int(self.now() // 3600): int(used)}

    def _spend(self) -> None:
        with self.lock:
            if self.api_used() >= self.daily_limit:
                raise HttpError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            hour = int(self.now() // 3600)
            self._usage = {h: n for h, n in self._usage.items() if h > hour - 24}
            self._usage[hour] = self._usage.get(hour, 0) + 1

    # -- vendor hooks ------------------------------------------------------------------------

    def authenticate(self, request: Request) -> None:
        if request.route == "salesforce.oauth.token":
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        valid = False
        if scheme.lower() in {"bearer", "oauth"} and token:
            if hmac.compare_digest(token.encode(), self.static_token.encode()):
                valid = True
            else:
                with self.lock:
                    expiry = self._tokens.get(token)
                valid = expiry is not None and expiry > self.now()
        if not valid:
            raise HttpError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        self._spend()

    def error_response(self, error: HttpError) -> Response:
        code = _FAULT_CODES.get(error.status, "UNKNOWN_EXCEPTION") if error.code == "injected_fault" else error.code
        if code in {"not_found", "method_not_allowed"}:
            code = "NOT_FOUND" if code == "not_found" else "METHOD_NOT_ALLOWED"
        return Response.json([{"message": error.message, "errorCode": code}], error.status, error.headers)

    def dispatch(self, request: Request) -> Response:
        response = super().dispatch(request)
        if request.path.startswith("/services/data/"):
            response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_used()}/{self.daily_limit}"
        return response

    # -- routes ------------------------------------------------------------------------------

    def _route(self, method: str, pattern: str, name: str, handler: Callable[[Request], Response]) -> None:
        def wrapped(request: Request) -> Response:
            try:
                with self.lock:
                    return handler(request)
            except SfError as err:
                return Response.json([err.rest()], err.status)
            except soql.SoqlError as err:
                return Response.json([SfError("MALFORMED_QUERY", str(err)).rest()], 400)

        self.add_route(method, pattern, name, wrapped, write=None if name != "salesforce.oauth.token" else False)

    def _register_routes(self) -> None:
        r = self._route
        r("POST", "/services/oauth2/token", "salesforce.oauth.token", self._oauth_token)
        r("GET", V + "/limits/?", "salesforce.limits", self._limits)
        for verb in ("query", "queryAll"):
            r("GET", V + f"/{verb}/?", "salesforce.query", self._query)
            r("GET", V + f"/{verb}/(?P<locator>[^/]+)", "salesforce.query.more", self._query_more)
        for t in self.org.types.values():
            base = V + "/sobjects/(?P<type>" + t.name + ")"
            n = "salesforce." + t.plural
            r("GET", base + "/describe/?", n + ".describe", self._describe)
            r("POST", base + "/?", n + ".create", self._create)
            r("GET", base + "/(?P<id>[^/]+)", n + ".get", self._get)
            r("PATCH", base + "/(?P<id>[^/]+)", n + ".update", self._update)
            r("DELETE", base + "/(?P<id>[^/]+)", n + ".delete", self._delete)
            r("GET", base + "/(?P<field>[^/]+)/(?P<value>[^/]+)", n + ".get", self._get_external)
            r("PATCH", base + "/(?P<field>[^/]+)/(?P<value>[^/]+)", n + ".upsert", self._upsert)
        for method in ("GET", "POST", "PATCH", "DELETE"):
            r(method, V + "/sobjects/(?P<type>[^/]+)(?:/.*)?", "salesforce.sobjects.unknown", self._unknown_type)
        c = V + "/composite/sobjects"
        r("POST", c + "/?", "salesforce.collections.create", self._collection_create)
        r("PATCH", c + "/?", "salesforce.collections.update", self._collection_update)
        r("DELETE", c + "/?", "salesforce.collections.delete", self._collection_delete)
        r("GET", c + "/(?P<type>[^/]+)", "salesforce.collections.get", self._collection_get)
        j = V + "/jobs/ingest"
        r("POST", j + "/?", "salesforce.bulk.create", self._bulk_create)
        r("PUT", j + "/(?P<id>[^/]+)/batches", "salesforce.bulk.upload", self._bulk_upload)
        r("PATCH", j + "/(?P<id>[^/]+)", "salesforce.bulk.state", self._bulk_state)
        r("GET", j + "/(?P<id>[^/]+)", "salesforce.bulk.get", self._bulk_get)
        r("DELETE", j + "/(?P<id>[^/]+)", "salesforce.bulk.delete", self._bulk_delete)
        kinds = "(?P<kind>successfulResults|failedResults|unprocessedrecords)"
        r("GET", j + "/(?P<id>[^/]+)/" + kinds, "salesforce.bulk.results", self._bulk_results)

    # -- OAuth -------------------------------------------------------------------------------

    def _oauth_token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        form.update({k: v[0] for k, v in request.query.items() if k not in form})
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":  # client_secret_basic, as simple-salesforce sends it
            try:
                key, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                key, secret = "", ""
            form.setdefault("client_id", key)
            form.setdefault("client_secret", secret)
        if form.get("grant_type") != "client_credentials":
            return Response.json(
                {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, 400
            )
        good_id = hmac.compare_digest(form.get("client_id", "").encode(), self.client_id.encode())
        good_secret = hmac.compare_digest(form.get("client_secret", "").encode(), self.client_secret.encode())
        if not (good_id and good_secret):
            return Response.json({"error": "invalid_client", "error_description": "invalid client credentials"}, 400)
        issued = self.now()
        return Response.json(
            {
                "access_token": self.issue_token(),
                "signature": secrets.token_urlsafe(32),
                "scope": "api",
                "instance_url": self.instance_url,
                "id": f"{self.instance_url}/id/00D5g000000sbxAAA/{self.org.integration_user_id}",
                "token_type": "Bearer",
                "issued_at": str(int(issued * 1000)),
            }
        )

    def _limits(self, request: Request) -> Response:
        daily = {"Max": self.daily_limit, "Remaining": max(0, self.daily_limit - self.api_used())}
        return Response.json({"DailyApiRequests": daily, "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000}})

    # -- sObjects ----------------------------------------------------------------------------

    def _url(self, request: Request, sobject: str, record_id: str) -> str:
        return f"/services/data/v{request.params['v']}/sobjects/{sobject}/{record_id}"

    def _render(self, request: Request, sobject: str, record: Record, paths: list[str] | None = None) -> Record:
        out: Record = {"attributes": {"type": sobject, "url": self._url(request, sobject, record["Id"])}}
        if paths is None:
            out.update(record)
            return out
        for path in paths:
            self._place(request, out, sobject, record, path.split("."))
        return out

    def _place(self, request: Request, out: Record, sobject: str, record: Record, parts: list[str]) -> None:
        t = self.org.types[sobject]
        if len(parts) == 1:
            f = t.field(parts[0])
            if f is not None:
                out[f.name] = record.get(f.name)
            return
        ref = t.relationship(parts[0])
        if ref is None or ref.relationship is None:
            return
        key = ref.relationship
        parent = self.org.any_record(record.get(ref.name) or "")
        if parent is None:
            out[key] = None
            return
        sub = out.get(key) or {"attributes": {"type": parent[0], "url": self._url(request, parent[0], parent[1]["Id"])}}
        out[key] = sub
        self._place(request, sub, parent[0], parent[1], parts[1:])

    def _fields_arg(self, request: Request, sobject: str) -> list[str] | None:
        raw = request.arg("fields")
        if not raw:
            return None
        paths = [p.strip() for p in raw.split(",") if p.strip()]
        for path in paths:
            self.org.check_path(sobject, path)
        return paths

    def _create(self, request: Request) -> Response:
        sobject = self.org.sobject(request.params["type"]).name
        record_id = self.org.create(sobject, _object(request))
        return Response.json({"id": record_id, "success": True, "errors": []}, 201)

    def _get(self, request: Request) -> Response:
        sobject = self.org.sobject(request.params["type"]).name
        record = self.org.require(sobject, request.params["id"])
        return Response.json(self._render(request, sobject, record, self._fields_arg(request, sobject)))

    def _update(self, request: Request) -> Response:
        sobject = self.org.sobject(request.params["type"]).name
        self.org.update(sobject, request.params["id"], _object(request))
        return Response.empty(204)

    def _delete(self, request: Request) -> Response:
        sobject = self.org.sobject(request.params["type"]).name
        self.org.delete(sobject, request.params["id"])
        return Response.empty(204)

    def _get_external(self, request: Request) -> Response:
        sobject = self.org.sobject(request.params["type"]).name
        ids = self.org.find_external(sobject, request.params["field"], request.params["value"])
        if not ids:
            raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
        if len(ids) > 1:
            return Response.json([self._url(request, sobject, i) for i in ids], 300)
        record = self.org.records[sobject][ids[0]]
        return Response.json(self._render(request, sobject, record, self._fields_arg(request, sobject)))

    def _upsert(self, request: Request) -> Response:
        sobject = self.org.sobject(request.params["type"]).name
        field_name, value = request.params["field"], request.params["value"]
        body = _object(request)
        ids = self.org.find_external(sobject, field_name, value)
        named = [k for k in body if k.casefold() in {field_name.casefold(), "id"}]
        if named:
            raise SfError(
                "INVALID_FIELD", f"The external ID or Id may not be in the body of an upsert: {named[0]}", named
            )
        if len(ids) > 1:
            return Response.json([self._url(request, sobject, i) for i in ids], 300)
        if not ids and (request.arg("updateOnly") or "").lower() == "true":
            raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
        if ids:
            self.org.update(sobject, ids[0], body)
            return Response.json({"id": ids[0], "success": True, "errors": [], "created": False}, 200)
        canonical = self.org.types[sobject].field(field_name)
        values = {**body, canonical.name: value} if canonical and canonical.name != "Id" else body
        record_id = self.org.create(sobject, values)
        return Response.json({"id": record_id, "success": True, "errors": [], "created": True}, 201)

    def _describe(self, request: Request) -> Response:
        t = self.org.sobject(request.params["type"])
        fields = [
            {
                "name": f.name,
                "type": f.kind,
                "length": f.length or 0,
                "nillable": not f.required,
                "createable": not f.readonly,
                "updateable": not (f.readonly or f.create_only),
                "unique": f.unique,
                "externalId": f.external_id,
                "referenceTo": list(f.refs),
                "relationshipName": f.relationship,
            }
            for f in t.fields.values()
        ]
        return Response.json({"name": t.name, "keyPrefix": t.prefix, "createable": t.creatable, "fields": fields})

    def _unknown_type(self, request: Request) -> Response:
        raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)

    # -- SOQL --------------------------------------------------------------------------------

    def _query(self, request: Request) -> Response:
        text = request.arg("q")
        if not text:
            raise SfError("MALFORMED_QUERY", "A query string is required (the q parameter).")
        query = soql.parse(text)
        try:
            t = self.org.sobject(query.sobject)
        except SfError:
            raise SfError("INVALID_TYPE", f"sObject type '{query.sobject}' is not supported.") from None
        for path in query.paths:
            self.org.check_path(t.name, path)

        def resolve(record: Record, path: str) -> Any:
            return self.org.resolve(t.name, record, path)

        where = _ids_in(self.org, t.name, query.where)
        candidates = self._candidates(t.name, where)
        rows = [r for r in candidates if soql.matches(where, r, resolve)]
        if query.count:
            return Response.json({"totalSize": len(rows), "done": True, "records": []})
        rows = soql.sort(rows, query.order or (soql.Order("Id"),), resolve)[query.offset :]
        if query.limit is not None:
            rows = rows[: query.limit]
        rendered = [self._render(request, t.name, r, list(query.fields)) for r in rows]
        return Response.json(self._page(request, rendered, 0, len(rendered)))

    def _candidates(self, sobject: str, where: soql.Condition | None) -> list[Record]:
        """The records that may match: an indexed ``=`` / ``IN`` at the top of the WHERE narrows
        them (the same answer as a scan, sooner)."""
        table = self.org.records[sobject]
        terms = where.terms if isinstance(where, soql.Logical) and where.op == "and" else (where,)
        for term in terms:
            if not isinstance(term, soql.Compare) or term.op not in {"=", "in"} or "." in term.path:
                continue
            f = self.org.types[sobject].field(term.path)
            if f is None or not self.org.indexed(sobject, f.name):
                continue
            values = term.value if term.op == "in" else (term.value,)
            if any(value is None for value in values):
                continue  # nulls are not indexed
            ids: set[str] = set()
            for value in values:
                ids |= self.org.lookup(sobject, f.name, value)
            return [table[i] for i in ids]
        return list(table.values())

    def _batch(self, request: Request) -> int:
        size = self.batch_size
        for option in request.headers.get("sforce-query-options", "").split(","):
            name, _, value = option.partition("=")
            if name.strip().lower() == "batchsize" and value.strip().isdigit():
                size = min(size, max(200, int(value)))
        return size

    def _page(self, request: Request, rendered: list[Record], start: int, total: int) -> dict[str, Any]:
        size = self._batch(request)
        page = rendered[start : start + size]
        out: dict[str, Any] = {"totalSize": total, "done": start + size >= len(rendered), "records": page}
        if not out["done"]:
            locator = next((k for k, c in self._cursors.items() if c[1] is rendered), None)
            if locator is None:
                locator = self.org.new_key("01g")
                self._cursors[locator] = (request.params["v"], rendered)
            while len(self._cursors) > MAX_OPEN_CURSORS:
                self._cursors.popitem(last=False)
            out["nextRecordsUrl"] = f"/services/data/v{request.params['v']}/query/{locator}-{start + size}"
        return out

    def _query_more(self, request: Request) -> Response:
        locator, _, offset = request.params["locator"].partition("-")
        cursor = self._cursors.get(locator)
        if cursor is None or not offset.isdigit() or int(offset) > len(cursor[1]):
            raise SfError("INVALID_QUERY_LOCATOR", "invalid query locator")
        return Response.json(self._page(request, cursor[1], int(offset), len(cursor[1])))

    # -- sObject Collections -----------------------------------------------------------------

    def _collection_body(self, request: Request) -> tuple[list[Record], bool]:
        body = request.json()
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SfError("JSON_PARSER_ERROR", "The body must be an object with a records array.")
        _check_size(len(records))
        for index, record in enumerate(records):
            attributes = record.get("attributes")
            if not isinstance(attributes, dict) or not isinstance(attributes.get("type"), str):
                raise SfError("INVALID_TYPE", f"No type provided for the record at index {index} (attributes.type).")
        return records, bool(body.get("allOrNone", False))

    def _collection_create(self, request: Request) -> Response:
        records, all_or_none = self._collection_body(request)
        return self._collection(records, all_or_none, [r["attributes"]["type"] for r in records], self._save_new)

    def _collection_update(self, request: Request) -> Response:
        records, all_or_none = self._collection_body(request)
        return self._collection(records, all_or_none, [r["attributes"]["type"] for r in records], self._save_existing)

    def _collection_delete(self, request: Request) -> Response:
        ids = [i for i in (request.arg("ids") or "").split(",") if i]
        if not ids:
            raise SfError("MISSING_ARGUMENT", "The ids parameter is required.")
        _check_size(len(ids))
        all_or_none = (request.arg("allOrNone") or "false").lower() == "true"
        kinds = [self.org.type_of(i) or "" for i in ids]
        return self._collection([{"Id": i} for i in ids], all_or_none, kinds, self._remove)

    def _collection_get(self, request: Request) -> Response:
        sobject = self.org.sobject(request.params["type"]).name
        ids = [i for i in (request.arg("ids") or "").split(",") if i]
        _check_size(len(ids))
        fields = self._fields_arg(request, sobject)
        out = [self._render(request, sobject, rec, fields) if (rec := self.org.get(sobject, i)) else None for i in ids]
        return Response.json(out)

    def _save_new(self, sobject: str, record: Record) -> str:
        return self.org.create(sobject, {k: v for k, v in record.items() if k != "attributes"})

    def _save_existing(self, sobject: str, record: Record) -> str:
        values = {k: v for k, v in record.items() if k != "attributes"}
        record_id = next((str(values.pop(k)) for k in list(values) if k.casefold() == "id"), "")
        if not record_id:
            raise SfError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        if self.org.type_of(record_id) != sobject:
            raise SfError("MALFORMED_ID", f"Id: id value of incorrect type: {record_id}", ["Id"])
        self.org.update(sobject, record_id, values)
        return str(self.org.require(sobject, record_id)["Id"])

    def _remove(self, sobject: str, record: Record) -> str:
        if not sobject:
            raise SfError("MALFORMED_ID", f"bad id {record['Id']}", [])
        self.org.delete(sobject, record["Id"])
        return str(record["Id"])

    def _collection(
        self, records: list[Record], all_or_none: bool, kinds: list[str], save: Callable[[str, Record], str]
    ) -> Response:
        """One result per record, in order; Setup and non-Setup kinds never in one call."""
        setup = [self._is_setup(kind) for kind in kinds]
        first = next((i for i, s in enumerate(setup) if s != setup[0]), None)
        results: list[dict[str, Any]] = []
        failed = False

        def attempt() -> None:
            nonlocal failed
            for index, record in enumerate(records):
                given = record.get("Id") or record.get("id")
                try:
                    if first is not None and setup[index] != setup[0]:
                        raise SfError(
                            "MIXED_DML_OPERATION",
                            "DML operation on setup object is not permitted after you have updated a non-setup "
                            f"object (or vice versa): {kinds[index]}, original object: {kinds[0]}",
                        )
                    results.append(
                        {"id": save(self.org.sobject(kinds[index]).name, record), "success": True, "errors": []}
                    )
                except SfError as err:
                    failed = True
                    results.append({"id": given, "success": False, "errors": [err.saved()]})

        if not all_or_none:
            attempt()
            return Response.json(results)
        try:
            with self.org.transaction():
                attempt()
                if failed:
                    raise _Rollback()
        except _Rollback:
            results = [
                r
                if not r["success"]
                else {
                    "id": None if save == self._save_new else r["id"],
                    "success": False,
                    "errors": [_ROLLED_BACK.saved()],
                }
                for r in results
            ]
        return Response.json(results)

    def _is_setup(self, kind: str) -> bool:
        t = next((t for t in self.org.types.values() if t.name.casefold() == kind.casefold()), None)
        return t.setup if t is not None else False

    # -- Bulk API 2.0 ------------------------------------------------------------------------

    def _bulk_create(self, request: Request) -> Response:
        return Response.json(self.bulk.info(self.bulk.create(request.json())))

    def _bulk_upload(self, request: Request) -> Response:
        self.bulk.upload(request.params["id"], request.body)
        return Response.empty(201)

    def _bulk_state(self, request: Request) -> Response:
        body = request.json()
        return Response.json(
            self.bulk.set_state(request.params["id"], body.get("state") if isinstance(body, dict) else None)
        )

    def _bulk_get(self, request: Request) -> Response:
        return Response.json(self.bulk.info(self.bulk._require(request.params["id"])))

    def _bulk_delete(self, request: Request) -> Response:
        self.bulk.delete(request.params["id"])
        return Response.empty(204)

    def _bulk_results(self, request: Request) -> Response:
        text = self.bulk.results(request.params["id"], request.params["kind"])
        return Response(200, text.encode(), {"Content-Type": "text/csv"})

    # -- control endpoints -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            licences = {
                lic["Name"]: {"total": lic["TotalLicenses"], "used": lic["UsedLicenses"]}
                for lic in self.org.records["UserLicense"].values()
            }
            return {
                "counts": {name: len(table) for name, table in self.org.records.items()},
                "licenses": licences,
                "api": {"used": self.api_used(), "max": self.daily_limit},
                "integration_user_id": self.org.integration_user_id,
                "blockers": dict(self.org.blockers),
                "bulk_jobs": {job.id: job.state for job in self.bulk.jobs.values()},
            }

    def user_id(self, key: str) -> str:
        """A user's id from its id or username."""
        with self.lock:
            found = self.org.get("User", key) if len(key) in (15, 18) else None
            if found is not None:
                return str(found["Id"])
            ids = self.org.lookup("User", "Username", key.lower())
            if not ids:
                raise ValueError(f"no user {key!r}")
            return next(iter(ids))

    def _register_controls(self) -> None:
        def other_orgs(request: Request) -> Response:
            with self.lock:
                return Response.json(
                    {"usernames": self.org.add_other_org_usernames(request.control_body()["usernames"])}
                )

        def blockers(request: Request) -> Response:
            body = request.control_body()
            user_id = self.user_id(str(body["user"]))
            with self.lock:
                self.org.set_blockers(user_id, list(body.get("blockers", [])))
                return Response.json({"user": user_id, "blockers": self.org.blockers.get(user_id, [])})

        def api_limit(request: Request) -> Response:
            body = request.control_body()
            self.set_api_usage(body.get("used"), body.get("max"))
            return Response.json({"used": self.api_used(), "max": self.daily_limit})

        def clock(request: Request) -> Response:
            self.advance(float(request.control_body()["advance_s"]))
            return Response.json({"now": self.now()})

        def expire(request: Request) -> Response:
            return Response.json({"expired": self.expire_tokens()})

        def token(request: Request) -> Response:
            return Response.json({"access_token": self.issue_token(), "instance_url": self.instance_url})

        def query(request: Request) -> Response:
            size = int(request.control_body()["batch_size"])
            if size < 1:
                raise ValueError("batch_size must be at least 1")
            self.batch_size = size
            return Response.json({"batch_size": size})

        def licenses(request: Request) -> Response:
            body = request.control_body()
            with self.lock:
                return Response.json(self.set_licenses(str(body["name"]), int(body["total"])))

        def bulk(request: Request) -> Response:
            self.bulk.auto_process = bool(request.control_body()["auto_process"])
            return Response.json({"auto_process": self.bulk.auto_process})

        def bulk_process(request: Request) -> Response:
            with self.lock:
                return Response.json({"processed": self.bulk.process_pending()})

        def records(request: Request) -> Response:
            with self.lock:
                sobject = self.org.sobject(request.arg("type") or "User").name
                return Response.json(list(self.org.records[sobject].values()))

        self.add_control_route("POST", "/_control/other-orgs", other_orgs)
        self.add_control_route("PUT", "/_control/blockers", blockers)
        self.add_control_route("PUT", "/_control/api-limit", api_limit)
        self.add_control_route("POST", "/_control/clock", clock)
        self.add_control_route("POST", "/_control/tokens/expire", expire)
        self.add_control_route("POST", "/_control/token", token)
        self.add_control_route("PUT", "/_control/query", query)
        self.add_control_route("PUT", "/_control/licenses", licenses)
        self.add_control_route("PUT", "/_control/bulk", bulk)
        self.add_control_route("POST", "/_control/bulk/process", bulk_process)
        self.add_control_route("GET", "/_control/records", records)

    def set_licenses(self, name: str, total: int) -> dict[str, Any]:
        """Set how many licences of UserLicense ``name`` the org owns."""
        for lic in self.org.records["UserLicense"].values():
            if lic["Name"] == name:
                self.org.update("UserLicense", lic["Id"], {"TotalLicenses": int(total)}, trusted=True)
                return {"name": name, "total": int(total), "used": lic["UsedLicenses"]}
        raise ValueError(f"no UserLicense named {name!r}")


def _object(request: Request) -> Record:
    try:
        body = request.json()
    except HttpError as err:
        raise SfError("JSON_PARSER_ERROR", err.message) from None
    if not isinstance(body, dict):
        raise SfError("JSON_PARSER_ERROR", "The request body must be a JSON object.")
    return body


def _check_size(n: int) -> None:
    if n > MAX_COLLECTION:
        raise SfError(
            "EXCEEDED_ID_LIMIT",
            f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call",
        )


def _id_value(kind: str, value: Any) -> Any:
    """A 15-character id literal as the 18-character id it names (ids and references)."""
    if kind in {"id", "reference"} and isinstance(value, str):
        return normalise_id(value) or value
    return value


def _ids_in(org: Org, sobject: str, condition: soql.Condition | None) -> soql.Condition | None:
    """``condition`` with id literals on the type's own id and reference fields in 18 characters."""
    if isinstance(condition, soql.Logical):
        return soql.Logical(condition.op, tuple(_ids_in(org, sobject, t) or t for t in condition.terms))
    if isinstance(condition, soql.Negation):
        return soql.Negation(_ids_in(org, sobject, condition.term) or condition.term)
    if condition is None or "." in condition.path or condition.op == "like":
        return condition
    f = org.types[sobject].field(condition.path)
    if f is None or f.kind not in {"id", "reference"}:
        return condition
    value = condition.value
    fixed = tuple(_id_value(f.kind, v) for v in value) if isinstance(value, tuple) else _id_value(f.kind, value)
    return soql.Compare(condition.path, condition.op, fixed)
