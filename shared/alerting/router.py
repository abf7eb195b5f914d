"""Routing: which channels an alert goes to, once each, within each route's rate limit.

* **Routes.** The ``alerts:`` routes that take the alert's kind at its severity; where none does
  and ``NOTIFY_WEBHOOK_URL`` is set, the implicit default route to that webhook (plain text, as
  before channels existed) takes it. A file without ``alerts:`` has only that route.
* **Once per channel.** Each (channel, alert key) goes through the
  :class:`~shared.services.notify.Notifier`'s claim, so a retried function does not repeat it and a
  channel that failed is sent by the next attempt while the others are not sent again. The default
  route keeps the claim key it always had (``alert:<key>``, a risk incident's own key).
* **Rate limit and digest.** A route sends at most ``digest.burst`` alerts one by one in a window
  of ``digest.window_minutes``; the rest of that window is *admitted to its digest* (one row per
  alert key in Table Storage) and sent as one message when the window has ended (:meth:`flush`,
  which every delivery and the ``alerts_outbox`` timer run), through the same claim. A storm of a
  thousand alerts is ``burst`` messages and one digest per channel. An attempt that is retried after
  its window ended may be decided again: it is then sent, or mentioned in the next digest, never
  lost. A window's rows are dropped ``KEEP_WINDOWS`` windows after it ended, once it owes no digest.
  Without an ``alerts:`` section there is no rate limit (the default route behaves as before).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.alerting.alert import Alert, linked
from shared.alerting.channels import LEGACY, Sender
from shared.alerting.config import EVENT_KINDS, SEVERITIES, AlertsConfig, Digest, Route
from shared.clock import SYSTEM, Clock
from shared.errors import TransientError
from shared.services.notify import Delivery, Notifier
from shared.stores.keys import encode_key, replace_if_unchanged

log = logging.getLogger("entra_sync.alerts")

WINDOWS: Final = "alerts-window"  # one row per (route, window): how many alerts it admitted
DIGEST_ITEMS: Final = "alerts-digest|"  # + route|window: one row per alert key admitted to it
COUNT_TRIES: Final = 20
DIGEST_SAMPLE: Final = 20  # titles a digest lists; it counts the rest
FLUSH_EVERY_S: Final = 60.0
KEEP_WINDOWS: Final = 6  # a window's rows are kept this many windows after it ended (a late retry reuses them)
FORGET_BATCH: Final = (
    50  # windows dropped per flush at most  # how often a delivery looks for ended windows (the timer does too)
)
DEFAULT_ROUTE: Final = Route(kinds=EVENT_KINDS, channels=(LEGACY,), name="default")
_RANK: Final = {"sent": 4, "digested": 3, "already_sent": 2, "not_configured": 1}


@dataclass(frozen=True)
class Routed:
    route: Route
    senders: tuple[Sender, ...]
    limited: bool


class AlertRouter:
    def __init__(
        self,
        notifier: Notifier,
        config: AlertsConfig | None,
        senders: Mapping[str, Sender],
        *,
        legacy: Sender | None = None,
        clock: Clock = SYSTEM,
    ):
        self.notifier = notifier
        self.table: TableClient = notifier.table
        self.config = config
        self.senders = dict(senders)
        self.legacy = legacy
        self.clock = clock
        self.digest = config.digest if config is not None else Digest()
        self._flushed_at = float("-inf")

    def routes_for(self, alert: Alert) -> list[Routed]:
        routes = self.config.routes if self.config is not None else ()
        taken = [
            Routed(r, tuple(self.senders[c] for c in r.channels if c in self.senders), limited=True)
            for r in routes
            if r.takes(alert.kind, alert.severity)
        ]
        taken = [r for r in taken if r.senders]  # a findings route to ticket channels sends no message
        if not taken and self.legacy is not None:
            taken = [Routed(DEFAULT_ROUTE, (self.legacy,), limited=self.config is not None)]
        return taken

    async def deliver(self, alert: Alert) -> Delivery:
        """Send ``alert`` through every route that takes it: ``sent`` (by at least one channel),
        ``digested``, ``already_sent`` or ``not_configured``; raises :class:`TransientError` naming
        the channels that failed after every other channel had its turn."""
        if self.config is not None:
            alert = replace(alert, links=linked(alert, self.config.links))
        if self.clock.now() - self._flushed_at >= FLUSH_EVERY_S:
            await self._flush_quietly()
        routed = self.routes_for(alert)
        if not routed:
            return Delivery(
                "not_configured", "no alerts route takes it and NOTIFY_WEBHOOK_URL is not set: nobody was told"
            )
        statuses: list[str] = []
        problems: list[str] = []
        for r in routed:
            if r.limited and await self.admit(r.route, alert) == "digest":
                statuses.append("digested")
                continue
            for sender in r.senders:
                try:
                    statuses.append((await self._once(sender, alert.key, alert)).status)
                except TransientError as exc:
                    problems.append(str(exc))
                except Exception as exc:  # never the message: it could carry what the channel was given
                    problems.append(f"the {sender.name} channel failed ({type(exc).__name__})")
        if problems:
            raise TransientError("; ".join(problems))
        return Delivery(max(statuses, key=_RANK.__getitem__))

    async def _once(self, sender: Sender, key: str, alert: Alert) -> Delivery:
        claim = (alert.legacy_key or f"alert:{key}") if sender is self.legacy else f"{sender.name}:{key}"
        return await self.notifier.once(claim, lambda: sender.send(alert))

    # -- rate limit ----------------------------------------------------------------------------------

    def window(self, now: float | None = None) -> int:
        return int((self.clock.now() if now is None else now) // self.digest.window_s)

    async def admit(self, route: Route, alert: Alert) -> str:
        """``send`` (within the route's burst this window) or ``digest``; the same answer for the
        same key within a window, however often it is asked."""
        window = self.window()
        partition = encode_key(f"{DIGEST_ITEMS}{route.name}|{window}")
        row = encode_key(alert.key)
        try:
            return str((await self.table.get_entity(partition, row))["decision"])
        except ResourceNotFoundError:
            pass
        count = await self._count(route, window)
        decision = "send" if count <= self.digest.burst else "digest"
        await self.table.upsert_entity(
            {"PartitionKey": partition, "RowKey": row, "decision": decision, "kind": alert.kind,
             "severity": alert.severity, "title": alert.title[:500], "at": self.clock.now(), "seq": count},
            mode=UpdateMode.REPLACE,
        )  # fmt: skip
        return decision

    async def _count(self, route: Route, window: int) -> int:
        """Add one to the route's count for ``window``; the new count."""
        row = encode_key(f"{route.name}|{window}")
        end = (window + 1) * self.digest.window_s
        for _ in range(COUNT_TRIES):
            try:
                current = await self.table.get_entity(WINDOWS, row)
            except ResourceNotFoundError:
                first = {"PartitionKey": WINDOWS, "RowKey": row, "route": route.name, "window": window, "end": end,
                         "count": 1, "digested": False, "flushed": False}  # fmt: skip
                try:
                    await self.table.create_entity(first)
                    return 1
                except ResourceExistsError:
                    continue
            count = int(current["count"]) + 1
            updated = {**dict(current), "count": count, "digested": count > self.digest.burst}
            if await replace_if_unchanged(self.table, updated, current.metadata["etag"]) is not None:
                return count
        raise TransientError(f"the alert count of {route.name} kept changing; trying again")

    # -- digests -------------------------------------------------------------------------------------

    async def _flush_quietly(self) -> None:
        self._flushed_at = self.clock.now()
        try:
            await self.flush()
        except Exception as exc:  # the alert at hand must still go out; the timer tries again
            log.warning("could not send the pending alert digests: %s", type(exc).__name__)

    async def flush(self) -> int:
        """Send the digest of every window that has ended with alerts admitted to it; how many
        digests went out (a failed channel leaves its window for the next flush)."""
        now = self.clock.now()
        sent = 0
        query = "PartitionKey eq @p and digested eq true and flushed eq false"
        due = [dict(e) async for e in self.table.query_entities(query, parameters={"p": WINDOWS})]
        for window in due:
            if float(window["end"]) > now:
                continue
            route = self._route(str(window["route"]))
            if route is None:  # the mapping no longer has it: nothing to send through
                await self._mark_flushed(window)
                continue
            digest = await self._digest(route.route, int(window["window"]))
            if digest is None:
                await self._mark_flushed(window)
                continue
            failed = []
            for sender in route.senders:
                try:
                    await self._once(sender, digest.key, digest)
                except Exception as exc:
                    failed.append(f"{sender.name}: {type(exc).__name__}")
            if failed:
                log.warning("the digest %s is not sent yet (%s)", digest.key, ", ".join(failed))
                continue
            await self._mark_flushed(window)
            sent += 1
        await self._forget(now)
        return sent

    async def _forget(self, now: float) -> None:
        """Drop the rows of windows that ended ``KEEP_WINDOWS`` windows ago and owe no digest, so
        the rate limit's rows stay bounded (a few hundred a route at most)."""
        cutoff = now - KEEP_WINDOWS * self.digest.window_s
        query = "PartitionKey eq @p and end lt @cutoff"
        old = [dict(e) async for e in self.table.query_entities(query, parameters={"p": WINDOWS, "cutoff": cutoff})]
        for window in old[:FORGET_BATCH]:
            if window.get("digested") and not window.get("flushed"):
                continue  # its digest is still owed
            partition = encode_key(f"{DIGEST_ITEMS}{window['route']}|{window['window']}")
            items = self.table.query_entities("PartitionKey eq @p", parameters={"p": partition}, select=["RowKey"])
            async for item in items:
                await self.table.delete_entity(partition, item["RowKey"])
            await self.table.delete_entity(WINDOWS, window["RowKey"])

    def _route(self, name: str) -> Routed | None:
        if name == DEFAULT_ROUTE.name:
            return Routed(DEFAULT_ROUTE, (self.legacy,), True) if self.legacy is not None else None
        for r in self.config.routes if self.config is not None else ():
            if r.name == name:
                return Routed(r, tuple(self.senders[c] for c in r.channels if c in self.senders), True)
        return None

    async def _mark_flushed(self, window: dict[str, Any]) -> None:
        await self.table.update_entity(
            {"PartitionKey": WINDOWS, "RowKey": window["RowKey"], "flushed": True}, mode=UpdateMode.MERGE
        )

    async def _digest(self, route: Route, window: int) -> Alert | None:
        partition = encode_key(f"{DIGEST_ITEMS}{route.name}|{window}")
        query = "PartitionKey eq @p and decision eq 'digest'"
        items = [dict(e) async for e in self.table.query_entities(query, parameters={"p": partition})]
        if not items:
            return None
        items.sort(key=lambda e: (float(e.get("at", 0)), int(e.get("seq", 0))))  # the order they were admitted
        return digest_alert(route, window, self.digest, items, self.config)


def digest_alert(
    route: Route, window: int, digest: Digest, items: Sequence[Mapping[str, Any]], config: AlertsConfig | None
) -> Alert:
    """One message for the alerts a route held back in a window: how many of each kind, the first
    titles, the worst severity."""
    kinds = Counter(str(i["kind"]) for i in items)
    severity = max((str(i["severity"]) for i in items), key=SEVERITIES.index)
    start = datetime.fromtimestamp(window * digest.window_s, UTC).isoformat(timespec="minutes")
    minutes = round(digest.window_s / 60)
    listed = "\n".join(f"- {i['title']}" for i in items[:DIGEST_SAMPLE])
    more = len(items) - DIGEST_SAMPLE
    text = (
        f"{len(items)} more alerts than the route sends one by one arrived in the {minutes} minutes from {start}:\n"
        f"{listed}"
        + (f"\n… and {more} more (the audit trail has each: entra-sync audit --identity alerts)" if more > 0 else "")
    )
    alert = Alert(
        key=f"digest:{route.name}:{window}",
        kind=kinds.most_common(1)[0][0],
        severity=severity,
        title=f"Digest: {len(items)} alerts in {minutes} minutes",
        text=text,
        facts=(
            ("Alerts", str(len(items))),
            ("By kind", ", ".join(f"{k} {n}" for k, n in kinds.most_common())),
            ("Window", f"{minutes} minutes from {start}"),
        ),
    )
    return replace(alert, links=linked(alert, config.links)) if config is not None else alert
