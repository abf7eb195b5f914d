"""The matching ladder, written once: which account in a target belongs to an identity.

The link first, then the id a create would have given (where the target lets the caller choose
it), then the target section's matchers in their order, first hit wins (every key asked in one
request where the target can: :class:`~shared.core.ports.FindsAtOnce`). Several candidates are
*ambiguous* and an account that carries another identity's id is a *conflict*: both are reported
and left alone, never guessed at.

The ladder asks a :class:`Lookup`: the live target in the worker (immediately consistent reads),
or an index of every account in reconciliation, so both decide alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.core import plan as planner
from shared.core.classify import for_target
from shared.core.model import Account, Identity, Link, Plan, SourceState
from shared.core.ports import FindsAtOnce, Rules, Target
from shared.mapping.model import TargetSection

LINK = "link"  # always first; in the precedence list for readability only


class Lookup(Protocol):
    async def read(self, target_id: str, *, entitlements: bool = True) -> Account | None: ...

    async def find(self, matcher: str, key: str) -> list[Account]: ...


@dataclass(frozen=True)
class Resolution:
    account: Account | None
    matched_by: str = ""
    problem: str = ""  # "ambiguous" or "conflict"
    candidates: tuple[str, ...] = ()

    def explain(self) -> str:
        """The operator's reading of a problem."""
        if self.problem == "ambiguous":
            return f"{self.matched_by} matched several accounts ({', '.join(self.candidates)}); not guessing"
        return (
            f"{self.matched_by} matched {', '.join(self.candidates)}, which belongs to another identity; "
            "not taking it over"
        )


def judge(candidates: Sequence[Account], source_id: str) -> tuple[str, Account | None]:
    """One candidate that is not another identity's account is a match; several are ambiguous;
    one that carries another identity's id is a conflict."""
    unique = {a.target_id: a for a in candidates}
    if not unique:
        return "none", None
    if len(unique) > 1:
        return "ambiguous", None
    account = next(iter(unique.values()))
    if account.owner is not None and account.owner != source_id:
        return "conflict", account
    return "found", account


async def resolve(
    identity: Identity,
    link: Link | None,
    lookup: Lookup,
    rules: Rules,
    precedence: Sequence[str],
    desired: Mapping[str, Any],
    *,
    entitlements: bool,
) -> Resolution:
    """Find the identity's account (see the module docs). ``entitlements``: read what it holds."""
    if link is not None and not link.target_deleted:
        account = await lookup.read(link.target_id, entitlements=entitlements)
        if account is not None:
            return Resolution(account, LINK)
    chosen = rules.deterministic_id(identity)
    if chosen is not None:
        account = await lookup.read(chosen, entitlements=entitlements)
        if account is not None:
            return Resolution(account, "deterministic_id")
    keys = [(m, k) for m in precedence if m != LINK for k in [rules.match_key(m, identity, desired)] if k is not None]
    # One request for every key where the lookup can (a joiner's usual path: no key finds anything).
    at_once = await lookup.find_each(keys) if len(keys) > 1 and isinstance(lookup, FindsAtOnce) else None
    for n, (matcher, key) in enumerate(keys):
        found = at_once[n] if at_once is not None else await lookup.find(matcher, key)
        outcome, account = judge(found, identity.id)
        if outcome == "none":
            continue
        if outcome != "found":
            return Resolution(None, matcher, outcome, tuple(sorted({a.target_id for a in found})))
        assert account is not None
        # A search result may be stale or partial: read the account itself, as the link would.
        account = await lookup.read(account.target_id, entitlements=entitlements) or account
        return Resolution(account, matcher)
    return Resolution(None)


@dataclass(frozen=True)
class Planned:
    """What the worker would decide for one identity in one target: the identity as that target
    sees it (its scope), the account the ladder found (or the problem), the mapped values it wants,
    and the plan (empty where the match is a problem: nothing is planned on a guess)."""

    identity: Identity
    found: Resolution
    desired: Mapping[str, Any]
    plan: Plan


async def planned(
    source: Identity,
    link: Link | None,
    lookup: Lookup,
    section: TargetSection,
    target: Target,
    *,
    entitlements: bool | None = None,
) -> Planned:
    """Narrow, match and plan as the worker does, against ``lookup`` (the target itself, or an index
    of its accounts); reads only, writes nothing. For reconciliation, previews and ``sync-one``.
    ``entitlements``: read what the account holds (None: as the worker, for an active identity only,
    a leaver's being left as they are)."""
    identity = for_target(source, section.scope)
    rules = target.rules
    desired = rules.desired(identity)
    holds = identity.state is SourceState.ACTIVE if entitlements is None else entitlements
    found = await resolve(identity, link, lookup, rules, section.matching, desired, entitlements=holds)
    plan = (
        Plan(())
        if found.problem
        else planner.plan(identity, found.account, link, section, rules, target.capabilities, desired=desired)
    )
    return Planned(identity, found, desired, plan)


class AccountIndex:
    """Every account of a target, found by id or by any matcher's key: the reconciliation's stand-in
    for the live target in the matching ladder (the same :class:`~shared.core.match.Lookup`)."""

    def __init__(self, rules: Rules):
        self.rules = rules
        self.accounts: dict[str, Account] = {}
        # Most keys have one account: a plain id then, a tuple only on a collision (saves a list per key).
        self._keys: dict[str, dict[str, str | tuple[str, ...]]] = {}

    def add(self, account: Account) -> None:
        self.accounts[account.target_id] = account
        for matcher, keys in self.rules.keys_of(account).items():
            index = self._keys.setdefault(matcher, {})
            for key in keys:
                held = index.get(key)
                if held is None:
                    index[key] = account.target_id
                elif isinstance(held, str):
                    index[key] = (held, account.target_id)
                else:
                    index[key] = (*held, account.target_id)

    async def read(self, target_id: str, *, entitlements: bool = True) -> Account | None:
        return self.accounts.get(target_id)

    async def find(self, matcher: str, key: str) -> list[Account]:
        held = self._keys.get(matcher, {}).get(key)
        ids = () if held is None else (held,) if isinstance(held, str) else held
        return [self.accounts[i] for i in ids]
