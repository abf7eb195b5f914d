"""Where an identity stands: one classification, used by every reader of a source (the worker's
read of one identity, reconciliation's and backfill's read of all of them) and narrowed once more
by each target's own scope."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from shared.core.model import Identity, SourceState
from shared.mapping.model import Scope


def classify(enabled: bool, attributes: Mapping[str, Any], groups: frozenset[str], scope: Scope) -> SourceState:
    """An existing identity: disabled, out of the shared scope, or active."""
    if not enabled:
        return SourceState.DISABLED
    if not scope.includes(attributes, groups):
        return SourceState.OUT_OF_SCOPE
    return SourceState.ACTIVE


def state_of(
    record: Mapping[str, Any] | None, enabled: bool, groups: frozenset[str], scope: Scope, *, deleted: bool
) -> SourceState:
    """A source's record, as a source kind classifies it: None is deleted for good, ``deleted`` a
    soft-deleted (restorable) one, else :func:`classify` with whether the kind's fields say enabled."""
    if record is None:
        return SourceState.HARD_DELETED
    if deleted:
        return SourceState.SOFT_DELETED
    return classify(enabled, record, groups, scope)


def for_target(identity: Identity, scope: Scope | None) -> Identity:
    """The identity as one target sees it: a target's own scope may narrow the shared one."""
    if scope is None or identity.state is not SourceState.ACTIVE:
        return identity
    if scope.includes(identity.attributes, identity.groups):
        return identity
    return dataclasses.replace(identity, state=SourceState.OUT_OF_SCOPE)
