"""Whether the groups a mapping names exist in Entra ID.

Validation can tell that ``roles[2].group`` has the shape of an object id, not that the tenant has
such a group. A group that is not there only shows at run time, as a 404 on its membership (and a
missing scope group would leave nobody in scope), so this reads each mapped group once
(``GET /groups/{id}?$select=id,displayName``) where Graph is reachable at start-up:
``subscriptions_renew`` (run once after every deployment) and ``entra-sync check``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Final

from shared.core.ports import ReadsGroups
from shared.errors import PermanentError
from shared.mapping.model import SyncMapping
from shared.stores.audit import AuditRow, AuditStore

log = logging.getLogger("entra_sync.mapping")

AUDIT_IDENTITY: Final = "mapping"  # the audit partition of findings about the mapping file


async def mapping_group_problems(source: ReadsGroups, mapping: SyncMapping) -> list[str]:
    """One line per mapping entry whose group Entra ID does not have, or will not show us, in file
    order: ``roles[2].group: group <id> does not exist in Entra ID (404); ...``. Empty when every
    group exists. Each group is read once, however many entries name it. Transient errors
    (throttling, 5xx, time-outs) propagate: then the answer is not known."""
    verdicts: dict[str, str] = {}  # group id -> what is wrong with it, "" when it exists
    for _, group_id in mapping.group_entries():
        if group_id in verdicts:
            continue
        try:
            group = await source.read_group(group_id)
        except PermanentError as exc:  # e.g. 403 without Group.Read.All
            verdicts[group_id] = f"group {group_id} could not be read: {exc}"
            continue
        verdicts[group_id] = (
            ""
            if group is not None
            else f"group {group_id} does not exist in Entra ID (404); use the object id of an existing group"
        )
    return [f"{entry}: {verdicts[group]}" for entry, group in mapping.group_entries() if verdicts[group]]


async def report_mapping_group_problems(source: ReadsGroups, mapping: SyncMapping, audit: AuditStore) -> list[str]:
    """:func:`mapping_group_problems`, each logged as an error and audited (partition ``mapping``,
    so ``entra-sync audit --identity mapping`` lists them)."""
    problems = await mapping_group_problems(source, mapping)
    correlation = uuid.uuid4().hex
    for problem in problems:
        log.error("mapping file %s: %s", mapping.source, problem)
        await audit.write(
            AuditRow(correlation, "startup", mapping.source, AUDIT_IDENTITY, "", "", "check_mapping_groups",
                     "failed", detail=problem)
        )  # fmt: skip
    return problems
