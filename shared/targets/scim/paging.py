"""Reading a whole SCIM listing, page by page, and knowing whether it was whole.

Two ways to page exist: by index (RFC 7644 section 3.4.2.4: ``startIndex`` and ``count``, with
``totalResults``) and by cursor (RFC 9865: ``cursor`` empty for the first page, then each answer's
``nextCursor`` until an answer has none; ``totalResults`` is optional). A server says which it
offers in the ``pagination`` block of ``/ServiceProviderConfig``; without that block it pages by
index. :func:`walk` uses cursors where the server offers them: a cursor is the server's own place
in its listing, so users created or deleted meanwhile cannot shift a page.

Reconciliation and a backfill act on what a listing leaves out (an account not listed is
"missing", a user not listed is created again or never adopted), so a listing that went wrong
must not end as if it were complete. :class:`PartialListing` is raised, never a shorter result,
when the server:

* answers a page it answered before (the same resources again, a repeated cursor), or a page that
  overlaps the one before it;
* answers an empty page, or no next cursor, before ``totalResults`` is reached;
* answers, by index, a page shorter than the pages before it before ``totalResults`` is reached
  (the first page may be shorter than asked: that is the server's own page limit, and the next
  index follows what it answered).

What is kept to tell: the resource ids of the page before, and a short digest of every page and
cursor seen (a few bytes per page, not per resource), so the memory a listing takes does not grow
with the number of users.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shared.errors import TransientError

MAX_EMPTY_PAGES: Final = 3  # empty pages in a row, each with a next cursor, before the listing is given up


class PartialListing(TransientError):
    """The server's listing cannot be read whole: the run that needed it fails instead of acting on
    part of it. Transient: a later run may find the server well again."""


@dataclass(frozen=True)
class Page:
    """One answer of a listing: its resources (as dicts with an ``id``), ``totalResults`` and
    ``nextCursor`` where the server gave them."""

    resources: Sequence[dict[str, Any]]
    total: int | None
    next_cursor: str | None = None


#: ``fetch(start_index, cursor, count)``: one page, asked for by index (``cursor`` None) or by cursor.
Fetch = Callable[[int | None, str | None, int], Awaitable[Page]]


def _digest(parts: Sequence[str]) -> bytes:
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).digest()


async def walk(fetch: Fetch, *, count: int, by_cursor: bool, what: str) -> AsyncIterator[Sequence[dict[str, Any]]]:
    """Every page of a listing, in order; :class:`PartialListing` as soon as one shows the listing
    cannot be whole. ``what`` names the listing in the error (``"crm users"``)."""
    pages: set[bytes] = set()
    previous: frozenset[str] = frozenset()
    seen, number = 0, 0

    def check(page: Page, where: str) -> None:
        nonlocal previous
        ids = [str(r.get("id")) for r in page.resources]
        if not ids:
            return
        digest = _digest(ids)
        if digest in pages or previous.intersection(ids):
            raise PartialListing(
                f"{what}: the server answered {where} with users it had listed already (a repeated page); "
                f"{seen} read so far, the listing cannot be trusted whole"
            )
        pages.add(digest)
        previous = frozenset(ids)

    if by_cursor:
        cursor, cursors, empty = "", set[bytes](), 0
        while True:
            number += 1
            page = await fetch(None, cursor, count)
            check(page, f"page {number}")
            yield page.resources
            seen += len(page.resources)
            empty = 0 if page.resources else empty + 1
            if not page.next_cursor:
                break
            key = _digest([page.next_cursor])
            if key in cursors or empty >= MAX_EMPTY_PAGES:
                raise PartialListing(
                    f"{what}: the server's cursors go round (page {number} leads to a cursor already "
                    f"followed, or to {MAX_EMPTY_PAGES} empty pages in a row); {seen} read so far"
                )
            cursors.add(key)
            cursor = page.next_cursor
        if page.total is not None and seen < page.total:
            raise PartialListing(f"{what}: the last page came after {seen} of the {page.total} the server counts")
        return

    start, expected = 1, count
    while True:
        number += 1
        page = await fetch(start, None, count)
        total = page.total  # RFC 7644 requires it; without it the listing ends at a short or empty page
        if not page.resources:
            if total is not None and seen < total:
                raise PartialListing(
                    f"{what}: the server answered an empty page at startIndex {start}, after {seen} of the "
                    f"{total} it counts"
                )
            return
        check(page, f"startIndex {start}")
        yield page.resources
        seen += len(page.resources)
        start += len(page.resources)
        if total is not None and seen >= total:
            return
        if len(page.resources) < expected:
            if total is None:
                return
            if number > 1:
                raise PartialListing(
                    f"{what}: the server answered {len(page.resources)} users at startIndex "
                    f"{start - len(page.resources)} where its pages hold {expected}, after {seen} of the "
                    f"{total} it counts (a short page)"
                )
            expected = len(page.resources)  # the server's own page limit, lower than asked
