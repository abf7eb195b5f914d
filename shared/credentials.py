"""The Azure credential for Graph and Storage when no secret or connection string is configured.

In Azure (the Functions host sets ``WEBSITE_INSTANCE_ID``) it is the app's managed identity,
``ManagedIdentityCredential``: one token source, no probing, and no way for a developer credential
on the image to stand in for the identity the Bicep grants roles to. Anywhere else (the
``entra-sync`` CLI on an operator's laptop, a CI job) it is ``DefaultAzureCredential``: the
environment's service principal, workload identity, a managed identity where there is one, then
the operator's ``az login`` / ``azd auth login`` / PowerShell sign-in, so the CLI runs with the
operator's own roles (README, "Operate from a laptop"); the interactive browser is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

# Set by App Service and Functions on every instance in Azure, never by `func start`.
HOSTED_MARKER: Final = "WEBSITE_INSTANCE_ID"


def hosted(env: Mapping[str, str]) -> bool:
    """Whether this process runs in Azure's Functions host (and should use only its identity)."""
    return bool(env.get(HOSTED_MARKER, "").strip())


def azure_credential(client_id: str | None, env: Mapping[str, str]) -> Any:
    """The credential: the user-assigned identity ``client_id`` (or the system-assigned one) in Azure;
    elsewhere the default chain, trying that identity where a managed identity is found."""
    if hosted(env):
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id, exclude_interactive_browser_credential=True)
