"""The ports the services work through (``typing.Protocol``), and what they share."""

from __future__ import annotations

from collections.abc import Callable

Fence = Callable[[], None]  # raises LeaseLost when the caller may no longer write
