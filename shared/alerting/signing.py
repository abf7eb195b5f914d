"""HMAC signatures on what entra-sync posts (the event feed, a generic webhook with a key).

A receiver recomputes ``HMAC-SHA256(key, "<timestamp>.<body>")`` over the raw body it got and
compares in constant time; the timestamp in the signed text lets it refuse a replayed delivery
older than it accepts. Header names follow the pattern Stripe and Standard Webhooks made common.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "X-Entra-Sync-Signature"  # "sha256=<hex>"
TIMESTAMP_HEADER: Final = "X-Entra-Sync-Timestamp"  # epoch seconds, the one signed


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(key: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: signature(key, timestamp, body), TIMESTAMP_HEADER: str(timestamp)}


def verify(key: bytes, timestamp: str, body: bytes, given: str) -> bool:
    """Whether ``given`` is the signature of ``body`` at ``timestamp`` (constant-time comparison)."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(signature(key, int(timestamp), body), given)
