"""Which Entra credential the storage and Graph clients use: the app's managed identity alone in
Azure's Functions host, the default chain (the operator's az login first, where nothing else is
configured) for the CLI anywhere else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from shared.credentials import HOSTED_MARKER, azure_credential
from shared.settings import Settings
from shared.sources.graph.client import RedactedTokens, graph_credential
from shared.stores.clients import queue_service, table_service

CLIENT_ID = "00000000-0000-4000-8000-0000000000c1"


def identity_settings(**extra: str) -> Settings:
    """Settings as the Bicep sets them (identity-based storage, Graph through the identity)."""
    env = {
        "AzureWebJobsStorage__accountName": "stexample",
        "AzureWebJobsStorage__clientId": CLIENT_ID,
        "AZURE_CLIENT_ID": CLIENT_ID,
        "DELTA_SCHEDULE": "0 */5 * * * *",
        "RECONCILE_SCHEDULE": "0 0 2 * * *",
        "RISK_SCHEDULE": "0 * * * * *",
        "SUBSCRIPTIONS_SCHEDULE": "0 0 */6 * * *",
        "SYNC_MAPPING_FILE": "mapping.example.yaml",
        **extra,
    }
    return Settings.from_env(env)


def credentials_of(settings: Settings) -> list[Any]:
    async def build() -> list[Any]:
        tables, queues = table_service(settings), queue_service(settings)
        found = [tables.credential, queues.credential]
        graph = graph_credential(settings)
        assert isinstance(graph, RedactedTokens)
        found.append(graph._credential)
        for credential in found:
            await credential.close()
        await tables.close()
        await queues.close()
        return found

    return asyncio.run(build())


def test_in_azure_every_client_uses_the_managed_identity_alone() -> None:
    found = credentials_of(identity_settings(**{HOSTED_MARKER: "abc123"}))
    assert all(type(c) is ManagedIdentityCredential for c in found), found


def test_elsewhere_the_cli_uses_the_default_chain() -> None:
    found = credentials_of(identity_settings())
    assert all(type(c) is DefaultAzureCredential for c in found), found


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({HOSTED_MARKER: "x"}, ManagedIdentityCredential),
        ({}, DefaultAzureCredential),
        ({HOSTED_MARKER: " "}, DefaultAzureCredential),
    ],
)
def test_the_marker_decides(env: dict[str, str], kind: type) -> None:
    credential = azure_credential(CLIENT_ID, env)
    assert type(credential) is kind
    asyncio.run(credential.close())
