"""Settings are read once, typed and validated; every problem names its setting."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.settings import Auth0Auth, GraphAuth, Secret, Settings, SettingsError
from shared.targets.registry import check_settings
from tests.support import CLIENT_STATE, EXAMPLE_MAPPING, sandbox_env

AZURITE = "UseDevelopmentStorage=true"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"


def production_env(**extra: str) -> dict[str, str]:
    env = {
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_CLIENT_SECRET": "graph-app-secret-value",
        "GRAPH_CLIENT_STATE": CLIENT_STATE,
        "GRAPH_NOTIFICATION_URL": "https://es-func.azurewebsites.net/api/graph_webhook",
        "GRAPH_LIFECYCLE_URL": "https://es-func.azurewebsites.net/api/graph_lifecycle",
        "AUTH0_DOMAIN": "contoso.eu.auth0.com",
        "AUTH0_CLIENT_ID": "m2m-client-id",
        "AUTH0_CLIENT_SECRET": "auth0-secret-value",
        "AzureWebJobsStorage__accountName": "essync",
        "AzureWebJobsStorage__clientId": CLIENT,
        "DELTA_SCHEDULE": "0 */5 * * * *",
        "RECONCILE_SCHEDULE": "0 0 2 * * *",
        "RISK_SCHEDULE": "0 * * * * *",
        "SUBSCRIPTIONS_SCHEDULE": "0 0 */6 * * *",
        "SYNC_MAPPING_FILE": str(EXAMPLE_MAPPING),
    }
    env.update(extra)
    return env


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    return info.value.problems


def test_sandbox_environment_reads_into_typed_settings() -> None:
    s = Settings.from_env(sandbox_env(storage=AZURITE))
    assert s.graph_auth is GraphAuth.STATIC_TOKEN
    assert s.auth0 is not None and s.auth0.auth is Auth0Auth.STATIC_TOKEN
    assert s.graph_base_url == "http://127.0.0.1:9/v1.0"
    assert s.auth0.base_url == "http://127.0.0.1:9/api/v2"
    assert s.graph_client_state.reveal() == CLIENT_STATE
    assert s.storage.connection_string == Secret(AZURITE)
    assert s.schedules["DELTA_SCHEDULE"] == "0 */5 * * * *"
    assert s.mapping_file == EXAMPLE_MAPPING


def test_a_relative_mapping_path_is_taken_from_the_app_root() -> None:
    s = Settings.from_env(sandbox_env(storage=AZURITE, SYNC_MAPPING_FILE="mapping.example.yaml"))
    assert s.mapping_file == EXAMPLE_MAPPING


def test_production_environment_uses_client_secret_and_identity_based_storage() -> None:
    s = Settings.from_env(production_env())
    assert s.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert s.graph_auth is GraphAuth.CLIENT_SECRET
    assert s.auth0 is not None and s.auth0.auth is Auth0Auth.CLIENT_CREDENTIALS
    assert s.auth0.base_url == "https://contoso.eu.auth0.com/api/v2"
    assert s.storage.connection_string is None
    assert s.storage.table_service_uri == "https://essync.table.core.windows.net"
    assert s.storage.queue_service_uri == "https://essync.queue.core.windows.net"
    assert s.storage.client_id == CLIENT


def test_without_a_client_secret_graph_uses_the_managed_identity() -> None:
    env = production_env()
    del env["AZURE_CLIENT_SECRET"]
    s = Settings.from_env(env)
    assert s.graph_auth is GraphAuth.MANAGED_IDENTITY
    assert s.client_id == CLIENT


@pytest.mark.parametrize(
    "name",
    [
        "AUTH0_CLIENT_ID",
        "AUTH0_CLIENT_SECRET",
        "DELTA_SCHEDULE",
        "RECONCILE_SCHEDULE",
        "RISK_SCHEDULE",
        "SUBSCRIPTIONS_SCHEDULE",
        "SYNC_MAPPING_FILE",
    ],
)
def test_a_missing_required_setting_is_named(name: str) -> None:
    env = production_env()
    del env[name]
    problems = problems_of(env)
    assert len(problems) == 1
    assert problems[0].startswith(f"{name} is required")


def test_missing_storage_and_auth0_are_named() -> None:
    env = production_env()
    for name in ("AzureWebJobsStorage__accountName", "AUTH0_DOMAIN"):
        del env[name]
    text = "\n".join(problems_of(env))
    assert "AzureWebJobsStorage is required" in text
    assert "AUTH0_DOMAIN is required" in text


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({})
    names = {p.split(" ", 1)[0] for p in problems}
    assert {"AzureWebJobsStorage", "SYNC_MAPPING_FILE"} <= names
    assert {"DELTA_SCHEDULE", "RISK_SCHEDULE"} <= names


def test_auth0_is_optional_until_the_mapping_names_an_auth0_target() -> None:
    env = sandbox_env(storage=AZURITE)
    for name in ("AUTH0_BASE_URL", "AUTH0_TOKEN"):
        del env[name]
    s = Settings.from_env(env)  # a deployment may sync only to other targets
    assert s.auth0 is None
    hr = SimpleNamespace(name="scim:hr-app", kind="scim", options=SimpleNamespace(token_setting="SCIM_HR_TOKEN"))
    check_settings(Settings.from_env({**env, "SCIM_HR_TOKEN": "t0ken-of-the-hr-app"}), [hr])
    with pytest.raises(SettingsError) as info:
        check_settings(s, [SimpleNamespace(name="auth0", kind="auth0", options=None)])
    assert info.value.problems == [
        "AUTH0_DOMAIN is required (or AUTH0_BASE_URL for the sandbox): the mapping names the target auth0"
    ]


@pytest.mark.parametrize("name", ["AZURE_CLIENT_SECRET", "AUTH0_CLIENT_SECRET", "GRAPH_CLIENT_STATE"])
def test_an_unresolved_key_vault_reference_fails_closed(name: str) -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-essync.vault.azure.net/secrets/x/)"
    problems = problems_of(production_env(**{name: reference}))
    assert any(p.startswith(f"{name} is an unresolved Key Vault reference") for p in problems)
    # The reference text is never taken as the secret, and never echoed.
    assert all("kv-essync" not in p for p in problems)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("AZURE_TENANT_ID", "contoso", "AZURE_TENANT_ID must be a GUID"),
        ("AUTH0_DOMAIN", "https://contoso.auth0.com", "AUTH0_DOMAIN must be a host name"),
        ("GRAPH_NOTIFICATION_URL", "http://es-func.example/api/x", "GRAPH_NOTIFICATION_URL must use https"),
        ("GRAPH_LIFECYCLE_URL", "not a url", "GRAPH_LIFECYCLE_URL must be an absolute https URL"),
        ("GRAPH_CLIENT_STATE", "short", "GRAPH_CLIENT_STATE must be 16 to 128 characters"),
        ("GRAPH_CLIENT_STATE", "x" * 129, "GRAPH_CLIENT_STATE must be 16 to 128 characters"),
        ("DELTA_SCHEDULE", "*/5 * * * *", "DELTA_SCHEDULE must be a six-field NCRONTAB"),
        ("RISK_SCHEDULE", "every minute", "RISK_SCHEDULE must be a six-field NCRONTAB"),
        ("AzureWebJobsStorage__clientId", "my-identity", "AzureWebJobsStorage__clientId must be a GUID"),
    ],
)
def test_a_malformed_setting_is_named_with_the_reason(name: str, value: str, expected: str) -> None:
    problems = problems_of(production_env(**{name: value}))
    assert any(p.startswith(expected) for p in problems), problems


def test_a_malformed_connection_string_is_refused_without_echoing_it() -> None:
    problems = problems_of(sandbox_env(storage="AccountKey=c2VjcmV0"))
    assert any(p.startswith("AzureWebJobsStorage must be a storage connection string") for p in problems)
    assert all("c2VjcmV0" not in p for p in problems)


def test_sandbox_tokens_are_refused_against_real_services() -> None:
    env = production_env(GRAPH_TOKEN="static", AUTH0_TOKEN="static")
    text = "\n".join(problems_of(env))
    assert "GRAPH_TOKEN is for the sandbox only" in text
    assert "AUTH0_TOKEN is for the sandbox only" in text


def test_a_client_secret_needs_tenant_and_client_ids() -> None:
    env = production_env()
    del env["AZURE_TENANT_ID"]
    assert problems_of(env) == ["AZURE_TENANT_ID is required: a client secret needs the tenant it belongs to"]


def test_secrets_never_show_in_the_settings_repr() -> None:
    env = production_env(NOTIFY_WEBHOOK_URL="https://hooks.example.com/services/T0/B0/webhook-secret")
    text = repr(Settings.from_env(env))
    for secret in ("graph-app-secret-value", "auth0-secret-value", CLIENT_STATE, "webhook-secret"):
        assert secret not in text
    assert "Secret('***')" in text


def test_a_mapping_file_that_does_not_exist_is_named() -> None:
    problems = problems_of(production_env(SYNC_MAPPING_FILE="/nonexistent/mapping.yaml"))
    assert problems == ["SYNC_MAPPING_FILE points to '/nonexistent/mapping.yaml', which is not a readable file"]


def test_the_risk_alert_secret_is_optional_long_and_never_shown() -> None:
    assert Settings.from_env(production_env()).risk_alert_secret is None  # the endpoint then refuses all
    secret = "r" * 40
    parsed = Settings.from_env(production_env(RISK_ALERT_SECRET=secret))
    assert parsed.risk_alert_secret == Secret(secret)
    assert secret not in repr(parsed)
    assert problems_of(production_env(RISK_ALERT_SECRET="short")) == [
        "RISK_ALERT_SECRET must be 32 to 256 characters (e.g. `openssl rand -hex 32`), got 5"
    ]
    problems = problems_of(production_env(RISK_ALERT_SECRET="@Microsoft.KeyVault(SecretUri=https://kv/secrets/x)"))
    assert problems[0].startswith("RISK_ALERT_SECRET is an unresolved Key Vault reference")


def test_the_local_settings_example_is_a_complete_sandbox_configuration() -> None:
    import json

    values = json.loads((EXAMPLE_MAPPING.parent / "local.settings.example.json").read_text())["Values"]
    env = {k: v for k, v in values.items() if v != ""}
    env["GRAPH_CLIENT_STATE"] = CLIENT_STATE  # the example asks for a long random value here
    settings = Settings.from_env(env)
    assert settings.graph_auth is GraphAuth.STATIC_TOKEN
    assert settings.mapping_file == EXAMPLE_MAPPING
