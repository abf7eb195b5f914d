"""Entra ID through Microsoft Graph as a kind of source: its part of the mapping file (the Graph
v1.0 user properties a mapping may read, group object ids), how it classifies a user, its source.

The ``entra`` source is the tenant's: its change notifications, delta cursors and risk feed are
kept under the tenant's names, so a mapping has at most one, and it is named ``entra``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from shared.core.classify import state_of
from shared.core.model import SourceState
from shared.core.ports import Source
from shared.core.work import DEFAULT_SOURCE
from shared.mapping.model import Scope, SourceSection
from shared.settings import Settings
from shared.sources.graph.schema import enabled, user_path_problem

if TYPE_CHECKING:
    from shared.mapping.check import Checker

_PROPERTY: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_OBJECT_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


class EntraKind:
    name = DEFAULT_SOURCE
    title = "Entra ID"
    option_keys: frozenset[str] = frozenset()  # its settings are the app's GRAPH_* settings

    def options(self, check: Checker, where: str, values: Mapping[str, Any]) -> Any:
        return None

    def path_problem(self, path: str) -> str | None:
        if not all(_PROPERTY.fullmatch(part) for part in path.split(".")):
            return f"{path!r} is not a Graph property path such as 'department' or 'manager.id'"
        return user_path_problem(path)

    def group_id(self, check: Checker, where: str, text: str) -> str | None:
        """A group's object id, in lower case as Graph writes ids (group ids are compared exactly)."""
        if not _OBJECT_ID.fullmatch(text):
            check.fail(
                where,
                f"{text!r} is not a group object id: use the group's object id (a GUID, shown as Object ID "
                "on the group's overview in the Entra admin center), not its name",
            )
            return None
        return text.lower()

    def classify(
        self, record: Mapping[str, Any] | None, groups: frozenset[str], scope: Scope, *, deleted: bool = False
    ) -> SourceState:
        # Soft-deleted: in deleted items, restorable for 30 days.
        return state_of(record, record is not None and enabled(record), groups, scope, deleted=deleted)

    def settings_problem(self, section: SourceSection, settings: Settings) -> str | None:
        """Its change notifications need their URLs and shared secret (read and checked with the
        app's other settings, required only when the mapping reads Entra ID)."""
        missing = [
            f"{name} is required: {why}"
            for name, value, why in (
                ("GRAPH_CLIENT_STATE", settings.graph_client_state, "the secret Graph echoes in every notification"),
                ("GRAPH_NOTIFICATION_URL", settings.graph_notification_url, "where Graph sends change notifications"),
                ("GRAPH_LIFECYCLE_URL", settings.graph_lifecycle_url, "where Graph sends lifecycle notifications"),
            )
            if value is None
        ]  # fmt: skip
        return "; ".join(missing) or None

    def build(self, section: SourceSection, context: Any) -> Source:
        from shared.sources.graph.client import graph_client
        from shared.sources.graph.source import GraphSource

        client = context.client(f"source:{section.name}", lambda: graph_client(context.settings))
        return GraphSource(client, context.mapping.for_source(section.name))


ENTRA: Final = EntraKind()
