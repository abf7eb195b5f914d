"""The Auth0 emulator's tenant side (organizations, tickets, the verification job, Guardian, connection
options) driven through auth0-python 6.x, the calls the product makes."""

from __future__ import annotations

from typing import Any

import pytest
from auth0.management.client import Auth0
from auth0.management.core.api_error import ApiError

from sandbox.auth0 import DATABASE_CONNECTION, ENTERPRISE_CONNECTION, Auth0Emulator

NO_RETRY: Any = {"max_retries": 0}


def test_organization_members_and_their_roles_are_kept_per_organization(emulator: Auth0Emulator, client: Auth0) -> None:
    user = emulator.add_user({"email": "ada@example.com"})["user_id"]
    role = emulator.add_role("Org Admin")["id"]
    acme = emulator.add_organization("acme")
    emulator.add_organization("globex")
    assert client.organizations.get_by_name("acme").id == acme["id"]
    client.organizations.members.create(acme["id"], members=[user])
    client.organizations.members.roles.assign(acme["id"], user, roles=[role])
    assert emulator.memberships(user) == {"acme": ["Org Admin"]}
    assert [o.name for o in client.users.organizations.list(user).items or []] == ["acme"]
    listed = client.organizations.members.list(acme["id"], fields="user_id,roles", include_fields=True, take=50)
    assert [(m.user_id, [r.name for r in m.roles or []]) for m in listed.items or []] == [(user, ["Org Admin"])]
    client.organizations.members.roles.delete(acme["id"], user, roles=[role])
    assert emulator.memberships(user) == {"acme": []}
    client.organizations.members.delete(acme["id"], members=[user])
    client.organizations.members.delete(acme["id"], members=[user])  # not a member any more: a no-op
    assert emulator.memberships(user) == {}
    with pytest.raises(ApiError) as missing:
        client.organizations.members.create(acme["id"], members=["auth0|nobody"], request_options=NO_RETRY)
    assert missing.value.status_code == 404


def test_a_first_sign_in_through_a_connection_with_auto_membership_joins_its_organizations(
    emulator: Auth0Emulator,
) -> None:
    emulator.add_organization("staff", {ENTERPRISE_CONNECTION: True})
    emulator.add_organization("partners", {ENTERPRISE_CONNECTION: False})
    user = emulator.sign_in(ENTERPRISE_CONNECTION, "oid-1", "Grace@Example.com")
    assert user["user_id"] == "waad|oid-1"
    assert user["identities"][0]["connection"] == ENTERPRISE_CONNECTION
    assert emulator.memberships("waad|oid-1") == {"staff": []}
    assert emulator.org_connections("staff") == {ENTERPRISE_CONNECTION: True}


def test_tickets_and_emails_are_answered_as_auth0_does_and_recorded_as_sent(
    emulator: Auth0Emulator, client: Auth0
) -> None:
    user = emulator.add_user({"email": "ada@example.com"})["user_id"]
    ticket = client.tickets.change_password(user_id=user, ttl_sec=3600, result_url="https://app.example/welcome")
    assert ticket.ticket.startswith(emulator.base_url)
    job = client.jobs.verification_email.create(user_id=user)
    assert job.type == "verification_email"
    enrollment = client.guardian.enrollments.create_ticket(user_id=user, send_mail=True)
    assert enrollment.ticket_url and enrollment.ticket_id
    sent = {s["what"]: s for s in emulator.sent}
    assert sent["password_change_ticket"]["body"] == {
        "user_id": user, "ttl_sec": 3600, "result_url": "https://app.example/welcome"
    }  # fmt: skip
    assert sent["verification_email"]["to"] == "ada@example.com"
    assert sent["guardian_enrollment"]["body"] == {"user_id": user, "send_mail": True}
    with pytest.raises(ApiError) as unknown:
        client.tickets.change_password(user_id="auth0|nobody", request_options=NO_RETRY)
    assert unknown.value.status_code == 404


def test_connection_options_are_replaced_whole_and_guardian_settings_are_read_and_set(
    emulator: Auth0Emulator, client: Auth0
) -> None:
    emulator.set_connection_options(DATABASE_CONNECTION, {"passwordPolicy": "fair", "brute_force_protection": True})
    conn = emulator.connection(DATABASE_CONNECTION)
    client.connections.update(conn["id"], options={"password_policy": "excellent"})
    options = client.connections.get(conn["id"]).options
    assert options == {"passwordPolicy": "excellent"}  # replaced whole, as Auth0 documents (its wire name)
    client.guardian.factors.set("otp", enabled=True)
    client.guardian.policies.set(request=["all-applications"])
    assert {f.name: f.enabled for f in client.guardian.factors.list()}["otp"] is True
    assert client.guardian.policies.list() == ["all-applications"]
    assert [s["what"] for s in emulator.sent] == ["connection_update", "guardian_factor", "guardian_policies"]
    with pytest.raises(ApiError) as bad:
        client.guardian.policies.set(request=["whenever"], request_options=NO_RETRY)  # type: ignore[list-item]
    assert bad.value.status_code == 400
