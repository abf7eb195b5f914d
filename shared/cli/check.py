"""``check``: the settings, the mapping file, the settings its sources and targets need, and its
Entra groups in Entra ID."""

from __future__ import annotations

import asyncio
import sys

from shared import bootstrap
from shared.core.ports import ChecksLive
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
    Entra groups in Entra ID (read through Graph; storage is not needed), then each target asked
    whether what the section names exists there (roles, connections, credentials). Exit 2 when
    anything is wrong, 1 when Graph or a target could not answer, 0 when sound."""
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
    groups = _check_groups(settings, mapping)
    if groups != 0:
        return groups
    return asyncio.run(_check_targets(settings, mapping))


def _check_groups(settings: Settings, mapping: SyncMapping) -> int:
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


async def _check_targets(settings: Settings, mapping: SyncMapping) -> int:
    """Each target asked whether its section can work against it now (the ones that can say):
    what ran, then what is wrong. Exit 2 for a problem, 1 for a target that could not be asked."""
    app = bootstrap.build(settings, mapping)
    worst = 0
    try:
        for name, job in app.jobs.items():
            if not isinstance(job.target, ChecksLive):
                print(f"{name}: no live check for this kind")
                continue
            try:
                ran, problems = await job.target.live_check()
            except SyncError as exc:
                print(f"error: could not check {name}: {exc}", file=sys.stderr)
                worst = max(worst, 1)
                continue
            for line in ran:
                print(f"{name}: {line}")
            for problem in problems:
                print(f"  - {problem}")
            worst = max(worst, 2 if problems else 0)
    finally:
        await app.aclose()
    return worst


async def _mapping_group_problems(settings: Settings, mapping: SyncMapping) -> list[str]:
    client = graph_client(settings)
    return await mapping_group_problems(GraphSource(client, mapping), mapping)
