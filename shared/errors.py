"""The error tree: transient errors are retried by the host (then poisoned), permanent ones are
audited and never retried. SDK and transport errors are translated once, at the adapter boundary."""

from __future__ import annotations


class SyncError(Exception):
    """Base of every error entra-sync raises on purpose."""


class TransientError(SyncError):
    """Worth trying again later: throttling, 5xx, timeouts, a busy lease."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(TransientError):
    """The vendor said 429; ``retry_after_s`` is how long its reset is away."""


class PermanentError(SyncError):
    """Retrying cannot help (bad request, refused by policy, configuration): audit and move on."""


class NotFound(PermanentError):
    pass


class Conflict(PermanentError):
    """The target already has this object (Auth0 409)."""


class Refused(PermanentError):
    """The target refused an operation it does not offer here (e.g. revocation off the Enterprise plan)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class BadInput(PermanentError):
    """Input that arrived from outside is malformed; refused at the edge and audited."""
