"""The kinds of source entra-sync can read identities from, by the name a mapping's source gives.

A kind knows its part of the mapping file (its own option keys under ``sources.<name>``), the
paths an attribute's ``source:`` or a scope condition may name when a target it feeds reads them,
how it classifies one of its records (active, disabled, soft-deleted, deleted, out of scope), what
its groups are (how a mapping names one), whether the settings can serve it, and how its
:class:`~shared.core.ports.Source` is built. The mapping loader and the composition root look kinds
up here; tests add their own (an in-memory source) by passing a registry of their own, the way they
add an in-memory target kind (``shared.targets.registry``).

What the mapping and the rest of the pipeline rely on from a kind's Source: ``read(id)`` gives an
:class:`~shared.core.model.Identity` named after the source (``Identity.source`` is the section's
name), whose ``attributes`` hold the paths the kind's :meth:`SourceKind.path_problem` accepts as
:func:`shared.mapping.model.read_path` reads them (dotted, one key per step), and whose ``groups``
hold group ids as :meth:`SourceKind.group_id` gives them from the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from shared.core.model import SourceState
from shared.core.ports import Source
from shared.mapping.model import Scope, SourceSection
from shared.settings import Settings, require

if TYPE_CHECKING:
    from shared.mapping.check import Checker


class SourceKind(Protocol):
    """A kind of source (Entra ID through Graph; the inbound SCIM endpoint's store, ``scim_inbox``)."""

    @property
    def name(self) -> str:
        """What a source's ``kind:`` says (and a source named so without ``kind:``): "entra"."""

    @property
    def title(self) -> str:
        """How people read it in messages: "Entra ID"."""

    @property
    def option_keys(self) -> frozenset[str]:
        """Its own keys in a ``sources.<name>`` section (besides ``kind`` and ``note``)."""

    def options(self, check: Checker, where: str, values: Mapping[str, Any]) -> Any:
        """The kind's own options, checked (problems go to ``check``, naming ``where<key>``)."""

    def path_problem(self, path: str) -> str | None:
        """Why an attribute's ``source:`` or a scope condition cannot read ``path`` from this kind's
        identities, with the nearest known name as a hint ("did you mean 'mail'?"), or None."""

    def group_id(self, check: Checker, where: str, text: str) -> str | None:
        """A group the mapping names (a grant, a scope), as this kind's identities carry group ids
        (Entra: an object id, in lower case), or None with the problem told to ``check``."""

    def classify(
        self, record: Mapping[str, Any] | None, groups: frozenset[str], scope: Scope, *, deleted: bool = False
    ) -> SourceState:
        """Where one of its records stands: None is deleted for good, ``deleted`` a soft-deleted
        (restorable) one; else disabled, out of ``scope``, or active, by the kind's own fields."""

    def settings_problem(self, section: SourceSection, settings: Settings) -> str | None:
        """Why the settings cannot serve the source (a setting it needs is missing), or None."""

    def build(self, section: SourceSection, context: Any) -> Source:
        """The source, from the composition root's context (``shared.bootstrap.BuildContext``): the
        kind builds its own clients through ``context.client(f"source:{section.name}", make)`` and
        reads the file through ``context.mapping.for_source(section.name)`` (only the targets that
        source feeds)."""


def kinds() -> dict[str, SourceKind]:
    from shared.sources.graph.kind import ENTRA
    from shared.sources.scim_inbox.kind import SCIM_INBOX

    return {ENTRA.name: ENTRA, SCIM_INBOX.name: SCIM_INBOX}


KINDS: Mapping[str, SourceKind] = kinds()


def check_settings(
    settings: Settings, sections: Iterable[SourceSection], kinds: Mapping[str, SourceKind] = KINDS
) -> None:
    """Every source the mapping names has the settings its kind needs; all problems at once."""
    require(kinds[s.kind].settings_problem(s, settings) for s in sections if s.kind in kinds)
