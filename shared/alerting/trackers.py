"""Ticket systems, as the ticket book (:mod:`shared.alerting.tickets`) uses them: ServiceNow's Table
API and Jira Cloud's REST API v3, behind one small port.

Each ticket carries a *finding key* the tracker can be searched by (ServiceNow's
``correlation_id``, a Jira label), so a run that crashed between opening a ticket and recording its
id finds it again instead of opening a second. Credentials are :class:`~shared.settings.Secret`;
a failure names the channel and the status code, never the instance URL or a credential.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Protocol

import httpx

from shared.errors import TransientError
from shared.settings import Secret

CORRELATION_DISPLAY: Final = "entra-sync"
SNOW_RESOLVED: Final = "6"  # incident state Resolved
SNOW_CLOSE_CODE: Final = "Solution provided"


class Tracker(Protocol):
    name: str

    async def find(self, key: str) -> str | None:
        """The open ticket of finding ``key``, if there is one."""

    async def open(self, key: str, title: str, body: str) -> str: ...

    async def update(self, ticket: str, title: str, body: str) -> None: ...

    async def close(self, ticket: str, note: str) -> None: ...


def label_of(key: str) -> str:
    """A Jira label for a finding key: labels take no spaces, so a digest of the key."""
    return "entra-sync-" + hashlib.sha256(key.encode()).hexdigest()[:24]


class _Http:
    def __init__(self, name: str, base: Secret, auth: tuple[Secret, Secret], http: httpx.AsyncClient):
        self.name, self.base, self.auth, self.http = name, base, auth, http

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        user, password = self.auth
        try:
            response = await self.http.request(
                method, self.base.reveal().rstrip("/") + path, auth=(user.reveal(), password.reveal()),
                headers={"Accept": "application/json"}, **kwargs,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise TransientError(f"the {self.name} channel is unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise TransientError(
                f"the {self.name} channel answered {response.status_code} to {method} {path.split('?')[0]}"
            )
        return response


class ServiceNow(_Http):
    """Incidents (or another task table) through ``/api/now/table/<table>``."""

    def __init__(self, name: str, base: Secret, auth: tuple[Secret, Secret], http: httpx.AsyncClient, table: str):
        super().__init__(name, base, auth, http)
        self.table = table

    async def find(self, key: str) -> str | None:
        query = f"correlation_id={key.replace('^', '^^')}^active=true"  # ^ separates an encoded query's terms
        found = await self.call(
            "GET", f"/api/now/table/{self.table}",
            params={"sysparm_query": query, "sysparm_fields": "sys_id", "sysparm_limit": "1"},
        )  # fmt: skip
        rows = found.json().get("result") or []
        return str(rows[0]["sys_id"]) if rows else None

    async def open(self, key: str, title: str, body: str) -> str:
        created = await self.call(
            "POST", f"/api/now/table/{self.table}",
            json={"short_description": title[:160], "description": body, "correlation_id": key,
                  "correlation_display": CORRELATION_DISPLAY},
        )  # fmt: skip
        return str(created.json()["result"]["sys_id"])

    async def update(self, ticket: str, title: str, body: str) -> None:
        await self.call(
            "PATCH", f"/api/now/table/{self.table}/{ticket}",
            json={"short_description": title[:160], "description": body, "work_notes": "entra-sync: still found"},
        )  # fmt: skip

    async def close(self, ticket: str, note: str) -> None:
        await self.call(
            "PATCH", f"/api/now/table/{self.table}/{ticket}",
            json={"state": SNOW_RESOLVED, "close_code": SNOW_CLOSE_CODE, "close_notes": note},
        )  # fmt: skip


def adf(text: str) -> dict[str, Any]:
    """Plain text as an Atlassian Document Format document (what REST API v3 takes for rich text)."""
    paragraphs = [p for p in text.split("\n") if p.strip()] or [" "]
    content = [{"type": "paragraph", "content": [{"type": "text", "text": p}]} for p in paragraphs]
    return {"type": "doc", "version": 1, "content": content}


def jql_string(value: str) -> str:
    """``value`` as a JQL string literal (quotes and backslashes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Jira(_Http):
    """Issues in one project through ``/rest/api/3``; closed by the transition named ``done_transition``."""

    def __init__(
        self, name: str, base: Secret, auth: tuple[Secret, Secret], http: httpx.AsyncClient, project: str,
        issue_type: str, done: str,
    ):  # fmt: skip
        super().__init__(name, base, auth, http)
        self.project, self.issue_type, self.done = project, issue_type, done

    async def find(self, key: str) -> str | None:
        jql = (
            f"project = {jql_string(self.project)} AND labels = {jql_string(label_of(key))} AND statusCategory != Done"
        )
        found = await self.call("POST", "/rest/api/3/search/jql", json={"jql": jql, "fields": ["key"], "maxResults": 1})
        issues = found.json().get("issues") or []
        return str(issues[0]["key"]) if issues else None

    async def open(self, key: str, title: str, body: str) -> str:
        fields = {"project": {"key": self.project}, "summary": title[:250], "description": adf(body),
                  "issuetype": {"name": self.issue_type}, "labels": ["entra-sync", label_of(key)]}  # fmt: skip
        created = await self.call("POST", "/rest/api/3/issue", json={"fields": fields})
        return str(created.json()["key"])

    async def update(self, ticket: str, title: str, body: str) -> None:
        await self.call(
            "PUT", f"/rest/api/3/issue/{ticket}", json={"fields": {"summary": title[:250], "description": adf(body)}}
        )

    async def close(self, ticket: str, note: str) -> None:
        await self.call("POST", f"/rest/api/3/issue/{ticket}/comment", json={"body": adf(note)})
        listed = (await self.call("GET", f"/rest/api/3/issue/{ticket}/transitions")).json().get("transitions") or []
        done = next((t for t in listed if str(t.get("name", "")).casefold() == self.done.casefold()), None)
        if done is None:
            raise TransientError(f"the {self.name} channel offers no {self.done!r} transition for {ticket}")
        await self.call("POST", f"/rest/api/3/issue/{ticket}/transitions", json={"transition": {"id": done["id"]}})
