"""Fixtures and helpers the Salesforce emulator's tests share: an emulator on a fake clock, a
simple-salesforce client on it, a small seeded org, control calls and error bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce

from sandbox.salesforce import SalesforceEmulator


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[SalesforceEmulator]:
    emu = SalesforceEmulator(now=clock).start()
    try:
        yield emu
    finally:
        emu.stop()


def client(emu: SalesforceEmulator, token: str | None = None) -> Salesforce:
    return emu.client(token)


@pytest.fixture
def sf(emulator: SalesforceEmulator) -> Salesforce:
    return client(emulator)


@pytest.fixture
def org(emulator: SalesforceEmulator) -> dict[str, Any]:
    return emulator.seed(
        {
            "licenses": [{"name": "Salesforce", "total": 50}],
            "profiles": [{"name": "Sales User", "license": "Salesforce"}],
            "roles": [{"name": "Sales"}, {"name": "West", "parent": "Sales"}],
            "permission_sets": [{"name": "Sales_Ops"}, {"name": "Reports"}],
            "users": [
                {"Username": "boss@corp.example.com", "profile": "Sales User", "role": "Sales"},
                {
                    "Username": "ann@corp.example.com",
                    "profile": "Sales User",
                    "role": "West",
                    "manager": "boss@corp.example.com",
                    "FederationIdentifier": "ann-oid",
                    "EmployeeNumber": "E1",
                    "permission_sets": ["Sales_Ops"],
                },
            ],
        }
    )


def user_fields(username: str, profile_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "Username": username,
        "Email": username,
        "LastName": username.split("@")[0].title(),
        "Alias": username.split("@")[0][:8],
        "TimeZoneSidKey": "Europe/Berlin",
        "LocaleSidKey": "de_DE",
        "EmailEncodingKey": "UTF-8",
        "LanguageLocaleKey": "de",
        "ProfileId": profile_id,
        **extra,
    }


def control(emu: SalesforceEmulator, method: str, path: str, body: Any = None) -> Any:
    answer = requests.request(method, f"{emu.origin}/_control/{path}", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json() if answer.content else None


def error_of(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    content = exc.value.content
    assert isinstance(content, list) and len(content) == 1, content
    error: dict[str, Any] = content[0]
    return error
