"""Helpers of the emulator tests (importable: ``tests/emulator`` is on pytest's path)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

MODEL = "claude-haiku-5-5"
"""A current model (active, 128K output, adaptive and manual thinking)."""


def params(text: str = "hello", max_tokens: int = 1024, model: str = MODEL, **extra: Any) -> dict:
    """A one-turn Messages request (answers of the default length seldom reach max_tokens)."""
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def error_of(call: Any) -> tuple[int, str, str]:
    """(status, error type, message) of a call the API refuses, checking the error envelope."""
    with pytest.raises(anthropic.APIStatusError) as caught:
        call()
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    request_id = caught.value.response.headers["request-id"]
    assert request_id.startswith("req_") and body["request_id"] == request_id
    return caught.value.status_code, body["error"]["type"], body["error"]["message"]
