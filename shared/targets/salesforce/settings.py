"""A Salesforce org's settings: ``<prefix>_INSTANCE_URL``, ``<prefix>_CLIENT_ID`` and
``<prefix>_CLIENT_SECRET`` (the prefix is ``SALESFORCE`` unless the section names another, one per
org). They are read the way every other setting is (a blank value is missing; an unresolved Key
Vault reference fails closed), once the mapping says a target needs them; the secret is a
:class:`~shared.settings.Secret`, so it never reaches a log line or an audit row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from shared.settings import Secret, Settings, _Reader

PREFIX: Final = re.compile(r"SALESFORCE(_[A-Z0-9]{1,40})?")


@dataclass(frozen=True)
class OrgSettings:
    instance_url: str  # https://acme.my.salesforce.com (plain http for loopback only)
    client_id: str
    client_secret: Secret  # the connected app's consumer secret (OAuth client credentials flow)


def org_settings(settings: Settings, prefix: str, target: str) -> OrgSettings | str:
    """The org's settings, or what is wrong with them (every problem, in one message)."""
    reader = _Reader(settings.env)
    why = f"the mapping's target {target} needs it"
    url = reader.url(f"{prefix}_INSTANCE_URL", reader.required(f"{prefix}_INSTANCE_URL", why))
    client_id = reader.required(f"{prefix}_CLIENT_ID", why)
    secret = reader.required(f"{prefix}_CLIENT_SECRET", why)
    if reader.problems:
        return "; ".join(reader.problems)
    assert url and client_id and secret
    return OrgSettings(url, client_id, Secret(secret))
