"""One ``sync_worker`` invocation in a process of its own, configured from the environment like the
Functions host's worker: the process that the crash tests kill half-way.

    python -m tests.integration.crash_child '<work item JSON>'
"""

from __future__ import annotations

import asyncio
import sys

from azure.functions.queue import QueueMessage


def main() -> None:
    import function_app  # reads the settings from the environment, as in Azure

    worker = {f.get_function_name(): f for f in function_app.app.get_functions()}["sync_worker"]
    asyncio.run(worker.get_user_function()(QueueMessage(id="crash-1", body=sys.argv[1].encode(), dequeue_count=1)))


if __name__ == "__main__":
    main()
