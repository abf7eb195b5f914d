"""Microsoft Graph v1.0 emulator for the entra-sync sandbox."""

from sandbox.graph.emulator import DEFAULT_TENANT_ID, SUBSCRIPTION_MAX_MINUTES, GraphEmulator, Subscription

__all__ = ["DEFAULT_TENANT_ID", "SUBSCRIPTION_MAX_MINUTES", "GraphEmulator", "Subscription"]
