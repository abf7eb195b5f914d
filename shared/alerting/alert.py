"""An alert as every channel reads it: what happened, how bad, the facts a responder needs first,
and where to look next.

The services raise alerts with an incident key (``poison:<message id>``, ``guard:<episode>``,
``reconcile-held:<run>``, ``reconcile-failed:<run>``, ``quarantine:<target>:<generation>``); the
key's first word says the kind of event when the caller does not (:func:`kind_of`), so routing
needs no new argument from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

from shared.alerting.config import Links

# The first word of an incident key -> (event kind, severity).
KEY_KINDS: Final = {
    "poison": ("poison", "high"),
    "guard": ("held", "high"),
    "reconcile-held": ("held", "high"),
    "reconcile-failed": ("failed_run", "high"),
    "quarantine": ("quarantine", "medium"),
    "findings": ("findings", "low"),
    "risk": ("risk", "high"),
}
# A key of no known kind: something failed that has no kind of its own, and operators must hear of it.
UNKNOWN_KIND: Final = ("failed_run", "high")


def kind_of(key: str) -> tuple[str, str]:
    """The event kind and severity an incident key says (see :data:`KEY_KINDS`)."""
    return KEY_KINDS.get(key.split(":", 1)[0], UNKNOWN_KIND)


@dataclass(frozen=True)
class Alert:
    """One incident for the operators. ``key`` makes it once per channel, however often it is raised;
    ``text`` is the whole message in plain words (what the plain webhook gets), ``title`` its first
    line and ``facts`` the short name/value pairs a card leads with."""

    key: str
    kind: str
    severity: str
    title: str
    text: str
    facts: tuple[tuple[str, str], ...] = ()
    source: str = "alert"
    correlation_id: str = ""
    run_id: str = ""  # the reconciliation run it is about: its report
    identity: str = ""  # the identity it is about: its audit trail
    # The claim key the plain NOTIFY_WEBHOOK_URL channel used before there were channels, so an
    # incident raised across an upgrade is not sent twice.
    legacy_key: str = ""
    plain: str = ""  # what the plain NOTIFY_WEBHOOK_URL channel is sent, where it is not ``text``
    links: tuple[tuple[str, str], ...] = field(default=())  # (label, URL), filled in by the router

    def all_facts(self) -> tuple[tuple[str, str], ...]:
        """The facts a responder reads first: kind and severity, then the caller's."""
        lead = (("Event", self.kind.replace("_", " ")), ("Severity", self.severity))
        tail = (("Correlation id", self.correlation_id),) if self.correlation_id else ()
        return lead + self.facts + tail

    def where_to_look(self) -> tuple[tuple[str, str], ...]:
        """Where to look next, as (label, command) when no link template is configured."""
        out = []
        if self.run_id:
            out.append(("Report", f"entra-sync report {self.run_id}"))
        out.append(("Audit trail", f"entra-sync audit --identity {self.identity}" if self.identity
                    else f"entra-sync audit --correlation-id {self.correlation_id or self.key}"))  # fmt: skip
        return tuple(out)


def linked(alert: Alert, links: Links) -> tuple[tuple[str, str], ...]:
    """The report and audit trail links of ``alert`` from the configured templates (none where a
    template is missing or names a value the alert does not have)."""
    values = {"run_id": alert.run_id, "identity": alert.identity, "correlation_id": alert.correlation_id or alert.key}
    out = []
    for label, template in (("Report", links.report), ("Audit trail", links.audit)):
        if not template:
            continue
        try:
            url = template.format(**{k: _quoted(v) for k, v in values.items()})
        except (KeyError, IndexError):
            continue
        needed = [name for name in values if "{" + name + "}" in template]
        if all(values[name] for name in needed):
            out.append((label, url))
    return tuple(out)


def _quoted(value: str) -> str:
    return quote(value, safe="")
