"""The Salesforce emulator: :class:`SalesforceEmulator` (REST, SOQL, Collections, Bulk 2.0,
OAuth, limits) and :func:`loopback_session` (how simple-salesforce reaches it)."""

from .emulator import SalesforceEmulator
from .session import loopback_session

__all__ = ["SalesforceEmulator", "loopback_session"]
