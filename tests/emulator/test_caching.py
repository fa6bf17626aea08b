"""The emulator's prompt cache, through the official SDK: writes, reads, TTLs, minimums, batches."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anthropic
import pytest

from llm_pipelines.emulator import EmulatorConfig, EmulatorStore, in_process_client

SONNET = "claude-sonnet-5"  # minimum cacheable prompt: 1,024 tokens
SYSTEM = "Answer as the store's assistant. " + "guideline " * 600  # about 1,508 tokens
SYSTEM_TOKENS = math.ceil(len(SYSTEM) / 4)


@pytest.fixture
def emulator(tmp_path: Path) -> tuple[anthropic.Anthropic, EmulatorStore]:
    config = EmulatorConfig(state_dir=str(tmp_path / "emulator"))
    return in_process_client(config, max_retries=0), EmulatorStore(config)


def _system(ttl: str | None, text: str = SYSTEM) -> list[dict[str, Any]]:
    control: dict[str, str] = {"type": "ephemeral"}
    if ttl:
        control["ttl"] = ttl
    return [{"type": "text", "text": text, "cache_control": control}]


def _ask(client: anthropic.Anthropic, system: Any, question: str = "hi", **extra: Any) -> Any:
    message = client.messages.create(
        model=extra.pop("model", SONNET),
        max_tokens=20,
        system=system,
        messages=[{"role": "user", "content": question}],
        **extra,
    )
    return message.usage


def test_first_request_writes_the_prefix_and_the_next_reads_it(emulator) -> None:
    client, _ = emulator
    first = _ask(client, _system("5m"), "where is my order?")
    assert first.cache_creation_input_tokens == SYSTEM_TOKENS
    assert first.cache_creation.ephemeral_5m_input_tokens == SYSTEM_TOKENS
    assert first.cache_creation.ephemeral_1h_input_tokens == 0
    assert first.cache_read_input_tokens == 0
    second = _ask(client, _system("5m"), "can I return a lamp?")
    assert second.cache_read_input_tokens == SYSTEM_TOKENS
    assert second.cache_creation_input_tokens == 0
    # input_tokens is only the uncached rest: the question (4 characters a token) and the
    # 3 tokens a turn adds.
    assert first.input_tokens == math.ceil(len("where is my order?") / 4) + 3
    assert second.input_tokens == math.ceil(len("can I return a lamp?") / 4) + 3


def test_the_default_ttl_is_five_minutes_and_one_hour_is_reported_apart(emulator) -> None:
    client, store = emulator
    default = _ask(client, _system(None))
    assert default.cache_creation.ephemeral_5m_input_tokens == SYSTEM_TOKENS
    other = SYSTEM.replace("guideline", "procedure")
    hour = _ask(client, _system("1h", other))
    assert hour.cache_creation.ephemeral_1h_input_tokens == math.ceil(len(other) / 4)
    assert hour.cache_creation.ephemeral_5m_input_tokens == 0

    store.advance_clock(301)  # the 5-minute entry has lapsed, the 1-hour one has not
    assert _ask(client, _system(None)).cache_creation_input_tokens == SYSTEM_TOKENS
    assert _ask(client, _system("1h", other)).cache_read_input_tokens > 0
    store.advance_clock(3601)
    assert _ask(client, _system("1h", other)).cache_creation.ephemeral_1h_input_tokens > 0


def test_a_read_refreshes_the_entry_lifetime(emulator) -> None:
    client, store = emulator
    _ask(client, _system("5m"))
    store.advance_clock(200)
    assert _ask(client, _system("5m")).cache_read_input_tokens == SYSTEM_TOKENS
    store.advance_clock(200)  # 400 s after the write, 200 s after the last read
    assert _ask(client, _system("5m")).cache_read_input_tokens == SYSTEM_TOKENS


def test_a_prefix_below_the_models_minimum_is_not_cached(emulator) -> None:
    client, _ = emulator
    # About 1,508 tokens: enough for Sonnet (1,024) but not for Haiku 4.5 (4,096).
    for _ in range(2):
        usage = _ask(client, _system("5m"), model="claude-haiku-4-5")
        assert usage.cache_creation_input_tokens == 0
        assert usage.cache_read_input_tokens == 0
        assert usage.input_tokens > SYSTEM_TOKENS


def test_a_longer_breakpoint_reads_the_shared_part_and_writes_only_the_rest(emulator) -> None:
    client, _ = emulator
    document = "clause " * 800  # 1,400 tokens
    question_about = [
        {"type": "text", "text": document, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "is clause 3 binding?"},
    ]
    _ask(client, _system("1h"))  # the system prompt alone is cached
    usage = client.messages.create(
        model=SONNET,
        max_tokens=20,
        system=_system("1h"),
        messages=[{"role": "user", "content": question_about}],
    ).usage
    assert usage.cache_read_input_tokens == SYSTEM_TOKENS
    assert 1400 <= usage.cache_creation.ephemeral_1h_input_tokens <= 1400 + 3


def test_batch_requests_sharing_a_prefix_write_once_and_read_after(emulator) -> None:
    client, _ = emulator
    batch = client.messages.batches.create(
        requests=[
            {
                "custom_id": f"q{n}",
                "params": {
                    "model": SONNET,
                    "max_tokens": 20,
                    "system": _system("1h"),
                    "messages": [{"role": "user", "content": f"question {n}"}],
                },
            }
            for n in range(3)
        ]
    )
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
    usages = {
        r.custom_id: r.result.message.usage for r in client.messages.batches.results(batch.id)
    }
    assert usages["q0"].cache_creation.ephemeral_1h_input_tokens == SYSTEM_TOKENS
    for later in ("q1", "q2"):
        assert usages[later].cache_read_input_tokens == SYSTEM_TOKENS
        assert usages[later].cache_creation_input_tokens == 0
