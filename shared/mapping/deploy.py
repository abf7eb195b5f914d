"""What a deployment must provide for a mapping, and the azd pre-provision step that provides it.

The Bicep (infra/main.bicep) creates parameters' Key Vault secrets and app settings only for the
targets and sources the mapping names. It learns them from two azd environment values this module
writes before every provision:

* ``ENTRA_SYNC_TARGETS`` (plain JSON, the ``targetSet`` parameter): whether there is an Auth0
  target, the secret settings the other targets read (a SCIM application's token, a Salesforce
  org's client secret) with the Key Vault secret each is kept in, and their plain settings
  (a Salesforce org's instance URL and client id) with their values;
* ``ENTRA_SYNC_TARGET_SECRETS`` (JSON, the ``@secure`` ``targetSecrets`` parameter): the secrets'
  values, taken from the azd environment where the operator set them under the very setting name
  the app reads (``azd env set SCIM_HR_APP_TOKEN ...``);

and ``SCIM_INBOX_SOURCES`` (the inbound SCIM sources, whose tokens the Bicep derives).

``python -m shared.mapping.deploy`` is what the hooks run (infra/scripts/check-mapping.sh and .ps1):
it reads the mapping with the app's own loader, so a broken file stops the deployment with the
messages ``entra-sync check`` prints, then names every value the azd environment lacks, with the
command that sets it, and only then writes the three values with ``azd env set``. It needs no Azure
access and no settings but the azd environment's; values are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from shared.mapping.load import load_mapping
from shared.mapping.model import MappingError, SyncMapping

TARGETS_VALUE: Final = "ENTRA_SYNC_TARGETS"
SECRETS_VALUE: Final = "ENTRA_SYNC_TARGET_SECRETS"
INBOX_SOURCES_VALUE: Final = "SCIM_INBOX_SOURCES"
MAIL_SEND_VALUE: Final = "ENTRA_SYNC_MAIL_SEND"  # "true": the grant adds Mail.Send
AUTH0_VALUES: Final = ("AUTH0_DOMAIN", "AUTH0_CLIENT_ID", "AUTH0_CLIENT_SECRET")
INBOX_SEED_VALUE: Final = "SCIM_INBOX_TOKEN_SEED"
APP_ROOT: Final = Path(__file__).resolve().parents[2]


def vault_name(setting: str) -> str:
    """The Key Vault secret a setting's value is kept in: ``SCIM_HR_APP_TOKEN`` -> ``scim-hr-app-token``
    (Key Vault names allow letters, digits and '-')."""
    return setting.lower().replace("_", "-")


@dataclass(frozen=True)
class Needs:
    """What the mapping asks of a deployment, by the names of the settings the app reads. Trusted to
    be complete for the kinds the app has: a kind this module does not know is a problem, not a
    silent omission."""

    auth0: bool = False
    secrets: dict[str, str] = field(default_factory=dict)  # setting -> the target or source that reads it
    settings: dict[str, str] = field(default_factory=dict)  # plain setting -> who reads it
    inbox_sources: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def required_values(self) -> dict[str, str]:
        """Every azd environment value the deployment needs: name -> why."""
        wanted = dict.fromkeys(AUTH0_VALUES, "the mapping's target auth0") if self.auth0 else {}
        wanted |= {name: f"the mapping's target {who}" for name, who in {**self.secrets, **self.settings}.items()}
        if self.inbox_sources:
            wanted[INBOX_SEED_VALUE] = "the inbound SCIM sources' tokens are derived from it (openssl rand -hex 32)"
        return wanted

    def target_set(self, env: Mapping[str, str]) -> dict[str, object]:
        """The ``targetSet`` parameter: no secret in it."""
        return {
            "auth0": self.auth0,
            "secrets": [{"setting": name, "vaultName": vault_name(name)} for name in sorted(self.secrets)],
            "settings": {name: env[name].strip() for name in sorted(self.settings)},
        }

    def secret_values(self, env: Mapping[str, str]) -> dict[str, str]:
        """The ``targetSecrets`` parameter: setting -> value."""
        return {name: env[name].strip() for name in sorted(self.secrets)}


def needs(mapping: SyncMapping) -> Needs:
    """What each target and source of ``mapping`` needs, by kind."""
    from shared.sources.scim_inbox.factory import token_setting

    auth0 = False
    secrets: dict[str, str] = {}
    settings: dict[str, str] = {}
    inbox: list[str] = []
    problems: list[str] = []
    for name, section in mapping.targets.items():
        if section.kind == "auth0":
            auth0 = True
        elif section.kind == "scim":
            secrets[str(section.options.token_setting)] = name
        elif section.kind == "salesforce":
            prefix = section.options.settings_prefix
            secrets[f"{prefix}_CLIENT_SECRET"] = name
            settings |= {f"{prefix}_INSTANCE_URL": name, f"{prefix}_CLIENT_ID": name}
        else:
            problems.append(f"{section.where}kind: the deployment does not know what a {section.kind} target needs")
    for name, source in mapping.sources.items():
        if source.kind == "scim_inbox":
            inbox.append(name)
            named = (source.options or {}).get("token_setting")
            if named and named != token_setting(name):
                problems.append(
                    f"{source.where}token_setting: the deployment writes the token to {token_setting(name)}; "
                    f"leave token_setting out (it names {named})"
                )
        elif source.kind != "entra":
            problems.append(f"{source.where}kind: the deployment does not know what a {source.kind} source needs")
    return Needs(auth0, secrets, settings, tuple(inbox), tuple(problems))


def missing_values(wanted: Mapping[str, str], env: Mapping[str, str]) -> list[str]:
    """One line per value the azd environment lacks, with the command that sets it."""
    return [
        f"{name} is not set ({why}): azd env set {name} <value>"
        for name, why in wanted.items()
        if not env.get(name, "").strip()
    ]


def azd_values(mapping: SyncMapping, env: Mapping[str, str]) -> dict[str, str] | list[str]:
    """The azd environment values to write for ``mapping``, or every problem that stops the deployment."""
    found = needs(mapping)
    problems = [*found.problems, *missing_values(found.required_values(), env)]
    if problems:
        return problems
    return {
        TARGETS_VALUE: json.dumps(found.target_set(env), separators=(",", ":")),
        SECRETS_VALUE: json.dumps(found.secret_values(env), separators=(",", ":")),
        INBOX_SOURCES_VALUE: ",".join(found.inbox_sources),
        MAIL_SEND_VALUE: "true" if sends_mail(mapping) else "false",
    }


def sends_mail(mapping: SyncMapping) -> bool:
    """Whether the mapping sends mail through Graph (an alerts email channel, an Auth0 welcome from a
    mailbox): then the post-provision grant adds Mail.Send (``--mail-send``)."""
    channels = mapping.alerts.channels.values() if mapping.alerts is not None else ()
    welcome = any(getattr(s.options, "welcome_mailbox", None) for s in mapping.targets.values())
    return welcome or any(c.kind == "email" for c in channels)


def _azd_env_set(name: str, value: str) -> None:
    azd = shutil.which("azd")
    if azd is None:
        raise FileNotFoundError("azd is not on PATH")
    subprocess.run([azd, "env", "set", name, value], check=True, stdout=subprocess.DEVNULL, timeout=60)  # noqa: S603


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    write: Callable[[str, str], None] = _azd_env_set,
) -> int:
    """The pre-provision step: 0 when the values are written, 2 when the mapping or the azd
    environment must be fixed first (each problem printed), 1 when azd could not be run."""
    parser = argparse.ArgumentParser(prog="python -m shared.mapping.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mapping", type=Path, help="the mapping file (default: SYNC_MAPPING_FILE, else mapping.yaml)")
    parser.add_argument("--check-only", action="store_true", help="validate the mapping only; write nothing")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    file = env.get("SYNC_MAPPING_FILE", "").strip() or "mapping.yaml"
    try:
        mapping = load_mapping(args.mapping or APP_ROOT / file)
    except MappingError as exc:
        print(f"entra-sync: {exc}", file=sys.stderr)
        print(
            "entra-sync: nothing was provisioned or deployed; fix the file (entra-sync check reads it alike)",
            file=sys.stderr,
        )
        return 2
    targets = ", ".join(mapping.targets) or "none"
    print(f"entra-sync: mapping file '{file}' is valid (targets: {targets}; sources: {', '.join(mapping.sources)})")
    if args.check_only:
        return 0
    values = azd_values(mapping, env)
    if isinstance(values, list):
        for problem in values:
            print(f"entra-sync: {problem}", file=sys.stderr)
        print("entra-sync: nothing was provisioned; set these, then run azd up again", file=sys.stderr)
        return 2
    try:
        for name, value in values.items():
            write(name, value)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"entra-sync: could not write the azd environment: {exc}", file=sys.stderr)
        return 1
    print(f"entra-sync: the deployment provides {', '.join(values)} for these targets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
