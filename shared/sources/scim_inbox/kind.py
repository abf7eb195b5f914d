"""The inbound SCIM endpoint as a kind of source: a mapping names it under ``sources:`` with
``kind: scim_inbox``, Entra provisioning (or any SCIM client) pushes to its Tenant URL, and its
store is the source the worker reads.

Its part of the mapping file: the SCIM core and enterprise user paths an attribute may read
(:data:`.schema.PATHS`), groups named by their displayName (the store issues the ids, so a mapping
cannot know them ahead), and one option, ``token_setting``: the setting holding its bearer token
(default ``SCIM_INBOX_<NAME>_TOKEN``, see :func:`.factory.token_setting`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from shared.core.classify import state_of
from shared.core.model import SourceState
from shared.core.ports import Source
from shared.mapping.check import nearest
from shared.mapping.model import Scope, SourceSection
from shared.settings import Settings, SettingsError
from shared.sources.scim_inbox.schema import PATHS

if TYPE_CHECKING:
    from shared.mapping.check import Checker

MAX_GROUP_NAME: Final = 256


class ScimInboxKind:
    name = "scim_inbox"
    title = "Inbound SCIM"
    option_keys: frozenset[str] = frozenset({"token_setting"})

    def options(self, check: Checker, where: str, values: Mapping[str, Any]) -> Any:
        setting = values.get("token_setting")
        if setting is None:
            return None
        if not isinstance(setting, str) or not setting.replace("_", "").isalnum() or not setting.isupper():
            check.fail(f"{where}token_setting", "must be the name of a setting, such as SCIM_INBOX_HR_PUSH_TOKEN")
            return None
        return {"token_setting": setting}

    def path_problem(self, path: str) -> str | None:
        if path in PATHS:
            return None
        hint = nearest(path, sorted(PATHS))
        guess = f" (did you mean {hint!r}?)" if hint else ""
        return f"{path!r} is not a SCIM user attribute an inbound source keeps{guess}"

    def group_id(self, check: Checker, where: str, text: str) -> str | None:
        """A group by its displayName, exactly as Entra pushes it (the store's ids are its own)."""
        if not text.strip() or len(text) > MAX_GROUP_NAME:
            check.fail(where, f"an inbound group is named by its displayName (1 to {MAX_GROUP_NAME} characters)")
            return None
        return text

    def classify(
        self, record: Mapping[str, Any] | None, groups: frozenset[str], scope: Scope, *, deleted: bool = False
    ) -> SourceState:
        enabled = record is not None and record.get("active") is not False
        return state_of(record, enabled, groups, scope, deleted=deleted)

    def token_setting(self, section: SourceSection) -> str:
        from shared.sources.scim_inbox.factory import token_setting

        return (section.options or {}).get("token_setting") or token_setting(section.name)

    def settings_problem(self, section: SourceSection, settings: Settings) -> str | None:
        from shared.sources.scim_inbox.factory import read_tokens

        try:
            read_tokens(settings.env, {section.name: self.token_setting(section)})
        except SettingsError as exc:
            return "; ".join(exc.problems)
        return None

    def build(self, section: SourceSection, context: Any) -> Source:
        from shared.sources.scim_inbox.factory import inbound_source, read_tokens

        token = read_tokens(context.settings.env, {section.name: self.token_setting(section)})[section.name]
        return inbound_source(section.name, token, context)


SCIM_INBOX: Final = ScimInboxKind()
