"""The inbound SCIM store's rows in memory (:class:`shared.sources.scim_inbox.rows.Rows`): what the
unit tests, the replay and scim2-tester run use besides Azurite. It keeps the port's promises the
way Table Storage does (a commit is all or nothing; etags change on every write), and passes the
same contract suite (tests/contracts/inbox_store_contract.py)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

from shared.sources.scim_inbox.rows import Conflict, Op, Row
from shared.stores.keys import BATCH_LIMIT


class MemoryRows:
    """One inbound source's rows in a dict. A commit runs without awaiting, so it is atomic
    towards every other coroutine of the loop."""

    PAGE = 3  # small pages, so readers of the port meet paging in the unit tests too

    def __init__(self) -> None:
        self.data: dict[str, tuple[dict[str, Any], str]] = {}
        self._etags = itertools.count(1)
        self.commits = 0

    async def get(self, key: str) -> Row | None:
        found = self.data.get(key)
        return None if found is None else Row(key, dict(found[0]), found[1])

    async def scan(self, prefix: str, *, changed_after: int | None = None) -> AsyncIterator[list[Row]]:
        keys = sorted(
            k
            for k, (data, _) in self.data.items()
            if k.startswith(prefix) and (changed_after is None or int(data.get("changed", 0)) > changed_after)
        )
        for start in range(0, len(keys), self.PAGE):
            page = [
                Row(k, dict(self.data[k][0]), self.data[k][1])
                for k in keys[start : start + self.PAGE]
                if k in self.data
            ]
            if page:
                yield page

    async def commit(self, ops: Sequence[Op]) -> None:
        if len(ops) > BATCH_LIMIT:
            raise ValueError(f"a commit holds at most {BATCH_LIMIT} operations")
        if len({op.key for op in ops}) != len(ops):
            raise ValueError("a commit writes each row once")  # as Table Storage refuses
        for op in ops:
            found = self.data.get(op.key)
            if op.verb == "insert" and found is not None:
                raise Conflict(op.key)
            if op.verb in ("replace", "delete") and (found is None or (op.etag is not None and found[1] != op.etag)):
                raise Conflict(op.key)
        self.commits += 1
        for op in ops:
            if op.verb == "delete":
                del self.data[op.key]
            else:
                self.data[op.key] = (dict(op.data), f'W/"{next(self._etags)}"')
