"""A target's side of one reconciliation run, held compactly: its accounts and its links.

Reconciliation holds every account of a target while it streams the source, so each account's
cost is the run's cost. A target's account arrives as plain data (Auth0: one parsed JSON object per
user of the export), and parsed JSON is costly to keep: every user's dict has its own copy of
every key and a hash table per nested object. :class:`CompactAccounts` keeps each account's data as
tuples in a shared key order (one key tuple per distinct shape of object), with the short repeated
values (departments, titles, connections) and the entitlement sets shared, and builds a fresh
:class:`~shared.core.model.Account` whenever the matching ladder or the orphan pass asks for one.
An account read back equals the one the target yielded, so the ladder, the planner and the drift
records decide exactly as over the accounts themselves.

:class:`CompactLinks` keeps a link with nothing but its two ids (the common case) as the target id
alone, and rebuilds it on demand; a link with any state of its own is kept whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from shared.core.model import LINK_SCHEMA, Account, Link
from shared.core.ports import Rules

# Strings up to this length are shared when they repeat (a department, a title, a timestamp that many
# accounts carry); longer ones are ids, emails and names, unique per account.
SHARED_STRING_CHARS: Final = 24
# At most this many distinct values are remembered for sharing, so a target whose short values are
# all different costs a bounded table, not one entry per account.
SHARED_VALUES_LIMIT: Final = 50_000


class _Keys(tuple[str, ...]):
    """The keys of one shape of object, in order: held once, shared by every object of that shape.
    A packed object is a tuple whose first item is its ``_Keys``; no value of a target's own data is
    one, so a packed object cannot be mistaken for a tuple in the data."""


_Packed = Any  # a JSON-like value with each mapping as (keys, *values)


class _Sharer:
    """Packs JSON-like values, sharing shapes and short repeated values between accounts."""

    def __init__(self) -> None:
        self._shapes: dict[tuple[str, ...], _Keys] = {}
        self._values: dict[Any, Any] = {}

    def share(self, value: Any) -> Any:
        held = self._values.get(value)
        if held is not None:
            return held
        if len(self._values) < SHARED_VALUES_LIMIT:
            self._values[value] = value
        return value

    def pack(self, value: Any) -> _Packed:
        if isinstance(value, Mapping):
            keys = tuple(value)
            shape = self._shapes.get(keys)
            if shape is None:
                shape = self._shapes[keys] = _Keys(keys)
            return (shape, *(self.pack(v) for v in value.values()))
        if isinstance(value, str):
            return self.share(value) if len(value) <= SHARED_STRING_CHARS else value
        if isinstance(value, list):
            return [self.pack(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.pack(v) for v in value)
        return value


def _unpack(value: _Packed) -> Any:
    if type(value) is tuple:
        if value and type(value[0]) is _Keys:
            return {k: _unpack(v) for k, v in zip(value[0], value[1:], strict=True)}
        return tuple(_unpack(v) for v in value)
    if type(value) is list:
        return [_unpack(v) for v in value]
    return value


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON-like value (values, not keys)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


# One account: (target id, packed data, entitlements, active, owner, packed known values or None).
# The id is kept in the row so that every Account read back carries the one string the target gave
# (a lookup by an equal string, such as a deterministic id, would otherwise keep its own copy alive).
_Row = tuple[str, _Packed, frozenset[str], bool, str | None, _Packed]


class CompactAccounts:
    """Every account of a target, found by id or by any matcher's key (a
    :class:`~shared.core.match.Lookup`, as the live target is for the worker), at a fraction of the
    accounts' own size. Each read builds a new :class:`Account` equal to the one added."""

    def __init__(self, rules: Rules):
        self.rules = rules
        self._rows: dict[str, _Row] = {}
        # Most keys have one account: a plain id then, a tuple only on a collision (no list per key).
        self._keys: dict[str, dict[str, str | tuple[str, ...]]] = {}
        self._sharer = _Sharer()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, account: Account) -> None:
        pack, share = self._sharer.pack, self._sharer.share
        known = None if account.known is None else pack(account.known)
        self._rows[account.target_id] = (
            account.target_id, pack(account.data), share(account.entitlements), account.active, account.owner, known
        )  # fmt: skip
        # A key equal to one of the account's own strings (an email already in lower case) is held
        # as that string, not as a second copy.
        own = {v: v for v in _strings(account.data)}
        for matcher, keys in self.rules.keys_of(account).items():
            index = self._keys.setdefault(matcher, {})
            for found in keys:
                key = own.get(found, found)
                held = index.get(key)
                if held is None:
                    index[key] = account.target_id
                elif isinstance(held, str):
                    if held != account.target_id:
                        index[key] = (held, account.target_id)
                elif account.target_id not in held:
                    index[key] = (*held, account.target_id)

    def _account(self, row: _Row) -> Account:
        target_id, data, entitlements, active, owner, known = row
        return Account(
            target_id,
            data=_unpack(data),
            entitlements=entitlements,
            active=active,
            owner=owner,
            known=None if known is None else _unpack(known),
        )

    def ids(self) -> Iterator[str]:
        return iter(self._rows)

    def get(self, target_id: str) -> Account | None:
        row = self._rows.get(target_id)
        return None if row is None else self._account(row)

    async def read(self, target_id: str, *, entitlements: bool = True) -> Account | None:
        return self.get(target_id)

    async def find(self, matcher: str, key: str) -> list[Account]:
        held = self._keys.get(matcher, {}).get(key)
        ids = () if held is None else (held,) if isinstance(held, str) else held
        return [self._account(self._rows[i]) for i in ids]


class CompactLinks:
    """One target's links by source id, a plain link (nothing but its ids) held as its target id.
    What reconciliation needs of a link; the remembered writes (``applied``) are not read at all."""

    def __init__(self) -> None:
        self._links: dict[str, str | Link] = {}  # in the order read, as the store lists them
        self._names: tuple[str, str] | None = None  # (target, source) of the plain links

    def __len__(self) -> int:
        return len(self._links)

    def add(self, link: Link) -> None:
        names = self._names or (link.target, link.source)
        self._names = names
        plain = link == self._plain_link(link.source_id, link.target_id, names)
        self._links[link.source_id] = link.target_id if plain else link

    @staticmethod
    def _plain_link(source_id: str, target_id: str, names: tuple[str, str]) -> Link:
        return Link(source_id, target_id, target=names[0], source=names[1], schema_version=LINK_SCHEMA)

    def get(self, source_id: str) -> Link | None:
        held = self._links.get(source_id)
        if isinstance(held, str) and self._names is not None:
            return self._plain_link(source_id, held, self._names)
        return held if isinstance(held, Link) else None

    def holders(self, target_ids: set[str]) -> dict[str, str]:
        """Target id -> the source id whose link (not marked deleted in the target) names it, for
        the given accounts only: memory in their number, not the links'. Where several links name
        one account, the last listed wins."""
        found: dict[str, str] = {}
        for source_id, held in self._links.items():
            target_id = held if isinstance(held, str) else None if held.target_deleted else held.target_id
            if target_id is not None and target_id in target_ids:
                found[target_id] = source_id
        return found
