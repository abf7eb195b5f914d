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


class TryLater(TransientError):
    """Not a failure: the work has to wait (a rate limit's reset, another worker's lease). The worker
    re-schedules the message to become visible after ``retry_after_s`` instead of spending one of
    its attempts, so waiting never poisons a message."""


class RateLimited(TryLater):
    """The vendor said 429; ``retry_after_s`` is how long its reset is away."""


class LeaseBusy(TryLater):
    """Another worker holds the identity's lease; the item runs again once it may be free."""


class LeaseLost(TryLater):
    """This worker's lease on the identity expired or was taken over: it must not write any more.
    ``after_write`` says a write may have landed after the take-over, so the identity must be
    converged again from a fresh read."""

    def __init__(self, message: str, retry_after_s: float | None = None, *, after_write: bool = False):
        super().__init__(message, retry_after_s)
        self.after_write = after_write


class PermanentError(SyncError):
    """Retrying cannot help (bad request, refused by policy, configuration): audit and move on."""


class NotFound(PermanentError):
    pass


class DeltaExpired(PermanentError):
    """A source no longer knows the cursor it was given (Graph: a 410 or ``syncStateNotFound`` on a
    stored delta link): the caller starts a full round."""


class Conflict(PermanentError):
    """The target already has this object (Auth0 409)."""


class Refused(PermanentError):
    """The target refused an operation it does not offer here (e.g. revocation off the Enterprise plan)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class BadInput(PermanentError):
    """Input that arrived from outside is malformed; refused at the edge and audited."""


def unreachable(service: str, op: str, exc: Exception, setting: str) -> str:
    """A connection failure in words an operator can act on: the host it could not reach (from the
    request an httpx-style error carries) and the setting that names it."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # no request attached
        url = None
    where = "the service"
    if url is not None and getattr(url, "host", None):
        port = url.port or (443 if url.scheme == "https" else 80)
        where = f"{url.host}:{port}"
    return f"{service} {op}: cannot reach {where} ({type(exc).__name__}); check {setting} and the network"
