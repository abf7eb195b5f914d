"""Logging with a correlation id that runs from the Graph notification to the audit row.

The webhook gives every work item a correlation id; the worker writes it to each audit row and to
each log line, as a ``cid=<id>`` prefix (searchable in Application Insights traces, which is where
the Functions host sends Python log records) and as the ``correlation_id`` attribute (a custom
dimension where an OpenTelemetry exporter is configured).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class Correlated(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        cid = (self.extra or {}).get("correlation_id", "-")
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return f"cid={cid} {msg}", kwargs


def correlated(logger: logging.Logger, correlation_id: str) -> Correlated:
    return Correlated(logger, {"correlation_id": correlation_id})
