"""Small ServiceNow (Table API) and Jira Cloud (REST API v3) stand-ins on loopback that accept and
list tickets, for the tests and the demo.

Both check HTTP basic auth (ServiceNow: a user and password; Jira: an account email and API token)
in constant time and answer 401 otherwise. ``tickets()`` lists what they hold (also at
``GET /_control/tickets``), open and closed. What they model of each API:

* **ServiceNow** ``/api/now/table/<table>``: POST creates (201, ``{"result": {sys_id, number, ...}}``),
  GET lists with ``sysparm_query`` terms ``field=value`` joined by ``^`` (``^^`` is a literal ``^``),
  PATCH ``/<sys_id>`` updates; a ``state`` of 6 or 7 makes the record inactive, and resolving needs
  ``close_code`` and ``close_notes`` as on an incident.
* **Jira** ``/rest/api/3``: POST ``/issue`` (201, ``{id, key, self}``; a description must be an
  Atlassian Document Format doc), PUT ``/issue/<key>`` (204), POST ``/issue/<key>/comment``, GET and
  POST ``/issue/<key>/transitions`` (To Do -> In Progress -> Done), POST ``/search/jql`` with the
  JQL the ticket book sends (``project = "X" AND labels = "l" AND statusCategory != Done``).
"""

from __future__ import annotations

import base64
import hmac
import itertools
import re
import uuid
from typing import Any

from sandbox.server import Emulator, HttpError, Request, Response


def _basic(request: Request, user: str, password: str) -> None:
    header = request.headers.get("authorization", "")
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if not hmac.compare_digest(header.encode(), expected.encode()):
        raise HttpError(401, "unauthorized", "User Not Authenticated")


class ServiceNowEmulator(Emulator):
    name = "servicenow"

    def __init__(self, user: str = "entra-sync", password: str = "snow-password", **kwargs: Any):
        super().__init__(**kwargs)
        self.user, self.password = user, password
        self.records: dict[str, dict[str, Any]] = {}
        self._numbers = itertools.count(10001)
        t = r"/api/now/table/(?P<table>[a-z_0-9]+)"
        self.add_route("POST", t, "table.create", self._create)
        self.add_route("GET", t, "table.list", self._list)
        self.add_route("PATCH", rf"{t}/(?P<sys_id>[0-9a-f]{{32}})", "table.update", self._update)
        self.add_control_route("GET", "/_control/tickets", lambda r: Response.json({"tickets": self.tickets()}))

    def authenticate(self, request: Request) -> None:
        _basic(request, self.user, self.password)

    def error_response(self, error: HttpError) -> Response:
        return Response.json({"error": {"message": error.message, "detail": error.code}, "status": "failure"},
                             error.status, error.headers)  # fmt: skip

    def _create(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not str(body.get("short_description", "")).strip():
            raise HttpError(400, "invalid", "short_description is required")
        record: dict[str, Any] = {**{k: str(v) for k, v in body.items()}, "sys_id": uuid.uuid4().hex,
                  "number": f"INC{next(self._numbers):07d}", "state": "1", "active": "true",
                  "table": request.params["table"], "work_notes_log": []}  # fmt: skip
        with self.lock:
            self.records[record["sys_id"]] = record
        return Response.json({"result": record}, 201)

    def _list(self, request: Request) -> Response:
        terms = [
            t.replace("\x00", "^") for t in (request.arg("sysparm_query") or "").replace("^^", "\x00").split("^") if t
        ]
        wanted = dict(term.split("=", 1) for term in terms if "=" in term)
        limit = int(request.arg("sysparm_limit") or "10000")
        with self.lock:
            rows = [r for r in self.records.values() if r["table"] == request.params["table"]
                    and all(str(r.get(k, "")) == v for k, v in wanted.items())]  # fmt: skip
        return Response.json({"result": rows[:limit]})

    def _update(self, request: Request) -> Response:
        body = request.json()
        with self.lock:
            record = self.records.get(request.params["sys_id"])
            if record is None:
                raise HttpError(404, "not_found", "No Record found")
            if str(body.get("state")) in {"6", "7"} and not (body.get("close_code") and body.get("close_notes")):
                raise HttpError(400, "invalid", "close_code and close_notes are mandatory to resolve")
            notes = body.pop("work_notes", None)
            record.update({k: str(v) for k, v in body.items()})
            if notes:
                record["work_notes_log"].append(str(notes))
            if record["state"] in {"6", "7"}:
                record["active"] = "false"
            return Response.json({"result": record})

    def tickets(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.records.values()]

    def reset(self) -> None:
        with self.lock:
            self.records.clear()


_TRANSITIONS = {"11": ("To Do", "new"), "21": ("In Progress", "indeterminate"), "31": ("Done", "done")}
_JQL = re.compile(r'project = "(?P<project>[^"]*)" AND labels = "(?P<label>[^"]*)" AND statusCategory != Done')


class JiraEmulator(Emulator):
    name = "jira"
    api_prefix = "/rest/api/3"

    def __init__(self, email: str = "bot@contoso.example", token: str = "jira-api-token", **kwargs: Any):
        super().__init__(**kwargs)
        self.email, self.token = email, token
        self.issues: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(10000)
        p, key = self.api_prefix, r"(?P<key>[A-Z][A-Z0-9]+-[0-9]+)"
        self.add_route("POST", rf"{p}/issue", "issue.create", self._create)
        self.add_route("PUT", rf"{p}/issue/{key}", "issue.update", self._update)
        self.add_route("POST", rf"{p}/issue/{key}/comment", "issue.comment", self._comment)
        self.add_route("GET", rf"{p}/issue/{key}/transitions", "issue.transitions", self._transitions)
        self.add_route("POST", rf"{p}/issue/{key}/transitions", "issue.transition", self._transition)
        self.add_route("POST", rf"{p}/search/jql", "search.jql", self._search)
        self.add_control_route("GET", "/_control/tickets", lambda r: Response.json({"tickets": self.tickets()}))

    def authenticate(self, request: Request) -> None:
        _basic(request, self.email, self.token)

    def error_response(self, error: HttpError) -> Response:
        return Response.json({"errorMessages": [error.message], "errors": {}}, error.status, error.headers)

    @staticmethod
    def _doc(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or value.get("type") != "doc" or value.get("version") != 1:
            raise HttpError(400, "invalid", f"{where}: Operation value must be an Atlassian Document")
        return value

    def _issue(self, request: Request) -> dict[str, Any]:
        issue = self.issues.get(request.params["key"])
        if issue is None:
            raise HttpError(404, "not_found", "Issue does not exist or you do not have permission to see it.")
        return issue

    def _create(self, request: Request) -> Response:
        fields = (request.json() or {}).get("fields") or {}
        project = (fields.get("project") or {}).get("key")
        if not project or not str(fields.get("summary", "")).strip() or not (fields.get("issuetype") or {}).get("name"):
            raise HttpError(400, "invalid", "project, summary and issuetype are required")
        self._doc(fields.get("description"), "description")
        with self.lock:
            number = sum(1 for i in self.issues.values() if i["project"] == project) + 1
            issue = {"id": str(next(self._ids)), "key": f"{project}-{number}", "project": project,
                     "summary": fields["summary"], "description": fields["description"],
                     "labels": list(fields.get("labels") or []), "status": "To Do", "category": "new",
                     "comments": []}  # fmt: skip
            self.issues[issue["key"]] = issue
        return Response.json(
            {"id": issue["id"], "key": issue["key"], "self": f"{self.origin}/rest/api/3/issue/{issue['id']}"}, 201
        )

    def _update(self, request: Request) -> Response:
        fields = (request.json() or {}).get("fields") or {}
        with self.lock:
            issue = self._issue(request)
            if "description" in fields:
                issue["description"] = self._doc(fields["description"], "description")
            if "summary" in fields:
                issue["summary"] = str(fields["summary"])
        return Response.empty(204)

    def _comment(self, request: Request) -> Response:
        body = self._doc((request.json() or {}).get("body"), "body")
        with self.lock:
            self._issue(request)["comments"].append(body)
        return Response.json({"id": str(next(self._ids))}, 201)

    def _transitions(self, request: Request) -> Response:
        with self.lock:
            self._issue(request)
        listed = [
            {"id": i, "name": name, "to": {"statusCategory": {"key": cat}}} for i, (name, cat) in _TRANSITIONS.items()
        ]
        return Response.json({"transitions": listed})

    def _transition(self, request: Request) -> Response:
        wanted = str(((request.json() or {}).get("transition") or {}).get("id", ""))
        if wanted not in _TRANSITIONS:
            raise HttpError(400, "invalid", "Transition id is not valid for this issue.")
        with self.lock:
            issue = self._issue(request)
            issue["status"], issue["category"] = _TRANSITIONS[wanted]
        return Response.empty(204)

    def _search(self, request: Request) -> Response:
        body = request.json() or {}
        match = _JQL.fullmatch(str(body.get("jql", "")))
        if match is None:
            raise HttpError(400, "invalid", "The JQL query is not one this stand-in understands.")
        with self.lock:
            found = [
                {"id": i["id"], "key": i["key"]}
                for i in self.issues.values()
                if i["project"] == match["project"] and match["label"] in i["labels"] and i["category"] != "done"
            ]
        return Response.json({"issues": found[: int(body.get("maxResults", 50))]})

    def tickets(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(i) for i in self.issues.values()]

    def reset(self) -> None:
        with self.lock:
            self.issues.clear()
