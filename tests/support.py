"""Helpers the tests share (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_MAPPING = REPO / "mapping.example.yaml"

CLIENT_STATE = "sandbox-client-state-0123456789"


def sandbox_env(
    *,
    storage: str,
    graph_base_url: str = "http://127.0.0.1:9/v1.0",
    auth0_base_url: str = "http://127.0.0.1:9/api/v2",
    graph_token: str = "sandbox-graph-token",
    auth0_token: str = "sandbox-auth0-token",
    **extra: str,
) -> dict[str, str]:
    """A complete, valid settings environment for the sandbox (defaults point at closed ports)."""
    env = {
        "GRAPH_BASE_URL": graph_base_url,
        "GRAPH_TOKEN": graph_token,
        "GRAPH_CLIENT_STATE": CLIENT_STATE,
        "GRAPH_NOTIFICATION_URL": "http://127.0.0.1:7071/api/graph_webhook",
        "GRAPH_LIFECYCLE_URL": "http://127.0.0.1:7071/api/graph_lifecycle",
        "AUTH0_BASE_URL": auth0_base_url,
        "AUTH0_TOKEN": auth0_token,
        "AzureWebJobsStorage": storage,
        "DELTA_SCHEDULE": "0 */5 * * * *",
        "RECONCILE_SCHEDULE": "0 0 2 * * *",
        "RISK_SCHEDULE": "0 * * * * *",
        "SUBSCRIPTIONS_SCHEDULE": "0 0 */6 * * *",
        "SYNC_MAPPING_FILE": str(EXAMPLE_MAPPING),
    }
    env.update(extra)
    return env
