"""Names of the storage resources entra-sync uses: one place, so code, tests and Bicep agree.

Queue names: 3-63 lower-case letters, digits and single hyphens. Table names: 3-63 letters and
digits, starting with a letter. The Functions host adds ``-poison`` to a queue's name for messages
that failed ``maxDequeueCount`` times.
"""

from typing import Final

WORK_QUEUE: Final = "sync-work"  # bulk: backfill, reconciliation repairs, delta passes
WORK_POISON_QUEUE: Final = f"{WORK_QUEUE}-poison"
# The lane: what a person is waiting for (notifications, leavers, risk responses, lifecycle work),
# drained by its own function so bulk work never sits in front of it.
LANE_QUEUE: Final = "sync-lane"
LANE_POISON_QUEUE: Final = f"{LANE_QUEUE}-poison"

LOCKS_TABLE: Final = "SyncLocks"  # leases per identity, insert-only / ETag-guarded
LINKS_TABLE: Final = "SyncLinks"  # Entra object id <-> target account id
STATE_TABLE: Final = "SyncState"  # subscriptions, delta links, watermarks
AUDIT_TABLE: Final = "SyncAudit"  # one row per decision and action

REPORTS_CONTAINER: Final = "sync-reports"  # blob container: runs/<run id>/report.{json,csv,html}

QUEUES: Final = (WORK_QUEUE, WORK_POISON_QUEUE, LANE_QUEUE, LANE_POISON_QUEUE)
TABLES: Final = (LOCKS_TABLE, LINKS_TABLE, STATE_TABLE, AUDIT_TABLE)
