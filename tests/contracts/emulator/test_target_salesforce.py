"""The ``salesforce`` target (SalesforceTarget over simple-salesforce, built by its kind from its
section and the SALESFORCE_* settings) against the Salesforce emulator on loopback, against the
Target contract. Salesforce never deletes users: the contract checks that the action is refused."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import requests

from sandbox.salesforce import SalesforceEmulator
from shared import redact
from shared.bootstrap import BuildContext
from shared.clock import SYSTEM
from shared.errors import RateLimited
from shared.mapping.load import parse_mapping
from shared.settings import Settings
from shared.targets.salesforce import soql
from shared.targets.salesforce.kind import SALESFORCE
from shared.targets.salesforce.target import SalesforceTarget
from tests.contracts.backends import Opener, close_all
from tests.contracts.target_contract import SALES, STAFF, TargetContract, Vendor
from tests.support import FakeClock, sandbox_env

MAPPING = f"""\
version: 2
targets:
  salesforce:
    attributes:
      - {{source: mail, target: Email, transforms: [trim, lower]}}
      - {{source: displayName, target: LastName}}
      - {{source: department, target: Department}}
    default_profile: Standard User
    permission_sets:
      - {{group: {STAFF}, permission_sets: [Staff_Access]}}
      - {{group: {SALES}, permission_sets: [Sales_Reader, 'group:Sales_Bundle']}}
    matching: {{precedence: [link, federation_id, email, username]}}
"""
SEED = {
    "permission_sets": [{"name": n, "label": n} for n in ("Staff_Access", "Sales_Reader", "Unmanaged")],
    "permission_set_groups": [{"name": "Sales_Bundle", "label": "Sales Bundle"}],
}


def salesforce_env(emulator: SalesforceEmulator, prefix: str = "SALESFORCE") -> dict[str, str]:
    return sandbox_env(storage="UseDevelopmentStorage=true") | {
        f"{prefix}_INSTANCE_URL": emulator.origin,
        f"{prefix}_CLIENT_ID": emulator.client_id,
        f"{prefix}_CLIENT_SECRET": emulator.client_secret,
    }


def add_user(emulator: SalesforceEmulator, **fields: object) -> str:
    """A user someone made in the org itself, through its REST API."""
    body = {
        "LastName": "made by hand", "Alias": "byhand", "ProfileId": profile_id(emulator, "Standard User"),
        "TimeZoneSidKey": "America/Los_Angeles", "LocaleSidKey": "en_US", "EmailEncodingKey": "UTF-8",
        "LanguageLocaleKey": "en_US", **fields,
    }  # fmt: skip
    answer = api(emulator, "POST", "sobjects/User", json=body)
    return str(answer["id"])


def api(emulator: SalesforceEmulator, method: str, path: str, **kwargs: object) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {emulator.static_token}"}
    response = requests.request(method, f"{emulator.base_url}/{path}", headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]
    response.raise_for_status()
    return response.json() if response.content else {}


def profile_id(emulator: SalesforceEmulator, name: str) -> str:
    query = soql.select(("Id",), "Profile", soql.eq("Name", name))
    rows = api(emulator, "GET", "query", params={"q": query})["records"]
    return str(rows[0]["Id"])  # type: ignore[index]


@pytest.fixture(scope="module")
def salesforce_org() -> Iterator[SalesforceEmulator]:
    emulator = SalesforceEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


class TestSalesforceTarget(TargetContract):
    @pytest.fixture
    def vendor(self, salesforce_org: SalesforceEmulator) -> Opener[Vendor]:
        @asynccontextmanager
        async def on_the_emulator() -> AsyncIterator[Vendor]:
            salesforce_org.reset()
            salesforce_org.seed(SEED)
            section = parse_mapping(MAPPING).targets["salesforce"]
            context = BuildContext(Settings.from_env(salesforce_env(salesforce_org)), SYSTEM)

            def by_hand(email: str) -> str:
                return add_user(salesforce_org, Username=email, Email=email)

            try:
                yield Vendor(SALESFORCE.build(section, context), section, by_hand, unique="Username", name="LastName")
            finally:
                await close_all(context.closers)

        return on_the_emulator


# -- beyond the contract: the client's session, secrets and pacing ---------------------------------------


def built(emulator: SalesforceEmulator, clock: FakeClock) -> tuple[SalesforceTarget, BuildContext]:
    emulator.reset()
    emulator.seed(SEED)
    section = parse_mapping(MAPPING).targets["salesforce"]
    context = BuildContext(Settings.from_env(salesforce_env(emulator)), clock)
    target = SALESFORCE.build(section, context)
    assert isinstance(target, SalesforceTarget)
    return target, context


def test_an_expired_session_is_renewed_once_and_no_secret_reaches_a_log_line(
    salesforce_org: SalesforceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        target, context = built(salesforce_org, FakeClock())
        try:
            with caplog.at_level(logging.DEBUG):
                assert await target.find("email", "nobody@contoso.example") == []
                first = salesforce_org.log.counts().get("salesforce.oauth.token")
                assert salesforce_org.expire_tokens() == 1
                assert await target.find("email", "nobody@contoso.example") == []  # renewed, then answered
                assert salesforce_org.log.counts().get("salesforce.oauth.token") == (first or 0) + 1
                token = target.client._connection().session_id
            text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
            for secret in (token, salesforce_org.client_secret):
                assert redact.redact(f"x {secret} y") == "x *** y"  # registered: every log line masks it
                assert secret not in text
        finally:
            await close_all(context.closers)

    asyncio.run(body())


def test_calls_are_paced_on_sforce_limit_info_and_stop_before_the_allocation_is_spent(
    salesforce_org: SalesforceEmulator,
) -> None:
    async def body() -> None:
        target, context = built(salesforce_org, FakeClock())
        try:
            salesforce_org.set_api_usage(used=85_000, limit=100_000)
            await target.find("email", "a@contoso.example")
            assert target.client.gate.spacing_s > 0  # past 80%: the rest spread over the day
            salesforce_org.set_api_usage(used=96_000, limit=100_000)
            await target.find("email", "a@contoso.example")  # answered past the reserve: the gate closes
            before = salesforce_org.log.counts().get("salesforce.query", 0)
            with pytest.raises(RateLimited):  # the work waits on the queue for an hour
                await target.find("email", "a@contoso.example")
            assert salesforce_org.log.counts().get("salesforce.query", 0) == before  # not sent
        finally:
            await close_all(context.closers)

    asyncio.run(body())


def test_a_hostile_value_is_compared_as_data_by_the_org(salesforce_org: SalesforceEmulator) -> None:
    async def body() -> None:
        target, context = built(salesforce_org, FakeClock())
        try:
            add_user(salesforce_org, Username="victim@contoso.example", Email="victim@contoso.example")
            for hostile in ("x' OR Email != '", "x\\' OR Email != \\'", "victim@contoso.example' OR Id != '"):
                assert await target.find("email", hostile) == []  # one string literal: nobody has it
            assert len(await target.find("email", "victim@contoso.example")) == 1
        finally:
            await close_all(context.closers)

    asyncio.run(body())
