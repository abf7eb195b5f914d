"""The Bicep provisions every inbound SCIM source's bearer token where the app reads it.

For a list of sources as azd passes it, the templates are evaluated from main.bicep through the
scim-inbox module to the Function App's settings (tests/infra/evaluate.py), and the settings are
then read by the app's own ``read_tokens`` with each Key Vault reference resolved to its secret, as
the platform does: setting names, secret names and token format are checked together, against the
app's ``token_setting``, so the two cannot drift.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tree_sitter

from shared.settings import SettingsError
from shared.sources.scim_inbox.factory import read_tokens, token_setting
from tests.infra.bicep import INFRA, BicepFile, bicep_files, load
from tests.infra.deployment import REFERENCE, VAULT_URI, Deployment
from tests.infra.deployment import provision as provision_with
from tests.infra.evaluate import Evaluator, Unknown, Unsupported

SEED = "5eed" * 16


def provision(sources: str, seed: str = SEED) -> Deployment:
    """One provision for the sources, with only the inbound sources' secrets (keyvault.bicep writes
    its own besides; tests/infra/test_target_set.py checks those)."""
    deployment = provision_with(scimInboxSources=sources, scimInboxTokenSeed=seed)
    deployment.secrets = {n: v for n, v in deployment.secrets.items() if n.startswith("scim-inbox-")}
    return deployment


@pytest.mark.parametrize(
    ("sources", "names"),
    [
        ("hr-push", ["hr-push"]),
        ("hr-push,partners-eu-2", ["hr-push", "partners-eu-2"]),
        (" hr-push , ,partners-eu-2,", ["hr-push", "partners-eu-2"]),  # as typed into azd env set
    ],
)
def test_every_inbound_source_gets_its_secret_and_the_setting_the_app_reads(sources: str, names: list[str]) -> None:
    deployment = provision(sources)
    assert deployment.names == names
    assert "SCIM_INBOX_SOURCES" not in deployment.settings  # the mapping's sources: names them to the app
    assert set(deployment.secrets) == {f"scim-inbox-{name}-token" for name in names}
    for name in names:
        # token_setting is the app's: 'partners-eu-2' -> SCIM_INBOX_PARTNERS_EU_2_TOKEN (every '-').
        reference = deployment.settings[token_setting(name)]
        assert reference == f"@Microsoft.KeyVault(SecretUri={VAULT_URI}secrets/scim-inbox-{name}-token)"
    token_settings = {key for key in deployment.settings if key.startswith("SCIM_INBOX_") and key.endswith("_TOKEN")}
    assert token_settings == {token_setting(name) for name in names}

    # A reference the platform could not resolve is refused at start-up, never taken as the token.
    unresolved = {key: value for key, value in deployment.settings.items() if isinstance(value, str)}
    with pytest.raises(SettingsError, match="unresolved Key Vault reference"):
        read_tokens(unresolved, {name: token_setting(name) for name in names})
    # What the app reads for each source the mapping names: raises SettingsError on any problem.
    tokens = read_tokens(deployment.resolved_environment(), {name: token_setting(name) for name in names})
    assert sorted(tokens) == sorted(names)
    assert {name: token.reveal() for name, token in tokens.items()} == {
        name: deployment.secrets[f"scim-inbox-{name}-token"] for name in names
    }


def test_without_inbound_sources_nothing_is_provisioned_and_no_seed_is_needed() -> None:
    deployment = provision("", seed="")
    assert deployment.names == []
    assert not deployment.module_deployed
    assert not [key for key in deployment.settings if key.startswith("SCIM_INBOX_")]


def test_a_token_is_the_same_at_every_provision_and_differs_by_source_and_seed() -> None:
    first = provision("hr-push,partners")
    again = provision("partners,hr-push,later-added")
    other_seed = provision("hr-push,partners", seed="another-seed-" + "x" * 32)
    token = "scim-inbox-hr-push-token"
    # Entra keeps the Secret Token pasted once: reprovisioning, reordering or adding a source keeps it.
    assert again.secrets[token] == first.secrets[token]
    assert again.secrets["scim-inbox-partners-token"] == first.secrets["scim-inbox-partners-token"]
    assert first.secrets[token] != first.secrets["scim-inbox-partners-token"]
    assert other_seed.secrets[token] != first.secrets[token]
    for value in again.secrets.values():
        assert re.fullmatch(r"[0-9a-f]{64}", value), value
        assert SEED not in value


def test_the_seed_is_secure_and_long_enough_before_any_token_is_written() -> None:
    inbox = load("app/scim-inbox.bicep")
    seed = inbox.params()["tokenSeed"]
    assert {"secure", "minLength"} <= set(seed["decorators"])
    assert re.search(r"@minLength\((\d+)\)\nparam tokenSeed ", inbox.source.decode()).group(1) == "32"  # type: ignore[union-attr]
    assert seed["default"] is None
    assert "secure" in load("main.bicep").params()["scimInboxTokenSeed"]["decorators"]
    # Tokens are derived, never drawn: newGuid() would write a new token at every provision.
    assert "newGuid" not in _called(inbox, inbox.root)


def _called(file: BicepFile, node: tree_sitter.Node) -> set[str]:
    found = {file.text(node.named_children[0])} if node.type == "call_expression" else set()
    for child in node.named_children:
        found |= _called(file, child)
    return found


def test_no_token_or_seed_reaches_an_output_or_a_plain_setting() -> None:
    deployment = provision("hr-push,partners")
    leaks = [*deployment.secrets.values(), SEED]
    for where, values in (
        ("app setting", deployment.settings),
        ("main.bicep output", deployment.outputs),
        ("scim-inbox.bicep output", deployment.module_outputs),
    ):
        for name, value in values.items():
            text = json.dumps(value, default=lambda unknown: unknown.text)
            assert not any(leak in text for leak in leaks), f"{where} {name} holds a token or the seed"
    for name, value in deployment.settings.items():
        if name.startswith("SCIM_INBOX_") and name.endswith("_TOKEN"):
            assert REFERENCE.fullmatch(value), f"{name} must be a Key Vault reference"


def _identifiers(file: BicepFile, node: tree_sitter.Node, variables: dict[str, tree_sitter.Node]) -> set[str]:
    """The symbols an expression is computed from, through variables; an argument of empty() only
    decides whether something exists, which is not the secret, and is left out."""
    if node.type == "call_expression" and file.text(node.named_children[0]) == "empty":
        return set()
    if node.type == "identifier":
        name = file.text(node)
        return {name} | (_identifiers(file, variables[name], variables) if name in variables else set())
    found: set[str] = set()
    for child in node.named_children:
        found |= _identifiers(file, child, variables)
    return found


@pytest.mark.parametrize("bicep", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_no_output_of_any_template_is_computed_from_a_secure_parameter(bicep) -> None:  # type: ignore[no-untyped-def]
    file = load(str(bicep.relative_to(INFRA)))
    secure = {name for name, info in file.params().items() if "secure" in info["decorators"]}
    variables = file.variables()
    for name, node in file.outputs().items():
        assert not _identifiers(file, node, variables) & secure, f"{bicep.name}: output {name}"


def test_the_check_sees_a_secure_parameter_reach_an_output(tmp_path: Path) -> None:
    (tmp_path / "leaky.bicep").write_text(
        "@secure()\nparam seed string\nvar derived = '${seed}x'\nvar has = !empty(seed)\n"
        "output o string = derived\noutput p bool = has\n"
    )
    leaky = BicepFile(tmp_path / "leaky.bicep")
    assert _identifiers(leaky, leaky.outputs()["o"], leaky.variables()) == {"derived", "seed"}
    assert _identifiers(leaky, leaky.outputs()["p"], leaky.variables()) == {"has"}  # only whether it is set


def test_the_parameters_file_passes_the_sources_and_the_seed_from_azd() -> None:
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["scimInboxSources"] == {"value": "${SCIM_INBOX_SOURCES}"}
    assert values["scimInboxTokenSeed"] == {"value": "${SCIM_INBOX_TOKEN_SEED}"}


def test_the_evaluator_refuses_what_it_does_not_know() -> None:
    main = load("main.bicep")
    evaluator = Evaluator(main, {"scimInboxSources": "a", "scimInboxTokenSeed": SEED})
    with pytest.raises(Unsupported, match="unknown symbol"):
        evaluator.symbol("noSuchSymbol")
    assert isinstance(evaluator.symbol("rg"), Unknown)  # a resource: only Azure knows its properties
