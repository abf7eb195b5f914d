"""``check``: the settings, the mapping file, the settings its sources and targets need, and its
Entra groups in Entra ID."""

from __future__ import annotations

import asyncio
import sys

from shared.core.work import DEFAULT_SOURCE
from shared.errors import SyncError
from shared.mapping.load import load_mapping
from shared.mapping.model import MappingError, SyncMapping
from shared.settings import Settings, SettingsError
from shared.sources.graph.client import graph_client
from shared.sources.graph.groups import mapping_group_problems
from shared.sources.graph.source import GraphSource
from shared.sources.registry import check_settings as check_source_settings
from shared.targets.registry import check_settings as check_target_settings


def cmd_check() -> int:
    """The settings, then the mapping file and the settings its sources and targets need, then its
    Entra groups in Entra ID (read through Graph; storage is not needed). Exit 2 when anything is
    wrong, 1 when Graph could not answer, 0 when sound."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(exc)
        print("the mapping file and its groups are checked once the settings are valid")
        return 2
    try:
        mapping = load_mapping(settings.mapping_file)
    except MappingError as exc:
        print("settings: ok so far (the ones the mapping's sources and targets need are checked with it)")
        print(exc)
        return 2
    try:
        check_source_settings(settings, mapping.sources.values())
        check_target_settings(settings, mapping.targets.values())
    except SettingsError as exc:
        print(exc)
        return 2
    print("settings: ok")
    targets = ", ".join(f"{n} ({len(t.attributes)} attributes)" for n, t in mapping.targets.items()) or "none"
    sources = ", ".join(f"{n} ({s.kind})" for n, s in mapping.sources.items())
    print(f"mapping file {mapping.source}: ok (version {mapping.version}; sources: {sources}; targets: {targets})")
    if DEFAULT_SOURCE not in mapping.sources:
        print("groups: no Entra ID source; inbound groups are named by their displayName")
        return 0
    entra = mapping.for_source(DEFAULT_SOURCE)
    try:
        problems = asyncio.run(_mapping_group_problems(settings, entra))
    except SyncError as exc:
        print(f"error: could not read the mapping's groups from Entra ID: {exc}", file=sys.stderr)
        return 1
    if problems:
        print(f"mapping file {mapping.source}: {len(problems)} group problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 2
    groups = len(entra.relevant_groups)
    print(f"groups: {groups} of {groups} found in Entra ID" if groups else "groups: the mapping names none")
    return 0


async def _mapping_group_problems(settings: Settings, mapping: SyncMapping) -> list[str]:
    client = graph_client(settings)
    return await mapping_group_problems(GraphSource(client, mapping), mapping)
