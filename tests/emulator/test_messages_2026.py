"""The Messages API as a client sees it today (API 2026-10-21), through the official SDK."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

import anthropic
import jsonschema
import pytest
from support import MODEL, error_of, params

from llm_pipelines.emulator import EmulatorConfig, FaultPlan, in_process_client


def png(width: int, height: int) -> str:
    """A real (tiny-bodied) PNG of the given size, base64."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    body = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + body).decode()


def pdf(pages: int) -> str:
    objects = "".join(f"{n} 0 obj << /Type /Page /Parent 1 0 R >> endobj\n" for n in range(pages))
    return base64.b64encode(
        f"%PDF-1.4\n1 0 obj << /Type /Pages /Count {pages} >> endobj\n{objects}%%EOF".encode()
    ).decode()


def test_removed_and_unknown_fields_are_refused_with_the_reason(
    client: anthropic.Anthropic,
) -> None:
    status, kind, message = error_of(
        lambda: client.messages.create(**params(), extra_body={"temperature": 0.3})
    )
    assert (status, kind) == (400, "invalid_request_error")
    assert message.startswith("temperature: removed from the Messages API in version 2026-10-21")
    bad_block = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]}]
    status, kind, message = error_of(
        lambda: client.messages.create(model=MODEL, max_tokens=5, messages=bad_block)
    )
    assert (status, kind, message) == (
        400,
        "invalid_request_error",
        "messages.0.content.1.text: required field missing",
    )


def test_an_invalid_request_in_a_batch_errors_alone_when_the_batch_ends(
    client: anthropic.Anthropic,
) -> None:
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "good", "params": params("fine")},
            {"custom_id": "bad", "params": {**params(), "top_k": 3}},
            {"custom_id": "empty", "params": params(max_tokens=5) | {"messages": []}},
            {"custom_id": "retired", "params": params(model="claude-sonnet-4-5")},
        ]
    )
    assert batch.request_counts.processing == 4  # accepted whole: checked asynchronously
    ended = client.messages.batches.retrieve(batch.id)
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (1, 3)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["good"].type == "succeeded"
    bad = results["bad"]
    assert bad.type == "errored" and bad.error.error.type == "invalid_request_error"
    assert bad.error.error.message.startswith("top_k: removed from the Messages API")
    assert results["empty"].error.error.message == "messages: must hold at least one message"
    assert results["retired"].error.error.type == "not_found_error"


def test_models_are_the_current_lineup_with_lifecycle(client: anthropic.Anthropic) -> None:
    listed = list(client.models.list())
    ids = [m.id for m in listed]
    assert {"claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5-1"} <= set(
        ids
    )
    assert {m.lifecycle for m in listed} <= {"active", "deprecated"}  # retired: only on request
    opus_45 = client.models.retrieve("claude-opus-4-5")
    assert opus_45.id == "claude-opus-4-5-20251101" and opus_45.lifecycle == "deprecated"
    assert opus_45.deprecated_at is not None and opus_45.retires_at is not None
    sonnet_45 = client.models.retrieve("claude-sonnet-4-5-20250929")
    assert (
        sonnet_45.lifecycle == "retired" and sonnet_45.retires_at.date().isoformat() == "2026-11-30"
    )
    haiku = client.models.retrieve("claude-haiku-4-5-20251001")
    assert (haiku.id, haiku.line, haiku.max_tokens, haiku.max_input_tokens) == (
        "claude-haiku-4-5-20251001",
        "haiku",
        64_000,
        200_000,
    )
    assert haiku.capabilities is not None and haiku.capabilities.batch.supported
    retired = list(client.models.list(lifecycle=["retired"]))
    assert "claude-sonnet-4-5-20250929" in {m.id for m in retired}
    assert error_of(lambda: client.models.retrieve("claude-3-5-haiku"))[:2] == (
        404,
        "not_found_error",
    )
    page = client.models.list(limit=2)
    assert len(page.data) == 2 and page.has_more and page.first_id == ids[0]
    after = client.models.list(limit=2, after_id=page.last_id)
    assert [m.id for m in after.data] == ids[2:4]


def test_retired_unknown_and_over_limit_requests_answer_as_the_api(
    client: anthropic.Anthropic,
) -> None:
    for model in ("claude-sonnet-4-5", "claude-3-5-haiku", "claude-nonexistent"):
        status, kind, message = error_of(lambda m=model: client.messages.create(**params(model=m)))
        assert (status, kind, message) == (404, "not_found_error", f"model: {model}")
    status, kind, message = error_of(
        lambda: client.messages.create(
            **params(model="claude-haiku-4-5", max_tokens=200_000), timeout=30
        )
    )
    assert (status, kind) == (400, "invalid_request_error") and "64000" in message
    warm = client.messages.create(**params(max_tokens=0))  # documented: pre-warms the cache
    assert warm.content == [] and warm.usage.output_tokens == 0
    dated = client.messages.create(**params(model="claude-haiku-4-5-20251001"))
    assert dated.model == "claude-haiku-4-5-20251001"


def test_answer_length_is_a_real_answers_not_a_share_of_max_tokens(
    client: anthropic.Anthropic,
) -> None:
    lengths = [
        client.messages.create(
            **params(f"question {i}", max_tokens=60_000), timeout=30
        ).usage.output_tokens
        for i in range(30)
    ]
    assert max(lengths) < 3_000 and len(set(lengths)) > 10


def test_a_retry_after_max_tokens_draws_a_new_length(client: anthropic.Anthropic) -> None:
    first, cut = next(
        (message, request)
        for request in (params(f"story {i}", max_tokens=250) for i in range(50))
        if (message := client.messages.create(**request)).stop_reason == "max_tokens"
    )
    retries = [client.messages.create(**cut) for _ in range(20)]
    assert retries[0].content != first.content  # a retry is a new attempt, a new length
    finished = [m for m in retries if m.stop_reason == "end_turn"]
    assert finished  # a client that retries gets there, and then keeps that answer
    assert all(m.content == finished[0].content for m in retries[retries.index(finished[0]) :])
    short = params("hi", max_tokens=4_000)
    once, again = client.messages.create(**short), client.messages.create(**short)
    assert once.stop_reason == "end_turn" and once.content == again.content  # no retry: same


def test_streaming_is_what_the_sdk_accumulates(client: anthropic.Anthropic) -> None:
    request = params("stream me", max_tokens=300)
    whole = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == whole.content[0].text and len(texts) > 1
    assert final.model_dump() == whole.model_dump()
    events = [e.type for e in client.messages.create(**request, stream=True)]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert {
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
    } <= set(events)


def test_count_tokens_counts_the_prompt_as_create_bills_it(client: anthropic.Anthropic) -> None:
    request = params("Where is my parcel?", max_tokens=20)
    counted = client.messages.count_tokens(model=MODEL, messages=request["messages"])
    assert counted.input_tokens == client.messages.create(**request).usage.input_tokens
    assert (
        error_of(
            lambda: client.messages.count_tokens(
                model="claude-sonnet-4-5", messages=request["messages"]
            )
        )[0]
        == 404
    )


def test_images_and_documents_count_like_the_docs_say(client: anthropic.Anthropic) -> None:
    def tokens(block: dict[str, Any]) -> int:
        content = [block, {"type": "text", "text": "?"}]
        return client.messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": content}]
        ).input_tokens

    image = tokens(
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": png(1000, 750)},
        }
    )
    assert 1000 <= image <= 1000 + 10  # width * height / 750
    big = tokens(
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": png(4000, 3000)},
        }
    )
    assert big < 1_700  # scaled down first
    three = tokens(
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": pdf(3)},
        }
    )
    one = tokens(
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": pdf(1)},
        }
    )
    assert three > 2.5 * one > 0
    text = tokens(
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "x" * 4000},
        }
    )
    assert 1000 <= text <= 1010


def test_stop_sequences_are_honoured(client: anthropic.Anthropic) -> None:
    stops = [
        client.messages.create(
            **params(f"list {i}", max_tokens=2_000, stop_sequences=["END", "###"])
        )
        for i in range(20)
    ]
    stopped = [m for m in stops if m.stop_reason == "stop_sequence"]
    assert stopped and all(m.stop_sequence in {"END", "###"} for m in stopped)
    assert all(m.stop_sequence is None for m in stops if m.stop_reason != "stop_sequence")
    assert all("END" not in m.content[0].text for m in stopped)


WEATHER = {
    "name": "get_weather",
    "description": "Weather for a place.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "when": {"type": "string", "format": "date"},
            "where": {
                "type": "object",
                "properties": {
                    "lat": {"type": "number"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["lat"],
            },
        },
        "required": ["city", "unit", "where"],
    },
}


def follows(value: Any, schema: dict[str, Any]) -> bool:
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return validator.is_valid(value)


def test_a_forced_tool_is_called_with_input_following_its_schema(
    client: anthropic.Anthropic,
) -> None:
    for choice in ({"type": "tool", "name": "get_weather"}, {"type": "any"}):
        for i in range(5):
            message = client.messages.create(
                **params(f"weather {i}?", max_tokens=500), tools=[WEATHER], tool_choice=choice
            )
            assert message.stop_reason == "tool_use"
            call = message.content[-1]
            assert call.type == "tool_use" and call.name == "get_weather"
            assert call.id.startswith("toolu_") and follows(call.input, WEATHER["input_schema"])
    auto = {
        client.messages.create(**params(f"q{i}", max_tokens=500), tools=[WEATHER]).stop_reason
        for i in range(20)
    }
    assert auto == {"tool_use", "end_turn"}  # auto: the model may answer or call
    status, _, message = error_of(
        lambda: client.messages.create(
            **params(), tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"}
        )
    )
    assert status == 400 and "nope" in message


def test_structured_output_is_json_following_the_schema(client: anthropic.Anthropic) -> None:
    schema = {**WEATHER["input_schema"], "additionalProperties": False}
    for i in range(5):
        message = client.messages.create(
            **params(f"report {i}", max_tokens=2_000),
            output_config={"format": {"type": "json_schema", "schema": schema}},
        )
        assert message.stop_reason == "end_turn"
        assert follows(json.loads(message.content[0].text), schema)


def test_thinking_comes_first_signed_and_billed(client: anthropic.Anthropic) -> None:
    for model, thinking in (
        ("claude-haiku-4-5", {"type": "enabled", "budget_tokens": 2_000}),
        (MODEL, {"type": "adaptive"}),
    ):
        thought = [
            client.messages.create(
                **params(f"think {i}", max_tokens=8_000, model=model), thinking=thinking
            )
            for i in range(4)
        ]
        message = next(m for m in thought if m.content[0].type == "thinking")
        block = message.content[0]
        assert block.thinking and block.signature and message.content[-1].type == "text"
        tokens = message.usage.output_tokens_details.thinking_tokens
        assert 0 < tokens < message.usage.output_tokens
    status, _, reason = error_of(
        lambda: client.messages.create(
            **params(max_tokens=2_000), thinking={"type": "enabled", "budget_tokens": 1_024}
        )
    )
    assert status == 400 and reason.startswith("thinking.type: 'enabled' is not supported")


def test_models_refuse_what_they_do_not_support(client: anthropic.Anthropic) -> None:
    status, _, reason = error_of(
        lambda: client.messages.create(
            **params(model="claude-sonnet-5-5"), tools=[WEATHER], tool_choice={"type": "any"}
        )
    )
    assert status == 400 and "forced tool use" in reason
    status, _, reason = error_of(
        lambda: client.messages.create(
            **params(model="claude-haiku-4-5"), output_config={"effort": "low"}
        )
    )
    assert status == 400 and reason.startswith("output_config.effort")


@pytest.mark.parametrize("reason", ["pause_turn", "refusal", "model_context_window_exceeded"])
def test_rare_stop_reasons_come_from_the_fault_plan(tmp_path, reason: str) -> None:
    config = EmulatorConfig(
        state_dir=str(tmp_path / "e"), faults=FaultPlan(stop_reason_rates={reason: 1.0})
    )
    client = in_process_client(config, max_retries=0)
    message = client.messages.create(**params(max_tokens=500))
    assert message.stop_reason == reason
    if reason == "refusal":
        assert message.stop_details is not None and message.stop_details.type == "refusal"
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params()}])
    [line] = list(client.messages.batches.results(batch.id))
    assert line.result.message.stop_reason == reason
