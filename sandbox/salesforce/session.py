"""A ``requests.Session`` that carries simple-salesforce's https URLs to a loopback emulator.

simple-salesforce builds every URL as ``https://<instance>/...`` from the instance it is given.
The emulator speaks plain HTTP on 127.0.0.1, so :func:`loopback_session` mounts an adapter on
exactly ``https://<loopback host>:<port>/`` that sends those requests over ``http://`` to the same
host and port. Nothing else changes: any other URL goes through requests' own https adapter, and
the adapter refuses to rewrite a host that is not loopback.

Use::

    sf = Salesforce(instance_url=emulator.instance_url, session_id=token,
                    session=loopback_session(emulator.instance_url))
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

if TYPE_CHECKING:
    from requests._types import CertType, TimeoutType, VerifyType

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class LoopbackHttpsAdapter(HTTPAdapter):
    """Sends ``https://<loopback>:<port>/...`` as ``http://<loopback>:<port>/...``."""

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: TimeoutType = None,
        verify: VerifyType = True,
        cert: CertType = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        if parts.scheme != "https" or parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"the loopback adapter only rewrites https URLs of a loopback host, not {request.url!r}")
        request.url = urlunsplit(("http", *parts[1:]))
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)


def loopback_session(instance_url: str, session: requests.Session | None = None) -> requests.Session:
    """``session`` (or a new one) with ``instance_url`` (``https://127.0.0.1:<port>``) routed to
    the plain-HTTP emulator listening there. Raises ``ValueError`` for a non-loopback URL."""
    parts = urlsplit(instance_url)
    if parts.scheme != "https" or parts.hostname not in LOOPBACK_HOSTS or parts.port is None:
        raise ValueError(f"not an https loopback instance URL with a port: {instance_url!r}")
    out = session or requests.Session()
    out.mount(f"https://{parts.netloc}/", LoopbackHttpsAdapter())
    out.trust_env = False  # no proxy from the environment between a test and its loopback server
    return out
