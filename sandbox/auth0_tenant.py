"""The Auth0 emulator's tenant side: organizations, tickets, the verification-email job, Guardian
(MFA) and connection options, mixed into :class:`sandbox.auth0.Auth0Emulator`.

What it models (Auth0 Management API v2, the shapes auth0-python 6.x parses):

* Organizations: list (offset or checkpoint), create, get by id and by name; members (add, remove,
  list, ``fields=roles``), member roles (list, assign, remove), enabled connections (list, add with
  ``assign_membership_on_login``, remove); ``GET /users/{id}/organizations``. Adding a member needs
  an existing user (404 otherwise); removing one that is not a member is a no-op, as in Auth0.
* ``POST /tickets/password-change`` answers ``{"ticket": url}`` and emails nobody (Auth0 does not:
  the caller delivers the URL); ``POST /jobs/verification-email`` queues Auth0's own email;
  ``POST /guardian/enrollments/ticket`` answers ``{ticket_id, ticket_url}`` and, with
  ``send_mail``, emails it.
* ``PATCH /connections/{id}``: ``options`` replaces the whole options object (as Auth0 documents);
  ``GET``/``PUT /guardian/factors[/{name}]``; ``GET``/``PUT /guardian/policies`` (a list).

Every ticket, email and tenant-setting write is recorded in :attr:`sent` (what, and the body as
sent) so a test asserts what reached the tenant, never guesses it from a count.
:meth:`sign_in` stands for a user's first sign-in through a connection (the enterprise
connection creates ``<strategy>|<id>`` and, for organizations that enable the connection with
``assign_membership_on_login``, makes them a member).
"""

from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING, Any, Final

from .server import HttpError, Request, Response

FACTORS: Final = (
    "sms", "push-notification", "email", "duo", "otp", "webauthn-roaming", "webauthn-platform", "recovery-code",
)  # fmt: skip
POLICIES: Final = ("all-applications", "confidence-score")


class TenantSide:
    """State and routes of the tenant side; the emulator calls :meth:`_init_tenant` with its state and
    :meth:`_register_tenant_routes` with its routes."""

    lock: threading.RLock
    api_prefix: str
    _users: dict[str, dict[str, Any]]
    _connections: dict[str, dict[str, Any]]
    _roles: dict[str, dict[str, Any]]

    if TYPE_CHECKING:  # supplied by the emulator

        def _route(self, method: str, pattern: str, name: str, handler: Any, write: bool | None = None) -> None: ...
        def _new_id(self, prefix: str, length: int = 16, alphabet: str = "") -> str: ...
        def _require_user(self, user_id: str) -> dict[str, Any]: ...
        def add_user(self, spec: dict[str, Any], indexed: bool = True) -> dict[str, Any]: ...
        @property
        def base_url(self) -> str: ...

    def _init_tenant(self) -> None:
        self._orgs: dict[str, dict[str, Any]] = {}
        self._members: dict[str, dict[str, list[str]]] = {}  # org id -> user id -> role ids
        self._org_connections: dict[str, dict[str, dict[str, Any]]] = {}  # org id -> connection id -> entry
        self._factors: dict[str, bool] = dict.fromkeys(FACTORS, False)
        self._policies: list[str] = []
        self.sent: list[dict[str, Any]] = []  # tickets, emails and setting writes, in order

    def _register_tenant_routes(self) -> None:
        p = self.api_prefix
        org = p + "/organizations/(?P<id>[^/]+)"
        member = org + "/members/(?P<user>[^/]+)"
        self._route("GET", p + "/organizations", "mgmt.organizations.list", self._list_orgs)
        self._route("POST", p + "/organizations", "mgmt.organizations.create", self._create_org)
        self._route("GET", p + "/organizations/name/(?P<name>[^/]+)", "mgmt.organizations.by_name", self._org_by_name)
        self._route("GET", org, "mgmt.organizations.get", self._get_org)
        self._route("GET", org + "/members", "mgmt.organizations.members.list", self._list_members)
        self._route("POST", org + "/members", "mgmt.organizations.members.add", self._add_members)
        self._route("DELETE", org + "/members", "mgmt.organizations.members.remove", self._remove_members)
        self._route("GET", member + "/roles", "mgmt.organizations.members.roles.list", self._list_member_roles)
        self._route("POST", member + "/roles", "mgmt.organizations.members.roles.assign", self._assign_member_roles)
        self._route("DELETE", member + "/roles", "mgmt.organizations.members.roles.remove", self._remove_member_roles)
        self._route("GET", org + "/enabled_connections", "mgmt.organizations.connections.list", self._list_org_conns)
        self._route("POST", org + "/enabled_connections", "mgmt.organizations.connections.add", self._add_org_conn)
        self._route(
            "PATCH", org + "/enabled_connections/(?P<conn>[^/]+)", "mgmt.organizations.connections.update",
            self._update_org_conn,
        )  # fmt: skip
        self._route(
            "DELETE", org + "/enabled_connections/(?P<conn>[^/]+)", "mgmt.organizations.connections.remove",
            self._remove_org_conn,
        )  # fmt: skip
        self._route("GET", p + "/users/(?P<id>[^/]+)/organizations", "mgmt.users.organizations", self._user_orgs)
        self._route("POST", p + "/tickets/password-change", "mgmt.tickets.password_change", self._password_ticket)
        self._route("POST", p + "/jobs/verification-email", "mgmt.jobs.verification_email", self._verification_job)
        self._route("POST", p + "/guardian/enrollments/ticket", "mgmt.guardian.enrollments", self._enrollment_ticket)
        self._route("PATCH", p + "/connections/(?P<id>[^/]+)", "mgmt.connections.update", self._update_connection)
        self._route("GET", p + "/guardian/factors", "mgmt.guardian.factors.list", self._list_factors)
        self._route("PUT", p + "/guardian/factors/(?P<name>[^/]+)", "mgmt.guardian.factors.set", self._set_factor)
        self._route("GET", p + "/guardian/policies", "mgmt.guardian.policies.get", self._get_policies)
        self._route("PUT", p + "/guardian/policies", "mgmt.guardian.policies.set", self._set_policies)

    # -- test set-up and reading back ------------------------------------------------------

    def add_organization(self, name: str, connections: dict[str, bool] | None = None) -> dict[str, Any]:
        """An organization; ``connections``: connection name -> assign membership on login."""
        with self.lock:
            if any(o["name"] == name for o in self._orgs.values()):
                raise HttpError(409, "conflict", "An organization with this name already exists.")
            org = {"id": self._new_id("org_"), "name": name, "display_name": name}
            self._orgs[org["id"]] = org
            self._members[org["id"]] = {}
            self._org_connections[org["id"]] = {}
            for conn_name, auto in (connections or {}).items():
                conn = self._conn_named(conn_name)
                self._org_connections[org["id"]][conn["id"]] = {"assign_membership_on_login": auto}
            return dict(org)

    def memberships(self, user_id: str) -> dict[str, list[str]]:
        """Organization name -> the names of the user's roles in it."""
        with self.lock:
            return {
                self._orgs[o]["name"]: sorted(self._roles[r]["name"] for r in members[user_id] if r in self._roles)
                for o, members in self._members.items()
                if user_id in members
            }

    def org_connections(self, name: str) -> dict[str, bool]:
        with self.lock:
            org = self._org_named(name)
            return {
                self._connections[c]["name"]: bool(e.get("assign_membership_on_login"))
                for c, e in self._org_connections[org["id"]].items()
            }

    def sent_of(self, what: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(s) for s in self.sent if s["what"] == what]

    def tenant_settings(self) -> dict[str, Any]:
        with self.lock:
            return {"factors": dict(self._factors), "policies": list(self._policies)}

    def set_connection_options(self, name: str, options: dict[str, Any]) -> None:
        """Set-up: a connection's options as someone left them in the dashboard."""
        with self.lock:
            self._conn_named(name)["options"] = copy.deepcopy(options)

    def reset_organization_connections(self, name: str, connections: dict[str, bool]) -> None:
        """Set-up: the organization's enabled connections (name -> assign membership on login)."""
        with self.lock:
            org = self._org_named(name)
            self._org_connections[org["id"]] = {
                self._conn_named(c)["id"]: {"assign_membership_on_login": auto} for c, auto in connections.items()
            }

    def set_guardian(self, factors: dict[str, bool] | None = None, policies: list[str] | None = None) -> None:
        with self.lock:
            self._factors.update(factors or {})
            if policies is not None:
                self._policies = list(policies)

    def sign_in(self, connection: str, raw_id: str, email: str) -> dict[str, Any]:
        """A first sign-in through ``connection``: the user is created as Auth0 does at a federated
        login, and joins the organizations that enable the connection with auto-membership."""
        with self.lock:
            conn = self._conn_named(connection)
            user_id = f"{conn['strategy']}|{raw_id}"
            user = self._users.get(user_id) or self.add_user(
                {"connection": connection, "user_id": raw_id, "email": email, "email_verified": True}
            )
            for org_id, enabled in self._org_connections.items():
                entry = enabled.get(conn["id"])
                if entry is not None and entry.get("assign_membership_on_login"):
                    self._members[org_id].setdefault(user_id, [])
            return dict(user)

    # -- organizations ---------------------------------------------------------------------

    def _conn_named(self, name: str) -> dict[str, Any]:
        for conn in self._connections.values():
            if conn["name"] == name:
                return conn
        raise KeyError(name)

    def _org_named(self, name: str) -> dict[str, Any]:
        for org in self._orgs.values():
            if org["name"] == name:
                return org
        raise HttpError(404, "inexistent_organization", "No organization found by that name")

    def _require_org(self, org_id: str) -> dict[str, Any]:
        org = self._orgs.get(org_id)
        if org is None:
            raise HttpError(404, "inexistent_organization", "No organization found by that id")
        return org

    def _list_orgs(self, request: Request) -> Response:
        from .auth0 import _checkpoint, _offset

        with self.lock:
            orgs = [dict(o) for o in self._orgs.values()]
        if "from" in request.query or "take" in request.query:
            return _checkpoint(request, "organizations", orgs)
        return _offset(request, "organizations", orgs)

    def _create_org(self, request: Request) -> Response:
        body = _body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise HttpError(400, "invalid_body", "Payload validation error: 'Missing required property: name'.")
        return Response.json(self.add_organization(name), 201)

    def _org_by_name(self, request: Request) -> Response:
        with self.lock:
            return Response.json(dict(self._org_named(request.params["name"])))

    def _get_org(self, request: Request) -> Response:
        with self.lock:
            return Response.json(dict(self._require_org(request.params["id"])))

    def _list_members(self, request: Request) -> Response:
        from .auth0 import _checkpoint

        with_roles = "roles" in (request.arg("fields") or "").split(",")
        with self.lock:
            org = self._require_org(request.params["id"])
            members = []
            for user_id, role_ids in self._members[org["id"]].items():
                user = self._users.get(user_id, {})
                entry: dict[str, Any] = {"user_id": user_id, "email": user.get("email"), "name": user.get("name")}
                if with_roles:
                    entry["roles"] = [{"id": r, "name": self._roles[r]["name"]} for r in role_ids if r in self._roles]
                members.append(entry)
        return _checkpoint(request, "members", members)

    def _member_ids(self, request: Request) -> list[str]:
        body = _body(request)
        members = body.get("members")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise HttpError(400, "invalid_body", "Payload validation error: 'members' must be a non-empty array.")
        return members

    def _add_members(self, request: Request) -> Response:
        members = self._member_ids(request)
        with self.lock:
            org = self._require_org(request.params["id"])
            for user_id in members:
                self._require_user(user_id)
            for user_id in members:
                self._members[org["id"]].setdefault(user_id, [])
        return Response.empty(204)

    def _remove_members(self, request: Request) -> Response:
        members = self._member_ids(request)
        with self.lock:
            org = self._require_org(request.params["id"])
            for user_id in members:
                self._members[org["id"]].pop(user_id, None)
        return Response.empty(204)

    def _member(self, request: Request) -> list[str]:
        org = self._require_org(request.params["id"])
        roles = self._members[org["id"]].get(request.params["user"])
        if roles is None:
            raise HttpError(404, "inexistent_member", "The user is not a member of the organization")
        return roles

    def _role_ids(self, request: Request) -> list[str]:
        body = _body(request)
        roles = body.get("roles")
        if not isinstance(roles, list) or not roles:
            raise HttpError(400, "invalid_body", "Payload validation error: 'roles' must be a non-empty array.")
        for role_id in roles:
            if role_id not in self._roles:
                raise HttpError(404, "inexistent_role", f"The role does not exist: {role_id}")
        return roles

    def _list_member_roles(self, request: Request) -> Response:
        from .auth0 import _offset

        with self.lock:
            roles = [dict(self._roles[r]) for r in self._member(request) if r in self._roles]
        return _offset(request, "roles", roles)

    def _assign_member_roles(self, request: Request) -> Response:
        with self.lock:
            wanted = self._role_ids(request)
            held = self._member(request)
            held.extend(r for r in wanted if r not in held)
        return Response.empty(204)

    def _remove_member_roles(self, request: Request) -> Response:
        with self.lock:
            wanted = set(self._role_ids(request))
            held = self._member(request)
            held[:] = [r for r in held if r not in wanted]
        return Response.empty(204)

    def _list_org_conns(self, request: Request) -> Response:
        from .auth0 import _offset

        with self.lock:
            org = self._require_org(request.params["id"])
            items = [
                {"connection_id": c, "assign_membership_on_login": bool(e.get("assign_membership_on_login")),
                 "connection": {"name": self._connections[c]["name"], "strategy": self._connections[c]["strategy"]}}
                for c, e in self._org_connections[org["id"]].items()
                if c in self._connections
            ]  # fmt: skip
        return _offset(request, "enabled_connections", items)

    def _add_org_conn(self, request: Request) -> Response:
        body = _body(request)
        conn_id = body.get("connection_id")
        with self.lock:
            org = self._require_org(request.params["id"])
            if conn_id not in self._connections:
                raise HttpError(404, "inexistent_connection", "The connection does not exist")
            entry = {"assign_membership_on_login": bool(body.get("assign_membership_on_login", False))}
            self._org_connections[org["id"]][str(conn_id)] = entry
            self.sent.append({"what": "organization_connection", "organization": org["name"], "body": body})
        return Response.json({"connection_id": conn_id, **entry}, 201)

    def _update_org_conn(self, request: Request) -> Response:
        body = _body(request)
        with self.lock:
            org = self._require_org(request.params["id"])
            entry = self._org_connections[org["id"]].get(request.params["conn"])
            if entry is None:
                raise HttpError(404, "inexistent_connection", "The connection is not enabled for the organization")
            if "assign_membership_on_login" in body:
                entry["assign_membership_on_login"] = bool(body["assign_membership_on_login"])
            self.sent.append({"what": "organization_connection", "organization": org["name"], "body": body})
            return Response.json({"connection_id": request.params["conn"], **entry})

    def _remove_org_conn(self, request: Request) -> Response:
        with self.lock:
            org = self._require_org(request.params["id"])
            self._org_connections[org["id"]].pop(request.params["conn"], None)
            self.sent.append({"what": "organization_connection_removed", "organization": org["name"],
                              "connection_id": request.params["conn"]})  # fmt: skip
        return Response.empty(204)

    def _user_orgs(self, request: Request) -> Response:
        from .auth0 import _offset

        with self.lock:
            user_id = request.params["id"]
            self._require_user(user_id)
            orgs = [dict(self._orgs[o]) for o, members in self._members.items() if user_id in members]
        return _offset(request, "organizations", orgs)

    # -- tickets and emails ----------------------------------------------------------------

    def _password_ticket(self, request: Request) -> Response:
        body = _body(request)
        with self.lock:
            user_id = body.get("user_id")
            if not isinstance(user_id, str):
                raise HttpError(400, "invalid_body", "Payload validation error: 'user_id' or 'email' is required.")
            self._require_user(user_id)
            ticket = f"{self.base_url}/lo/reset?ticket={self._new_id('', 24)}#"
            self.sent.append({"what": "password_change_ticket", "body": body, "ticket": ticket})
        return Response.json({"ticket": ticket}, 201)

    def _verification_job(self, request: Request) -> Response:
        body = _body(request)
        with self.lock:
            user = self._require_user(str(body.get("user_id")))
            job = {"id": self._new_id("job_"), "type": "verification_email", "status": "completed"}
            self.sent.append({"what": "verification_email", "body": body, "to": user.get("email")})
        return Response.json(job, 201)

    def _enrollment_ticket(self, request: Request) -> Response:
        body = _body(request)
        with self.lock:
            user = self._require_user(str(body.get("user_id")))
            ticket_id = self._new_id("", 24)
            url = f"{self.base_url}/guardian/enroll?ticket={ticket_id}"
            self.sent.append({"what": "guardian_enrollment", "body": body, "to": user.get("email")})
        return Response.json({"ticket_id": ticket_id, "ticket_url": url})

    # -- tenant settings -------------------------------------------------------------------

    def _update_connection(self, request: Request) -> Response:
        body = _body(request)
        with self.lock:
            conn = self._connections.get(request.params["id"])
            if conn is None:
                raise HttpError(404, "inexistent_connection", "The connection does not exist")
            updated = {**conn, **{k: copy.deepcopy(v) for k, v in body.items() if k != "options"}}
            if "options" in body:
                updated["options"] = copy.deepcopy(body["options"])  # replaced whole, as Auth0 does
            self._connections[conn["id"]] = updated
            self.sent.append({"what": "connection_update", "connection": conn["name"], "body": body})
            return Response.json(copy.deepcopy(updated))

    def _list_factors(self, request: Request) -> Response:
        with self.lock:
            return Response.json([{"name": n, "enabled": e} for n, e in self._factors.items()])

    def _set_factor(self, request: Request) -> Response:
        body = _body(request)
        name = request.params["name"]
        if name not in self._factors or not isinstance(body.get("enabled"), bool):
            raise HttpError(400, "invalid_body", f"Payload validation error for factor {name}")
        with self.lock:
            self._factors[name] = body["enabled"]
            self.sent.append({"what": "guardian_factor", "name": name, "body": body})
        return Response.json({"enabled": body["enabled"]})

    def _get_policies(self, request: Request) -> Response:
        with self.lock:
            return Response.json(list(self._policies))

    def _set_policies(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, list) or any(p not in POLICIES for p in body):
            raise HttpError(400, "invalid_body", f"Payload validation error: policies are a list of {POLICIES}")
        with self.lock:
            self._policies = list(body)
            self.sent.append({"what": "guardian_policies", "body": body})
        return Response.json(list(body))


def _body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_body", "Payload validation error: 'Expected type object'.")
    return body
