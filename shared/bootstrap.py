"""The composition root: settings in, ready services out.

``function_app.py`` calls :func:`init` once at start-up (a settings problem stops the app there,
naming the setting). Functions reach their collaborators through :func:`services`, which builds
each SDK client on first use and keeps it for the life of the worker process. Tests call
:func:`init` with their own settings (sandbox URLs, Azurite) and may pass overrides.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from shared import clients
from shared.settings import Settings


@dataclass
class Services:
    settings: Settings
    overrides: dict[str, Any] = field(default_factory=dict)
    _built: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _get(self, name: str, factory: Any) -> Any:
        if name in self.overrides:
            return self.overrides[name]
        with self._lock:
            if name not in self._built:
                self._built[name] = factory(self.settings)
            return self._built[name]

    async def aclose(self) -> None:
        """Close the clients this object built (not overrides, which belong to the caller)."""
        with self._lock:
            built, self._built = self._built, {}
        for client in built.values():
            close = getattr(client, "close", None)
            if close is not None:
                result = close()
                if hasattr(result, "__await__"):
                    await result

    @property
    def graph(self) -> Any:
        return self._get("graph", clients.graph_client)

    @property
    def auth0(self) -> Any:
        return self._get("auth0", clients.auth0_client)

    @property
    def tables(self) -> Any:
        return self._get("tables", clients.table_service)

    @property
    def queues(self) -> Any:
        return self._get("queues", clients.queue_service)


_current: Services | None = None
_init_lock = threading.Lock()


def init(settings: Settings | None = None, **overrides: Any) -> Services:
    """Read settings (from the environment unless given) and make them the process's services."""
    global _current
    with _init_lock:
        _current = Services(settings if settings is not None else Settings.from_env(), dict(overrides))
        return _current


def services() -> Services:
    with _init_lock:
        current = _current
    return current if current is not None else init()
