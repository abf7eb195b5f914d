"""The kinds of target entra-sync can provision, by the name a mapping's target starts with.

A kind knows its part of the mapping file (which target paths it can write, its matchers, the
word it uses for entitlements, its own options), its pure rules, and how to build its adapter
from the settings. The mapping loader and the composition root look kinds up here; tests add
their own (the in-memory target) by passing a registry of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from shared.core.ports import Capabilities, Rules, Target
from shared.mapping.model import Grant, TargetSection
from shared.settings import Settings, require

if TYPE_CHECKING:
    from shared.mapping.check import Checker


class TargetKind(Protocol):
    @property
    def name(self) -> str:
        """What a target's name starts with: "auth0", "scim"."""

    @property
    def title(self) -> str:
        """How people read its name in reports and messages: "Auth0", "SCIM"."""

    @property
    def matchers(self) -> tuple[str, ...]:
        """The matchers it offers after the link."""

    @property
    def grants_key(self) -> str:
        """What the mapping calls its grants: "roles", "groups"."""

    @property
    def grant_noun(self) -> str:
        """One of them, in a message: "Auth0 role"."""

    @property
    def grant_conditions(self) -> Mapping[str, str]:
        """Keys a grant entry may add to its group to narrow it (``department``), each with the
        source path it compares; empty where grants are by group alone."""

    @property
    def disable_words(self) -> tuple[str, ...]:
        """Its word for disabling an account first ("block"); "disable" is understood too."""

    @property
    def option_keys(self) -> frozenset[str]:
        """Its own keys in a version 2 section."""

    @property
    def matching_keys(self) -> frozenset[str]:
        """Its own keys in the section's matching."""

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def deprovision_defaults(self) -> tuple[str, str]:
        """("disable" or "delete") for a leaver and for an identity deleted for good, unless the section says."""

    def check_grants(self, check: Checker, where: str, grants: Sequence[Grant]) -> None:
        """Rules of its own for the section's grants (problems go to ``check``, naming the entry)."""

    def path_problem(self, path: str) -> str | None:
        """Why an attribute's target path cannot be written, or None."""

    def options(
        self, check: Checker, where: str, values: Mapping[str, Any], matching: Mapping[str, Any], matching_where: str
    ) -> Any:
        """The kind's own options, checked (problems go to ``check``)."""

    def default_matching(self, options: Any) -> tuple[str, ...]: ...

    def matching_problem(self, options: Any, precedence: Sequence[str]) -> tuple[str, str] | None:
        """(entry under ``matching.``, message) when the precedence needs an option that is missing."""

    def rules(self, section: TargetSection) -> Rules: ...

    def settings_problem(self, section: TargetSection, settings: Settings) -> str | None:
        """Why the settings cannot serve the section (a setting it needs is missing), or None."""

    def build(self, section: TargetSection, context: Any) -> Target:
        """The adapter, from the composition root's context (``shared.bootstrap.BuildContext``): the
        kind builds its own clients from the section and the settings, through ``context.client``."""


def kinds() -> dict[str, TargetKind]:
    from shared.targets.auth0.kind import AUTH0
    from shared.targets.salesforce.kind import SALESFORCE
    from shared.targets.scim.kind import SCIM

    return {AUTH0.name: AUTH0, SCIM.name: SCIM, SALESFORCE.name: SALESFORCE}


KINDS: Mapping[str, TargetKind] = kinds()


def check_settings(
    settings: Settings, sections: Iterable[TargetSection], kinds: Mapping[str, TargetKind] = KINDS
) -> None:
    """Every target the mapping names has the settings its kind needs; all problems at once."""
    require(kinds[s.kind].settings_problem(s, settings) for s in sections if s.kind in kinds)


def target_title(target: str, kinds: Mapping[str, TargetKind] = KINDS) -> str:
    """How reports name a target, in its kind's words: ``auth0`` -> Auth0, ``scim:hr-app`` -> SCIM
    hr-app (a kind not in ``kinds`` goes by its name)."""
    kind_name, _, name = target.partition(":")
    kind = kinds.get(kind_name)
    base = kind.title if kind is not None else kind_name
    return f"{base} {name}" if name else base
