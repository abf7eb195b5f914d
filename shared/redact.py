"""Secrets never reach a log record or an audit row, whoever writes it.

Every :class:`~shared.settings.Secret` registers its value here when it is made, and so do the
access tokens the SDK clients obtain at run time. :func:`install_log_redaction` (called once by the
composition root) wraps the logging record factory, so *every* record of *every* logger (ours, the
Azure SDK's, httpx's, msgraph's, auth0's) at every level has each registered value replaced by
``***`` before any handler or filter sees it: its message, its arguments and its traceback. The
audit store passes its free-text columns through :func:`redact` as well.

Parts of a secret are secrets too: the path and query of an incoming-webhook URL (a Slack or Teams
webhook URL is a bearer credential, and a client logs just its path at times), and the key or
signature inside a storage connection string.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections import deque
from typing import Any, Final
from urllib.parse import urlsplit

MASK: Final = "***"
MIN_LENGTH: Final = 8  # shorter values would mask ordinary words; every real secret here is longer
RUNTIME_TOKENS_KEPT: Final = 256  # access tokens rotate (hourly): remember the recent ones
_CONNECTION_SECRETS: Final = re.compile(r"(?:AccountKey|SharedAccessSignature|SharedAccessKey)=([^;]+)", re.I)

_lock = threading.Lock()
_static: set[str] = set()
_runtime: deque[str] = deque(maxlen=RUNTIME_TOKENS_KEPT)
_pattern: re.Pattern[str] | None = None
_installed = False


def _pieces(value: str) -> set[str]:
    pieces = {value}
    parts = urlsplit(value) if "://" in value else None
    if parts is not None and parts.netloc:
        pieces.update({parts.path, parts.query, parts.path.lstrip("/")})
    pieces.update(m.group(1) for m in _CONNECTION_SECRETS.finditer(value))
    return {p for p in pieces if len(p) >= MIN_LENGTH}


def _rebuild() -> None:
    global _pattern
    values = sorted(_static | set(_runtime), key=len, reverse=True)  # longest first: no partial masks
    _pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None


def register(value: str | None, *, runtime: bool = False) -> None:
    """Remember ``value`` (and its secret parts) as a secret. ``runtime`` values (access tokens)
    are kept in a bounded window; settings' secrets are kept for the life of the process."""
    if not value:
        return
    pieces = _pieces(value)
    if not pieces:
        return
    with _lock:
        known = _static | set(_runtime)
        if pieces <= known:
            return
        if runtime:
            _runtime.extend(pieces - known)
        else:
            _static.update(pieces)
        _rebuild()


def redact(text: str) -> str:
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None and text else text


def _scrub(record: logging.LogRecord) -> None:
    if _pattern is None:
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: logging reports it itself; leave it as it is
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_log_redaction() -> None:
    """Wrap the process's log record factory once (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _scrub(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
