"""One ``sync_worker`` invocation in a process of its own, configured from the environment like the
Functions host's worker: the process that the crash tests kill half-way.

    python -m tests.integration.crash_child '<work item JSON>' [<marker file>]

With a marker file, the process stops just before the audit rows are settled (every target write
and link write done, nothing recorded): it creates the file and waits there to be killed, so the
test can kill it at that point exactly rather than race it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from azure.functions.queue import QueueMessage

PAUSE_S = 60.0  # longer than any test waits for the marker: the process is killed before it ends


def pause_before_settling(marker: Path) -> None:
    from shared.stores.audit import AuditStore

    async def paused(self: AuditStore, *args: Any, **kwargs: Any) -> None:
        marker.touch()
        await asyncio.sleep(PAUSE_S)
        raise SystemExit("not killed while paused before settling")

    AuditStore.settle = paused  # type: ignore[method-assign]


def main() -> None:
    if len(sys.argv) > 2:
        pause_before_settling(Path(sys.argv[2]))
    import function_app  # reads the settings from the environment, as in Azure

    worker = {f.get_function_name(): f for f in function_app.app.get_functions()}["sync_worker"]
    asyncio.run(worker.get_user_function()(QueueMessage(id="crash-1", body=sys.argv[1].encode(), dequeue_count=1)))


if __name__ == "__main__":
    main()
