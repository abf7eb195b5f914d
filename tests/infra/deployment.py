"""What one provision computes from azd's parameter values, without Azure: main.bicep evaluated
through the Key Vault and inbound SCIM modules to the Function App's settings (tests/infra/evaluate.py).

The Key Vault secrets the templates write, the modules' outputs, the app settings (Key Vault
references where a secret is read) and main.bicep's outputs are collected, and
:meth:`Deployment.resolved_environment` gives the settings as the app sees them once the platform has
resolved each reference, so a test can hand them to the app's own readers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.infra.bicep import BicepFile, load, path, resource
from tests.infra.evaluate import Evaluator, module_condition, module_params

VAULT_URI = "https://kv-example.vault.azure.net/"
REFERENCE = re.compile(r"@Microsoft\.KeyVault\(SecretUri=(?P<uri>[^)]+)\)")
VAULT = {"name": "kv-example", "properties": {"vaultUri": VAULT_URI}}


@dataclass
class Deployment:
    """What one provision computes for the mapping's targets and the inbound sources."""

    names: list[str]  # the inbound sources
    module_deployed: bool  # the inbound sources' token module
    secrets: dict[str, str]  # Key Vault secret name -> value (every module's)
    module_outputs: dict[str, Any]  # the inbound token module's
    vault_outputs: dict[str, Any]  # keyvault.bicep's
    settings: dict[str, Any]  # the Function App's app settings (Unknown where only Azure knows)
    outputs: dict[str, Any]  # main.bicep's outputs

    def resolved_environment(self) -> dict[str, str]:
        """The app settings as the app sees them: each Key Vault reference replaced by its secret."""
        env: dict[str, str] = {}
        for name, value in self.settings.items():
            if not isinstance(value, str):
                continue
            reference = REFERENCE.fullmatch(value)
            if reference:
                uri = reference.group("uri")
                assert uri.startswith(f"{VAULT_URI}secrets/"), uri
                value = self.secrets[uri.removeprefix(f"{VAULT_URI}secrets/")]
            env[name] = value
        return env


def _secrets(file: BicepFile, evaluator: Evaluator) -> dict[str, str]:
    """The Key Vault secrets a module writes (a conditional one only when its condition holds)."""
    written: dict[str, str] = {}
    for entry in file.resources():
        if entry.type != "Microsoft.KeyVault/vaults/secrets":
            continue
        holder = entry.body.parent
        assert holder is not None
        if holder.type == "for_statement":
            found = evaluator.eval(holder)
        elif holder.type == "if_statement":
            found = [evaluator.eval(entry.body)] if evaluator.eval(holder.named_children[0]) else []
        else:
            found = [evaluator.eval(entry.body)]
        written |= {secret["name"]: secret["properties"]["value"] for secret in found}
    return written


def provision(**given: str) -> Deployment:
    """One provision for main.bicep's parameter values ``given`` (the rest take their defaults)."""
    main = load("main.bicep")
    top = Evaluator(main, given)
    names = top.symbol("scimInboxSourceNames")
    secrets: dict[str, str] = {}

    vault_file = load("app/keyvault.bicep")
    vault_params = {name: top.eval(node) for name, node in module_params(main, "keyVault").items()}
    vault = Evaluator(vault_file, {**vault_params, "vault": VAULT})
    secrets |= _secrets(vault_file, vault)
    vault_outputs = {name: vault.eval(node) for name, node in vault_file.outputs().items()}

    condition = module_condition(main, "scimInbox")
    assert condition is not None, "the token module must be conditional: no sources, no seed needed"
    deployed = top.eval(condition)
    module_outputs: dict[str, Any] = {}
    if deployed:
        inbox_file = load("app/scim-inbox.bicep")
        inbox_params = {name: top.eval(node) for name, node in module_params(main, "scimInbox").items()}
        inbox = Evaluator(inbox_file, {**inbox_params, "vault": VAULT})
        secrets |= _secrets(inbox_file, inbox)
        module_outputs = {name: inbox.eval(node) for name, node in inbox_file.outputs().items()}

    top = Evaluator(main, {**given, "scimInbox": {"outputs": module_outputs}, "keyVault": {"outputs": vault_outputs}})
    api_file = load("app/api.bicep")
    api = Evaluator(api_file, {name: top.eval(node) for name, node in module_params(main, "api").items()})
    _, config = resource("Microsoft.Web/sites/config")
    settings = api.eval(path(api_file, config.body, "properties"))
    outputs = {name: top.eval(node) for name, node in main.outputs().items()}
    return Deployment(names, bool(deployed), secrets, module_outputs, vault_outputs, settings, outputs)
