"""Session-wide test fixtures: Azurite on free loopback ports, and sandbox settings.

Azurite runs from the repository's own ``node_modules`` for the whole session and is stopped at the
end. If Node or Azurite is missing the session stops with one message saying how to install it.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.azurite import Azurite, AzuriteUnavailable
from sandbox.event_sink import EventSink
from sandbox.receiver import WebhookReceiver
from tests.support import sandbox_env

# Tests never talk to the internet: make sure no proxy setting sends loopback traffic elsewhere.
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost,::1")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost,::1")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    try:
        emulator = Azurite().start()
    except AzuriteUnavailable as exc:
        pytest.exit(f"Azurite is needed for these tests and could not start:\n{exc}", returncode=3)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A Slack/Teams incoming-webhook stand-in on loopback (for ``NOTIFY_WEBHOOK_URL``)."""
    hook = WebhookReceiver().start()
    try:
        yield hook  # type: ignore[misc]
    finally:
        hook.stop()


@pytest.fixture
def event_sink() -> Iterator[EventSink]:
    """An event feed endpoint on loopback that checks entra-sync's HMAC signature (its default key)."""
    with EventSink() as sink:
        yield sink


@pytest.fixture
def run_id() -> str:
    """A short unique suffix so that tables and queues made by one test never meet another's."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def indexed(azurite: Azurite) -> dict[str, Any]:
    """function_app imported with a sandbox environment and indexed once, as the host does
    (``get_functions()`` may run only once per app object)."""
    env = sandbox_env(storage=azurite.connection_string)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        sys.modules.pop("function_app", None)
        import function_app

        functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    return functions
