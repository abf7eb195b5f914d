"""The deployment provides exactly what the mapping's targets and sources need.

For a mapping, the pre-provision step (``shared.mapping.deploy``) reads it with the app's loader and
writes the azd environment values; infra/main.parameters.json hands the azd environment to
main.bicep, which is evaluated through the Key Vault and inbound SCIM modules to the Function App's
settings (tests/infra/deployment.py). The settings, each Key Vault reference resolved to its
secret, are then read by the app's own settings checks for that mapping: every secret it needs has
its parameter, its Key Vault secret and its Key Vault reference, and nothing exists for a target the
mapping does not name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sandbox.mapping import inbound_sections, inbound_sources, salesforce_section, sandbox_mapping_v2, scim_section
from shared.mapping import deploy
from shared.mapping.load import parse_mapping
from shared.mapping.model import MappingError, SyncMapping
from shared.settings import Settings
from shared.sources.registry import check_settings as check_source_settings
from shared.targets.registry import check_settings as check_target_settings
from tests.infra.bicep import INFRA, load
from tests.infra.deployment import REFERENCE, Deployment, provision
from tests.infra.test_settings_coverage import azure_environment

G1, G2, G3 = (f"00000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
SEED = "5eed" * 16

AUTH0_ONLY = sandbox_mapping_v2([(G1, ["Employee"])])
SCIM_ONLY = "version: 2\nscope: {}\ntargets:\n" + scim_section(
    "https://hr.example.com/scim/v2", [(G1, "Staff")], name="hr"
)
EVERYTHING = sandbox_mapping_v2(
    [(G1, ["Employee"])],
    others=scim_section("https://hr.example.com/scim/v2", [(G1, "Staff")], name="hr")
    + salesforce_section(G1, G2, G3)
    + inbound_sections(
        "https://crm.example.com/scim/v2",
        [],
        auth0="auth0:partners",
        scim="crm",
        auth0_matching="{app_metadata_key: partner_object_id}",
    ),
    extra=inbound_sources(),
)

# The azd environment an operator prepared: values for every target, whether the mapping names it.
AZD_ENV = {
    "AUTH0_DOMAIN": "contoso.eu.auth0.com",
    "AUTH0_CLIENT_ID": "auth0-m2m-client",
    "AUTH0_CLIENT_SECRET": "auth0-secret-value-1",
    "SCIM_HR_TOKEN": "hr-token-value-2",
    "SCIM_CRM_TOKEN": "crm-token-value-3",
    "SCIM_UNUSED_TOKEN": "unused-token-value-4",
    "SALESFORCE_INSTANCE_URL": "https://acme.my.salesforce.com",
    "SALESFORCE_CLIENT_ID": "sf-consumer-key",
    "SALESFORCE_CLIENT_SECRET": "sf-secret-value-5",
    "SCIM_INBOX_TOKEN_SEED": SEED,
    "GRAPH_CLIENT_STATE": "graph-client-state-" + "x" * 16,
}


def parameters(env: dict[str, str]) -> dict[str, str]:
    """main.bicep's parameter values as azd computes them from infra/main.parameters.json."""
    given: dict[str, str] = {}
    for name, entry in json.loads((INFRA / "main.parameters.json").read_text())["parameters"].items():
        reference = re.fullmatch(r"\$\{(?P<name>[A-Za-z0-9_]+)(=(?P<default>.*))?\}", entry["value"])
        assert reference, f"{name}: {entry['value']}"
        given[name] = env.get(reference["name"], reference["default"] or "")
    return given


def deploy_mapping(text: str, env: dict[str, str]) -> tuple[SyncMapping, dict[str, str], Deployment]:
    mapping = parse_mapping(text, source="mapping.yaml")
    values = deploy.azd_values(mapping, env)
    assert isinstance(values, dict), values
    return mapping, values, provision(**parameters({**env, **values}))


def app_environment(deployment: Deployment, mapping_file: Path) -> dict[str, str]:
    """The settings as the running app reads them: references resolved; what only Azure knows
    (host names, the account) as the coverage test's plausible values."""
    env = {**azure_environment(), **deployment.resolved_environment()}
    for name in [n for n in env if n.startswith("AUTH0_")]:
        if name not in deployment.settings:
            del env[name]  # the coverage test's placeholders, for a deployment with no Auth0 target
    return {**env, "SYNC_MAPPING_FILE": str(mapping_file)}


@pytest.mark.parametrize(
    ("text", "secrets"),
    [
        (AUTH0_ONLY, {"AUTH0_CLIENT_SECRET"}),
        (SCIM_ONLY, {"SCIM_HR_TOKEN"}),
        (EVERYTHING, {"AUTH0_CLIENT_SECRET", "SCIM_HR_TOKEN", "SCIM_CRM_TOKEN", "SALESFORCE_CLIENT_SECRET"}),
    ],
    ids=["auth0-only", "scim-only", "auth0-scim-salesforce-inbound"],
)
def test_every_secret_the_mapping_needs_reaches_the_app_through_key_vault_and_nothing_else(
    tmp_path: Path, text: str, secrets: set[str]
) -> None:
    mapping, values, deployment = deploy_mapping(text, AZD_ENV)
    inbound = [name for name, s in mapping.sources.items() if s.kind == "scim_inbox"]
    # Each secret: a Key Vault secret holding the value the operator set, and the app setting a
    # Key Vault reference to it.
    for setting in secrets:
        reference = REFERENCE.fullmatch(deployment.settings[setting])
        assert reference, f"{setting} must be a Key Vault reference"
        assert deployment.resolved_environment()[setting] == AZD_ENV[setting]
    # Nothing for targets the mapping does not name: no other target secret or setting.
    expected_secrets = {deploy.vault_name(s) for s in secrets} | {f"scim-inbox-{name}-token" for name in inbound}
    assert set(deployment.secrets) - {"graph-client-state"} == expected_secrets
    target_settings = {n for n in deployment.settings if n.startswith(("AUTH0_", "SCIM_", "SALESFORCE_"))}
    plain = {"AUTH0_DOMAIN", "AUTH0_CLIENT_ID"} if "AUTH0_CLIENT_SECRET" in secrets else set()
    if "SALESFORCE_CLIENT_SECRET" in secrets:
        plain |= {"SALESFORCE_INSTANCE_URL", "SALESFORCE_CLIENT_ID"}
    inbox_settings = {f"SCIM_INBOX_{name.upper().replace('-', '_')}_TOKEN" for name in inbound}
    assert target_settings == secrets | plain | inbox_settings
    # No secret value in the plain parameter or a plain setting.
    for value in (values[deploy.TARGETS_VALUE], *map(str, deployment.settings.values())):
        assert not any(AZD_ENV[s] in value for s in secrets)

    # The app, given these settings, finds everything its mapping's targets and sources need.
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(text)
    settings = Settings.from_env(app_environment(deployment, mapping_file))
    check_target_settings(settings, mapping.targets.values())  # raises SettingsError naming what is missing
    check_source_settings(settings, mapping.sources.values())
    assert (settings.auth0 is not None) == ("AUTH0_CLIENT_SECRET" in secrets)


def test_a_value_the_mapping_needs_and_the_azd_environment_lacks_stops_the_provision_naming_the_command() -> None:
    mapping = parse_mapping(EVERYTHING, source="mapping.yaml")
    env = {k: v for k, v in AZD_ENV.items() if k not in {"SCIM_CRM_TOKEN", "AUTH0_DOMAIN", "SALESFORCE_INSTANCE_URL"}}
    problems = deploy.azd_values(mapping, env)
    assert isinstance(problems, list)
    assert sorted(p.split(" ")[0] for p in problems) == ["AUTH0_DOMAIN", "SALESFORCE_INSTANCE_URL", "SCIM_CRM_TOKEN"]
    assert all(f"azd env set {p.split(' ')[0]} <value>" in p for p in problems)
    # A mapping that needs none of them does not ask for them.
    assert isinstance(deploy.azd_values(parse_mapping(SCIM_ONLY, source="m"), {"SCIM_HR_TOKEN": "t"}), dict)


def test_the_step_writes_the_values_with_azd_and_stops_on_a_broken_mapping_with_the_checker_s_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written: dict[str, str] = {}
    good = tmp_path / "mapping.yaml"
    good.write_text(SCIM_ONLY)
    assert deploy.main(["--mapping", str(good)], env=AZD_ENV, write=written.__setitem__) == 0
    assert json.loads(written[deploy.TARGETS_VALUE]) == {
        "auth0": False,
        "secrets": [{"setting": "SCIM_HR_TOKEN", "vaultName": "scim-hr-token"}],
        "settings": {},
    }
    assert json.loads(written[deploy.SECRETS_VALUE]) == {"SCIM_HR_TOKEN": AZD_ENV["SCIM_HR_TOKEN"]}
    assert written[deploy.INBOX_SOURCES_VALUE] == ""
    assert AZD_ENV["SCIM_HR_TOKEN"] not in capsys.readouterr().out

    broken = tmp_path / "broken.yaml"
    broken.write_text(SCIM_ONLY.replace("userName", "userNmae"))
    written.clear()
    assert deploy.main(["--mapping", str(broken)], env=AZD_ENV, write=written.__setitem__) == 2
    err = capsys.readouterr().err
    with pytest.raises(MappingError) as loaded:
        parse_mapping(broken.read_text(), source=str(broken))
    assert str(loaded.value) in err  # the same words entra-sync check prints
    assert not written


def test_auth0_parameters_are_optional_and_the_target_parameters_are_wired_from_azd() -> None:
    params = load("main.bicep").params()
    for name in ("auth0Domain", "auth0ClientId", "auth0ClientSecret", "targetSet", "targetSecrets"):
        assert params[name]["default"] is not None, f"{name} must be optional"
    assert "secure" in params["targetSecrets"]["decorators"]
    assert "secure" in load("app/keyvault.bicep").params()["targetSecrets"]["decorators"]
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["targetSet"] == {"value": "${ENTRA_SYNC_TARGETS}"}
    assert values["targetSecrets"] == {"value": "${ENTRA_SYNC_TARGET_SECRETS}"}
    # Without the hook's values (a provision outside azd), no target gets anything.
    bare = provision(graphClientState="x" * 32)
    assert not [n for n in bare.settings if n.startswith(("AUTH0_", "SCIM_", "SALESFORCE_"))]
    assert set(bare.secrets) == {"graph-client-state"}
