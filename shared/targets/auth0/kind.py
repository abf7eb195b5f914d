"""Auth0 as a kind of target: its part of the mapping file, its rules, its adapter."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from shared.core.ports import Rules, Target
from shared.mapping.model import NO_CONDITIONS, Grant, TargetSection
from shared.settings import Settings
from shared.targets.auth0.baseline import read_baseline
from shared.targets.auth0.options import POLICY_KEYS, read_policy
from shared.targets.auth0.rules import CAPABILITIES, METADATA, ROOT_PATHS, Auth0Options, Auth0Rules

if TYPE_CHECKING:
    from shared.mapping.check import Checker

MATCHERS: Final = ("app_metadata", "enterprise_identity", "email")
_KEY: Final = "key (letters, digits, _ or -)"


class Auth0Kind:
    name = "auth0"
    title = "Auth0"
    matchers = MATCHERS
    grants_key = "roles"
    grant_noun = "Auth0 role"
    grant_conditions = NO_CONDITIONS
    disable_words = ("block",)
    option_keys = frozenset({"connection", "deterministic_user_id", "baseline", "welcome_mailbox"}) | POLICY_KEYS
    matching_keys = frozenset({"app_metadata_key", "enterprise_connection"})
    capabilities = CAPABILITIES
    deprovision_defaults = ("disable", "disable")  # a block, also for a user deleted for good

    def path_problem(self, path: str) -> str | None:
        head, _, rest = path.partition(".")
        if head in METADATA:
            if not rest or "." in rest or not all(c.isalnum() or c in "_-" for c in rest) or len(rest) > 100:
                return (
                    f"{path!r}: metadata targets are one key deep ({head}.<key>), because Auth0 merges "
                    "metadata one level deep"
                )
            return None
        if path not in ROOT_PATHS:
            allowed = ", ".join(sorted(ROOT_PATHS))
            return f"{path!r} is not a writable Auth0 attribute ({allowed}, user_metadata.<key>, app_metadata.<key>)"
        return None

    def options(
        self, check: Checker, where: str, values: Mapping[str, Any], matching: Mapping[str, Any], matching_where: str
    ) -> Auth0Options:
        d = Auth0Options()
        connection = values.get("connection", d.connection)
        enterprise = matching.get("enterprise_connection")
        if enterprise is not None:
            enterprise = check.text(f"{matching_where}enterprise_connection", enterprise)
        connection = check.text(f"{where}connection", connection) or d.connection
        policy = read_policy(check, where, values)
        for name, welcome in policy.welcome.items():
            if name == enterprise and welcome.send != "none":
                check.fail(
                    f"{where}welcome.{name}",
                    "its members sign in through Entra (the enterprise connection) and have no password: send none",
                )
        mailbox = values.get("welcome_mailbox")
        if mailbox is not None:
            mailbox = check.text(f"{where}welcome_mailbox", mailbox)
            if mailbox and "@" not in mailbox:
                check.fail(f"{where}welcome_mailbox", f"must be a mailbox address (user@domain), got {mailbox!r}")
        return Auth0Options(
            welcome_mailbox=mailbox or None,
            connection=connection,
            deterministic_user_id=check.flag(
                f"{where}deterministic_user_id", values.get("deterministic_user_id"), d.deterministic_user_id
            ),
            app_metadata_key=check.simple_key(
                f"{matching_where}app_metadata_key",
                matching.get("app_metadata_key", d.app_metadata_key),
                d.app_metadata_key,
                _KEY,
            ),
            enterprise_connection=enterprise,
            policy=policy,
            baseline=read_baseline(check, f"{where}baseline", values.get("baseline")),
        )

    def default_matching(self, options: Auth0Options) -> tuple[str, ...]:
        """Every matcher, less the enterprise identity when no enterprise connection is named."""
        return ("link", *(m for m in MATCHERS if m != "enterprise_identity" or options.enterprise_connection))

    def matching_problem(self, options: Auth0Options, precedence: Sequence[str]) -> tuple[str, str] | None:
        if "enterprise_identity" in precedence and options.enterprise_connection is None:
            return "enterprise_connection", "is required when precedence includes enterprise_identity"
        return None

    def check_grants(self, check: Checker, where: str, grants: Sequence[Grant]) -> None:
        return None  # many to many: a group may grant several roles, a role may come from several groups

    def clashes(self, sections: Sequence[TargetSection]) -> list[tuple[str, str]]:
        """Auth0 targets share one tenant (one AUTH0_* set of settings): two that stamp accounts
        with the same app_metadata key would each take the other's accounts for its own orphans."""
        first: dict[str, TargetSection] = {}
        problems = []
        for section in sections:
            key = section.options.app_metadata_key if isinstance(section.options, Auth0Options) else None
            if key is None:
                continue
            if key in first:
                problems.append((
                    f"{section.where}matching.app_metadata_key",
                    f"{first[key].name} and {section.name} would both stamp accounts of one Auth0 tenant with "
                    f"app_metadata.{key}: each would take the other's accounts for orphans; give each its own key",
                ))  # fmt: skip
            else:
                first[key] = section
        return problems

    def rules(self, section: TargetSection) -> Rules:
        return Auth0Rules(section)

    def settings_problem(self, section: TargetSection, settings: Settings) -> str | None:
        if settings.auth0 is None:
            return (
                "AUTH0_DOMAIN is required (or AUTH0_BASE_URL for the sandbox): "
                f"the mapping names the target {section.name}"
            )
        return None

    def build(self, section: TargetSection, context: Any) -> Target:
        from shared.targets.auth0.client import auth0_client
        from shared.targets.auth0.target import Auth0Target

        gate = context.rate_gate(section.name)  # the client reports every answer's x-ratelimit-* headers to it
        auth0 = context.settings.auth0
        assert auth0 is not None  # settings_problem was asked before building
        client = context.client(section.name, lambda: auth0_client(auth0, gate=gate))
        return Auth0Target(section, client, gate, welcome=self._welcome_desk(section, context))

    def _welcome_desk(self, section: TargetSection, context: Any) -> Any:
        """The welcome's claims and audit rows, where the section sends one (see ``welcome``)."""
        from shared.targets.auth0.welcome import WelcomeDesk

        options = section.options
        if not isinstance(options, Auth0Options) or not options.policy.welcome or context.state is None:
            return None
        courier = getattr(context, "courier", None)
        if courier is None and options.welcome_mailbox:
            from shared.alerting.channels import GraphCourier
            from shared.sources.graph.client import graph_client

            settings = context.settings
            graph = context.client("alerts:graph", lambda: graph_client(settings))  # the alerts' mail client too
            courier = GraphCourier(options.welcome_mailbox, graph)
        if courier is None and any(w.send == "password_change_ticket" for w in options.policy.welcome.values()):
            # Not refused here (the app must start); each such welcome fails loudly and is audited.
            logging.getLogger("entra_sync.auth0").warning(
                "%swelcome: a password-change ticket must be delivered to the joiner, and no courier is "
                "configured (set welcome_mailbox, the mailbox it is sent from): those welcomes fail until one is",
                section.where,
            )
        return WelcomeDesk(section.name, section.source, context.state, context.audit, courier, context.clock)


AUTH0: Final = Auth0Kind()
