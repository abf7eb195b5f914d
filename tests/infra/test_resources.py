"""The Bicep declares the resources, settings and roles the deployment needs (read from the syntax tree)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared import names
from tests.infra.bicep import (
    INFRA,
    BicepFile,
    all_resources,
    app_settings,
    bicep_files,
    literal,
    load,
    path,
    properties,
    resource,
)

# Built-in role definition ids (Azure RBAC), and why the identity holds each one.
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner (host storage, Flex deployment container)",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor (sync-work queue)",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor (sync tables)",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User (Key Vault references)",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher (Entra-authenticated telemetry)",
}
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
}
# App settings Flex Consumption rejects or ignores (the runtime lives in functionAppConfig).
FLEX_UNSUPPORTED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
}


def test_every_resource_type_the_deployment_needs_is_declared() -> None:
    declared = {r.type for r in all_resources()}
    assert declared >= {
        "Microsoft.Resources/resourceGroups",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "Microsoft.Storage/storageAccounts/queueServices/queues",
        "Microsoft.Storage/storageAccounts/tableServices/tables",
        "Microsoft.KeyVault/vaults",
        "Microsoft.KeyVault/vaults/secrets",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.Insights/components",
        "Microsoft.Web/serverfarms",
        "Microsoft.Web/sites",
        "Microsoft.Web/sites/config",
        "Microsoft.Authorization/roleAssignments",
    }


def test_every_resource_names_an_api_version() -> None:
    for r in all_resources():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", r.api_version), f"{r.symbol} in {r.file.name}"


def test_storage_account_allows_no_shared_keys_and_no_public_blobs() -> None:
    file, storage = resource("Microsoft.Storage/storageAccounts")
    props = properties(file, path(file, storage.body, "properties"))
    assert literal(file, props["allowSharedKeyAccess"]) is False
    assert literal(file, props["allowBlobPublicAccess"]) is False
    assert literal(file, props["minimumTlsVersion"]) == "TLS1_2"


def test_queues_and_tables_match_shared_names() -> None:
    storage = load("app/storage.bicep")
    variables = storage.variables()
    assert tuple(literal(storage, variables["queueNames"])) == names.QUEUES
    assert tuple(literal(storage, variables["tableNames"])) == names.TABLES
    assert literal(storage, variables["reportsContainerName"]) == names.REPORTS_CONTAINER


def test_function_app_runs_python_311_on_flex_consumption_as_the_user_assigned_identity() -> None:
    file, plan = resource("Microsoft.Web/serverfarms")
    assert literal(file, path(file, plan.body, "sku")) == {"name": "FC1", "tier": "FlexConsumption"}
    assert literal(file, path(file, plan.body, "properties", "reserved")) is True

    file, site = resource("Microsoft.Web/sites")
    assert literal(file, path(file, site.body, "kind")) == "functionapp,linux"
    assert literal(file, path(file, site.body, "identity", "type")) == "UserAssigned"
    config = path(file, site.body, "properties", "functionAppConfig")
    assert literal(file, path(file, config, "runtime")) == {"name": "python", "version": "3.11"}
    storage = path(file, config, "deployment", "storage")
    assert literal(file, path(file, storage, "type")) == "blobContainer"
    assert literal(file, path(file, storage, "authentication", "type")) == "UserAssignedIdentity"
    assert file.text(path(file, storage, "authentication", "userAssignedIdentityResourceId")) == "identityId"
    assert literal(file, path(file, site.body, "properties", "httpsOnly")) is True


def test_key_vault_references_resolve_through_the_user_assigned_identity() -> None:
    file, site = resource("Microsoft.Web/sites")
    assert file.text(path(file, site.body, "properties", "keyVaultReferenceIdentity")) == "identityId"
    user_assigned = path(file, site.body, "identity", "userAssignedIdentities")
    assert list(properties(file, user_assigned)) == ["'${identityId}'"]


def test_secrets_are_key_vault_references_in_the_app_settings() -> None:
    file, settings = app_settings()
    for name in ("GRAPH_CLIENT_STATE", "AUTH0_CLIENT_SECRET", "NOTIFY_WEBHOOK_URL", "RISK_ALERT_SECRET"):
        assert file.text(settings[name]) == f"keyVaultReferences.{name}", name

    vault = load("app/keyvault.bicep")
    references = vault.outputs()["references"]
    for name, value in properties(vault, references).items():
        assert "'@Microsoft.KeyVault(SecretUri=${" in vault.text(value), name
    assert set(properties(vault, references)) == {
        "GRAPH_CLIENT_STATE",
        "AUTH0_CLIENT_SECRET",
        "NOTIFY_WEBHOOK_URL",
        "RISK_ALERT_SECRET",
    }


def test_key_vault_uses_rbac_and_secret_parameters_are_secure() -> None:
    file, vault = resource("Microsoft.KeyVault/vaults")
    assert literal(file, path(file, vault.body, "properties", "enableRbacAuthorization")) is True
    for module in ("main.bicep", "app/keyvault.bicep"):
        params = load(module).params()
        for name in ("auth0ClientSecret", "graphClientState", "notifyWebhookUrl", "riskAlertSecret"):
            assert "secure" in params[name]["decorators"], f"{module}: {name} must be @secure()"


def test_application_insights_accepts_only_entra_authenticated_telemetry() -> None:
    file, component = resource("Microsoft.Insights/components")
    assert literal(file, path(file, component.body, "properties", "DisableLocalAuth")) is True
    api, settings = app_settings()
    assert "Authorization=AAD" in api.text(settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"])
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings


def test_storage_settings_are_identity_based() -> None:
    file, settings = app_settings()
    assert literal(file, settings["AzureWebJobsStorage__credential"]) == "managedidentity"
    assert file.text(settings["AzureWebJobsStorage__clientId"]) == "identityClientId"
    assert file.text(settings["AZURE_CLIENT_ID"]) == "identityClientId"
    for name in ("accountName", "blobServiceUri", "queueServiceUri", "tableServiceUri"):
        assert f"AzureWebJobsStorage__{name}" in settings
    assert "AzureWebJobsStorage" not in settings  # no connection string: shared keys are off


def test_webhook_urls_are_built_from_the_apps_host_name() -> None:
    file, settings = app_settings()
    host = "https://${functionApp.properties.defaultHostName}"
    assert file.text(settings["GRAPH_NOTIFICATION_URL"]) == f"'{host}/api/graph_webhook'"
    assert file.text(settings["GRAPH_LIFECYCLE_URL"]) == f"'{host}/api/graph_lifecycle'"


def test_no_settings_that_flex_consumption_rejects() -> None:
    _, settings = app_settings()
    assert not FLEX_UNSUPPORTED_SETTINGS & set(settings)


def test_role_assignments_grant_exactly_the_needed_roles_named_by_scope_principal_and_role() -> None:
    rbac = load("app/rbac.bicep")
    role_vars = {
        name: literal(rbac, value)
        for name, value in rbac.variables().items()
        if isinstance(literal(rbac, value), str) and re.fullmatch(r"[0-9a-f-]{36}", literal(rbac, value))
    }
    assert set(role_vars.values()) == set(ROLES)
    assignments = [r for r in all_resources() if r.type == "Microsoft.Authorization/roleAssignments"]
    assert {r.file.name for r in assignments} == {"rbac.bicep"}
    for assignment in assignments:
        props = properties(rbac, assignment.body)
        scope = rbac.text(props["scope"])
        role_def = rbac.text(path(rbac, assignment.body, "properties", "roleDefinitionId"))
        role = re.search(r"(\w+)\)$", role_def).group(1)  # type: ignore[union-attr]
        # The app's identity, and the operators' group (the CLI from a laptop: data roles only).
        operators = assignment.symbol == "operatorAccess"
        principal, kind = ("operatorGroupId", "Group") if operators else ("principalId", "ServicePrincipal")
        assert rbac.text(props["name"]) == f"guid({scope}.id, {principal}, {role})", assignment.symbol
        assert literal(rbac, path(rbac, assignment.body, "properties", "principalType")) == kind
    operator_roles = literal(rbac, rbac.variables()["operatorRoles"].named_children[-1])
    assert operator_roles == ["storageQueueDataContributor", "storageTableDataContributor"]
    every_bicep = "\n".join(p.read_text() for p in bicep_files())
    for guid, role_name in BROAD_ROLES.items():
        assert guid not in every_bicep, f"{role_name} is broader than entra-sync needs"


@pytest.mark.parametrize("bicep", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_parameter_has_a_description(bicep) -> None:  # type: ignore[no-untyped-def]
    params = load(str(bicep.relative_to(INFRA))).params()
    missing = [name for name, info in params.items() if "description" not in info["decorators"]]
    assert not missing, f"{bicep.name}: parameters without @description: {missing}"


def test_main_is_subscription_scoped_and_outputs_what_azd_needs() -> None:
    main = load("main.bicep")
    assert "targetScope = 'subscription'" in main.source.decode()
    outputs = main.outputs()
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in outputs), list(outputs)
    assert set(outputs) >= {
        "AZURE_LOCATION",
        "AZURE_TENANT_ID",
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_NAME",
        "AZURE_KEY_VAULT_NAME",
        "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID",
        "GRAPH_NOTIFICATION_URL",
        "GRAPH_LIFECYCLE_URL",
    }


def test_parameters_file_matches_main_bicep() -> None:
    params = load("main.bicep").params()
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(values) <= set(params), set(values) - set(params)
    required = {name for name, info in params.items() if info["default"] is None}
    assert required <= set(values), required - set(values)
    for name, entry in values.items():
        # azd substitutes ${VAR} or ${VAR=default} from the environment.
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", entry["value"]), f"{name}: use ${{AZD_ENV_VAR}}"


def test_function_app_is_tagged_for_azd_and_azure_yaml_names_the_service() -> None:
    file, site = resource("Microsoft.Web/sites")
    assert "'azd-service-name': serviceName" in file.text(path(file, site.body, "tags"))
    azure_yaml = (INFRA.parent / "azure.yaml").read_text()
    assert re.search(r"^services:\n  api:\n(    .*\n)*    host: function$", azure_yaml, re.M)
    assert re.search(r"^    language: python$", azure_yaml, re.M)


def test_abbreviations_used_by_main_exist() -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"abbrs\.(\w+)", load("main.bicep").source.decode()))
    assert used <= set(abbreviations), used - set(abbreviations)


def test_azd_falls_back_to_the_bicep_defaults_for_unset_schedules() -> None:
    # azd substitutes an empty string for an unset ${VAR}, which would override the Bicep default
    # and stop the app at start-up: optional settings with defaults carry them in the file too.
    main = load("main.bicep")
    params = main.params()
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name in ("deltaSchedule", "reconcileSchedule", "riskSchedule", "subscriptionsSchedule"):
        default = literal(main, params[name]["default"])
        assert values[name]["value"].endswith(f"={default}}}"), name


ALWAYS_READY_AND_SCALE = (
    "maximumInstanceCount",
    "instanceMemoryMB",
    "httpAlwaysReady",
    "workerAlwaysReady",
    "laneAlwaysReady",
)


def test_webhooks_worker_and_lane_have_always_ready_instances_named_as_flex_names_their_functions() -> None:
    file, site = resource("Microsoft.Web/sites")
    scale = path(file, site.body, "properties", "functionAppConfig", "scaleAndConcurrency")
    ready = {
        literal(file, path(file, e, "name")): file.text(path(file, e, "instanceCount")) for e in _items(file, scale)
    }
    assert ready == {
        "http": "httpAlwaysReady",
        "function:sync_worker": "workerAlwaysReady",
        "function:sync_lane": "laneAlwaysReady",
    }
    # Each names a queue-triggered function the app defines, on the queue shared/names.py names.
    sources = "\n".join(p.read_text() for p in (INFRA.parent / "functions").glob("*.py"))
    for function, queue in (("sync_worker", "WORK_QUEUE"), ("sync_lane", "LANE_QUEUE")):
        block = re.search(rf'function_name\("{function}"\)\n@bp\.queue_trigger\([^)]*queue_name=names\.(\w+)', sources)
        assert block is not None and block.group(1) == queue, function


def test_scale_limit_memory_and_always_ready_are_parameters_with_production_defaults() -> None:
    for module in ("main.bicep", "app/api.bicep"):
        bicep = load(module)
        params = bicep.params()
        defaults = {name: literal(bicep, params[name]["default"]) for name in ALWAYS_READY_AND_SCALE}
        # README, "Performance tuning": one worker instance uses up Auth0's 16 requests/s; one vCPU
        # is what a Python worker process can use; warm webhook and lane instances for the leaver goal.
        assert defaults == {
            "maximumInstanceCount": 10,
            "instanceMemoryMB": 2048,
            "httpAlwaysReady": 1,
            "workerAlwaysReady": 1,
            "laneAlwaysReady": 1,
        }, module
        for name in ("maximumInstanceCount", "httpAlwaysReady", "workerAlwaysReady", "laneAlwaysReady"):
            assert {"minValue", "maxValue"} <= set(params[name]["decorators"]), f"{module}: {name}"
    main = load("main.bicep")
    api_params = properties(main, path(main, _module(main, "api"), "params"))
    for name in ALWAYS_READY_AND_SCALE:
        assert main.text(api_params[name]) == name
    file, site = resource("Microsoft.Web/sites")
    scale = path(file, site.body, "properties", "functionAppConfig", "scaleAndConcurrency")
    assert file.text(path(file, scale, "maximumInstanceCount")) == "maximumInstanceCount"
    assert file.text(path(file, scale, "instanceMemoryMB")) == "instanceMemoryMB"


def _items(file: BicepFile, scale: Any) -> list[Any]:
    array = path(file, scale, "alwaysReady")
    return [item for item in array.named_children if item.type == "object"]


def _module(file: BicepFile, symbol: str) -> Any:
    for node in file.root.named_children:
        if node.type == "module_declaration" and file.text(node.named_children[0]) == symbol:
            return node.named_children[-1]
    raise AssertionError(f"no module {symbol} in {file.path.name}")
