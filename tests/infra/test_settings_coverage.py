"""The Bicep app settings cover every setting shared/settings.py reads, so the two cannot drift.

The names the code reads are recorded by running ``Settings.from_env`` (and the inbound SCIM
sources' ``read_tokens``) against a mapping that notes every key looked up (over several
environments, so every branch is taken), and are cross-checked with a scan of the module's source
for ``raw("NAME")`` / ``required("NAME")`` calls.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from shared import settings as settings_module
from shared.settings import SCHEDULE_SETTINGS, Settings, SettingsError
from tests.infra.bicep import BicepFile, app_settings, literal, load
from tests.support import CLIENT_STATE, sandbox_env

# Read by the code but deliberately not set in Azure.
NOT_SET_IN_AZURE = {
    "GRAPH_TOKEN": "sandbox only: static Graph token",
    "AUTH0_TOKEN": "sandbox only: static Auth0 token",
    "AUTH0_BASE_URL": "sandbox only: loopback Auth0 emulator",
    "GRAPH_BASE_URL": "the default (Graph v1.0) is right for Azure",
    "AZURE_CLIENT_SECRET": "Azure uses the managed identity, not an app secret",
    "AzureWebJobsStorage": "a connection string needs shared keys, which are disabled",
}
# Set in Azure for the platform (Functions host, Application Insights), not read by shared/settings.py.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__blobServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
FAKE_GUID = "00000000-0000-4000-8000-000000000001"


class RecordingEnv(Mapping[str, str]):
    """A read-only environment that remembers every key looked up."""

    def __init__(self, values: Mapping[str, str]):
        self.values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.read.add(key)
        return self.values.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must look names up, not iterate the environment")

    def __len__(self) -> int:
        return len(self.values)


def _record(values: Mapping[str, str]) -> set[str]:
    env = RecordingEnv(values)
    with contextlib.suppress(SettingsError):
        Settings.from_env(env)
    return env.read


def azure_environment() -> dict[str, str]:
    """The app settings as Azure would present them, with references resolved to plausible values."""
    api, settings = app_settings()
    main = load("main.bicep")
    main_params = main.params()
    env: dict[str, str] = {}
    for name, node in settings.items():
        value = _resolve(api, node, main, main_params)
        env[name] = value if value is not None else _placeholder(name)
    return env


def _resolve(api: BicepFile, node, main: BicepFile, main_params: dict) -> str | None:  # type: ignore[no-untyped-def]
    if node.type == "string":
        # Interpolations such as ${functionApp.properties.defaultHostName} become a sample word.
        return re.sub(r"\$\{[^}]*\}", "example", api.text(node)[1:-1])
    if node.type == "identifier" and api.text(node) in main_params:
        default = main_params[api.text(node)]["default"]
        if default is not None and default.type == "string":
            return str(literal(main, default)) or None  # an empty default (Auth0's): a plausible value
    return None


def _placeholder(name: str) -> str:
    if name.endswith(("clientId", "CLIENT_ID", "TENANT_ID")) and name != "AUTH0_CLIENT_ID":
        return FAKE_GUID
    if name.endswith("ServiceUri"):
        return "https://stexample.core.windows.net/"
    if name.endswith("_URL"):
        return "https://func-api-example.azurewebsites.net/api/x"
    return {
        "GRAPH_CLIENT_STATE": CLIENT_STATE,
        "AUTH0_DOMAIN": "contoso.eu.auth0.com",
        "AUTH0_CLIENT_ID": "auth0-client-id",
        "AUTH0_CLIENT_SECRET": "auth0-client-secret-value",
        "AzureWebJobsStorage__accountName": "stexample",
        "NOTIFY_WEBHOOK_URL": "",
        "RISK_ALERT_SECRET": "",
        # No inbound SCIM source: their token settings are named after the sources the mapping
        # names, and test_scim_inbox_tokens.py checks those for a list of sources.
    }.get(name, "placeholder")


def names_in_source() -> set[str]:
    """Setting names passed as literals to the reader in shared/settings.py, plus the schedules."""
    source = Path(settings_module.__file__).read_text()
    found = set(re.findall(r"\.(?:raw|required)\(\s*\"([A-Za-z_][A-Za-z0-9_]*)\"", source))
    return found | set(SCHEDULE_SETTINGS)


def names_read_by_code() -> set[str]:
    environments = [
        {},
        azure_environment(),
        sandbox_env(storage="UseDevelopmentStorage=true"),
        {**azure_environment(), "AZURE_CLIENT_SECRET": "s", "AUTH0_TOKEN": "t"},
    ]
    recorded: set[str] = set()
    for env in environments:
        recorded |= _record(env)
    return recorded | names_in_source()


def missing_from_bicep(read: set[str]) -> set[str]:
    _, settings = app_settings()
    return read - set(NOT_SET_IN_AZURE) - set(settings)


def test_recording_finds_the_settings_the_source_names() -> None:
    recorded = names_read_by_code()
    assert names_in_source() <= recorded
    assert {"GRAPH_CLIENT_STATE", "AUTH0_DOMAIN", "AzureWebJobsStorage__accountName", "NOTIFY_WEBHOOK_URL"} <= recorded


def test_every_setting_the_code_reads_is_set_by_the_bicep() -> None:
    missing = missing_from_bicep(names_read_by_code())
    assert not missing, f"shared/settings.py reads {sorted(missing)}, which infra/app/api.bicep does not set"


def test_the_bicep_sets_no_setting_nobody_reads() -> None:
    _, settings = app_settings()
    unused = set(settings) - names_read_by_code() - PLATFORM_SETTINGS
    assert not unused, f"app settings nothing reads: {sorted(unused)}"


def test_sandbox_only_settings_are_not_deployed() -> None:
    _, settings = app_settings()
    assert not set(NOT_SET_IN_AZURE) & set(settings)


def test_the_azure_settings_pass_the_apps_own_validation() -> None:
    env = azure_environment()
    assert env["SYNC_MAPPING_FILE"] == "mapping.yaml"  # the operator's own file, deployed with the app
    env["SYNC_MAPPING_FILE"] = str(Path(__file__).resolve().parents[2] / "mapping.example.yaml")
    parsed = Settings.from_env(env)
    assert parsed.graph_auth.value == "managed_identity"
    assert parsed.storage.connection_string is None
    assert parsed.storage.client_id == FAKE_GUID
    assert set(parsed.schedules) == set(SCHEDULE_SETTINGS)


def test_a_new_setting_in_the_code_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    original = settings_module._Reader.read

    def read_with_a_new_setting(self):  # type: ignore[no-untyped-def]
        self.raw("BRAND_NEW_SETTING")
        return original(self)

    monkeypatch.setattr(settings_module._Reader, "read", read_with_a_new_setting)
    assert missing_from_bicep(names_read_by_code()) == {"BRAND_NEW_SETTING"}


def test_schedule_defaults_are_valid_ncrontab() -> None:
    main = load("main.bicep")
    params = main.params()
    for name in ("deltaSchedule", "reconcileSchedule", "riskSchedule", "subscriptionsSchedule"):
        value = literal(main, params[name]["default"])
        assert settings_module._valid_cron(value), f"{name} = {value!r}"
