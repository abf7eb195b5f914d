"""The risk response's decisions, pure: what a detection asks of each target, in the neutral actions
every target understands, what lifting the response means, and the security team's message.

The mapping's ``risk.rules`` pick the steps for a detection (``block``, ``revoke_sessions``,
``revoke_refresh_tokens``, ``require_mfa``, ``notify``); here each step becomes an action for one
target, or a note saying why none is sent (already so, or the target cannot: a target without
revocations says so rather than pretending).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shared.core.model import Account, Action, ActionKind, Identity
from shared.core.ports import Capabilities, Rules
from shared.core.work import RiskSignal, WorkItem
from shared.targets.registry import target_title

STEPS: Final = ("block", "revoke_sessions", "revoke_refresh_tokens", "require_mfa")
_PAST: Final = {"block": "blocked", "unblock": "unblocked", "disable": "disabled", "enable": "enabled"}
_REVOKED: Final = {"revoke_sessions": "sessions", "revoke_refresh_tokens": "refresh tokens"}


def past(label: str) -> str:
    return _PAST.get(label, f"{label}d")


@dataclass
class TargetResponse:
    """What the response did (or could not do) in one target."""

    target: str
    account_id: str = ""
    matched_by: str = ""
    done: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return target_title(self.target)


@dataclass(frozen=True)
class Step:
    """One wanted step for one target: the action to send, or a note instead (``problem`` when it
    could not be done)."""

    name: str
    action: Action | None
    done: str  # what to report once the action went through (or, with no action, what is so)
    problem: str = ""


def steps_for(
    wanted: tuple[str, ...], account: Account, rules: Rules, capabilities: Capabilities, mfa_flag: str, title: str
) -> list[Step]:
    out: list[Step] = []
    for name in wanted:
        if name == "block":
            disabled = past(rules.label(ActionKind.DISABLE))
            if not account.active:
                out.append(
                    Step(name, None, f"the {title} account was already {disabled} (locked against unblocking by sync)")
                )
            else:
                out.append(
                    Step(name, Action(ActionKind.DISABLE, reason="risk response"), f"{disabled} the {title} account")
                )
        elif name in _REVOKED:
            what = _REVOKED[name]
            kind = ActionKind.REVOKE_SESSIONS if name == "revoke_sessions" else ActionKind.REVOKE_REFRESH_TOKENS
            if not getattr(capabilities, name):
                out.append(Step(name, None, "", f"could not revoke {what}: {title} offers no revocation"))
            else:
                out.append(Step(name, Action(kind, reason="risk response"), f"revoked all {what}"))
        elif name == "require_mfa":
            path = rules.flag_path(mfa_flag)
            if path is None:
                out.append(Step(name, None, "", f"could not require MFA: {title} has no flag for its login flow"))
            elif rules.current(account, path) is True:
                out.append(Step(name, None, f"{path} was already set"))
            else:
                action = flag_action(rules, path, rules.current(account, path), True)
                out.append(Step(name, action, f"set {path} = true (the login flow asks for MFA)"))
    return out


def flag_action(rules: Rules, path: str, before: Any, after: Any) -> Action:
    return Action(ActionKind.UPDATE, rules.update_payload({path: after}, {}), {path: (before, after)}, "risk response")


def notify_due(status: str, wanted: tuple[str, ...]) -> bool:
    if status == "acted":
        return "notify" in wanted
    return status in {"restored", "no_match", "ambiguous"}


def who(identity: Identity) -> str:
    name = identity.attributes.get("displayName")
    upn = identity.attributes.get("userPrincipalName") or identity.attributes.get("mail")
    if name and upn:
        return f"{name} ({upn})"
    return str(name or upn or f"Entra user {identity.id}")


def message(item: WorkItem, signal: RiskSignal, person: str, responses: list[TargetResponse]) -> str:
    """The security team's message: who, what risk, what was done, what could not be done, per
    target. Never a secret: ids, names, the risk and the outcome only."""
    person = person or f"Entra user {item.id}"
    if signal.incident == "restore":
        lines = [
            f"[entra-sync] Risk response lifted for {person}",
            f"Why: riskState is {signal.state} in Entra ID Protection (updated {signal.ref})",
        ]
    else:
        lines = [f"[entra-sync] {signal.level.upper()} sign-in risk for {person}"]
        risk = f"Risk: {signal.event_type}, level {signal.level}, state {signal.state}"
        if signal.detected_at:
            risk += f", detected {signal.detected_at}"
        if signal.ip_address:
            risk += f" from {signal.ip_address}"
        lines.append(f"{risk} (detection {signal.ref})")
    for r in responses:
        if r.account_id:
            lines.append(f"{r.title} account: {r.account_id} (found by {r.matched_by})")
        lines.append("Done: " + ("; ".join(r.done) if r.done else f"nothing in {r.title}"))
        if r.problems:
            lines.append("Could not do: " + "; ".join(r.problems))
    lines.append(f"Entra object id {item.id} | correlation id {item.correlation_id}")
    return "\n".join(lines)


def responses_from(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What the response changed, per target, from its stored record (a record from before targets
    were named is Auth0's)."""
    if "targets" in record:
        return {str(k): dict(v) for k, v in record["targets"].items()}
    return {"auth0": {"target_id": record.get("user_id", ""), "disabled_by_risk": record.get("blocked_by_risk"),
                      "mfa_by_risk": record.get("mfa_by_risk")}}  # fmt: skip
