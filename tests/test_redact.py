"""Secret values, and the secret parts of them, are masked in every log record and in text."""

from __future__ import annotations

import logging

import pytest

from shared import redact
from shared.settings import Secret


def test_a_secret_is_masked_in_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    redact.install_log_redaction()
    Secret("sk-live-4242-the-client-secret")
    logger = logging.getLogger("some.sdk")
    with caplog.at_level(logging.DEBUG, logger="some.sdk"):
        logger.debug("sending %s", "Bearer sk-live-4242-the-client-secret")
        try:
            raise RuntimeError("refused sk-live-4242-the-client-secret")
        except RuntimeError:
            logger.exception("failed")
    text = caplog.text
    assert "sk-live-4242" not in text
    assert "sending Bearer ***" in text
    assert "RuntimeError: refused ***" in text


def test_the_path_of_a_webhook_url_and_the_key_of_a_connection_string_are_secrets_too() -> None:
    Secret("https://hooks.slack.com/services/T000AAAA/B000BBBB/xyzsecretxyz")
    Secret("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0LWtleS0xMjM0NTY3OA==;")
    assert redact.redact("POST /services/T000AAAA/B000BBBB/xyzsecretxyz 200") == "POST *** 200"
    assert "c2VjcmV0" not in redact.redact("signing with c2VjcmV0LWtleS0xMjM0NTY3OA==")


def test_short_values_are_not_treated_as_secrets() -> None:
    redact.register("abc")
    assert redact.redact("abc is a word") == "abc is a word"


def test_access_tokens_obtained_at_run_time_are_masked() -> None:
    redact.register("eyJ0eXAiOiJKV1QiLCJhbGciOi.runtime-token", runtime=True)
    assert redact.redact("Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.runtime-token") == (
        "Authorization: Bearer ***"
    )
