"""Collecting results: columnar decoding agrees with line-by-line, and nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import orjson
import pyarrow.compute as pc
import pytest
from anthropic.types import StopReason
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_pipelines.costs import default_price_table
from llm_pipelines.dispatch.collect import collect_batch
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.dispatch.submit import submit_partition
from llm_pipelines.emulator import EmulatorApp, EmulatorConfig, FaultPlan, in_process_client
from llm_pipelines.providers import AnthropicProvider
from llm_pipelines.providers import anthropic as anthropic_provider
from llm_pipelines.providers.anthropic import _decode_lines, decode_result_block
from llm_pipelines.storage import Lake, read_manifests
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    RETRIES,
    RETRIES_SCHEMA,
    BatchManifest,
)

TOKENS = st.one_of(st.none(), st.integers(min_value=0, max_value=5_000))
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
"""Any JSON: what a tool's input may hold."""
BLOCK = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("text"), "text": st.text(max_size=8)},
        optional={"citations": st.none() | st.lists(st.fixed_dictionaries({"cited_text": JSON}))},
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_use"), "id": st.just("tu_1"), "name": st.just("f")},
        optional={"input": st.dictionaries(st.text(max_size=3), JSON, max_size=3)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("thinking"), "thinking": st.text(max_size=5), "signature": st.just("s")}
    ),
    st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": st.text(max_size=5)}),
    st.fixed_dictionaries(
        {
            "type": st.just("web_search_tool_result"),
            "tool_use_id": st.just("srvtoolu_1"),
            "content": st.lists(st.dictionaries(st.sampled_from(["url", "title"]), JSON)),
        }
    ),
)
USAGE = st.fixed_dictionaries(
    {"input_tokens": TOKENS, "output_tokens": TOKENS},
    optional={
        "cache_creation_input_tokens": TOKENS,
        "cache_read_input_tokens": TOKENS,
        "cache_creation": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "ephemeral_5m_input_tokens": TOKENS,
                    "ephemeral_1h_input_tokens": TOKENS,
                },
            ),
        ),
        "service_tier": st.just("batch"),
        "output_tokens_details": st.fixed_dictionaries({"thinking_tokens": TOKENS}),
        "server_tool_use": st.fixed_dictionaries({"web_search_requests": TOKENS}),
    },
)
MESSAGE = st.fixed_dictionaries(
    {
        "id": st.just("msg_1"),
        "type": st.just("message"),
        "role": st.just("assistant"),
        "model": st.sampled_from(["claude-haiku-4-5", "claude-sonnet-5-5"]),
        "content": st.lists(BLOCK, max_size=3),
        "stop_reason": st.sampled_from([*get_args(StopReason), None]),
        "usage": USAGE,
    },
    optional={
        "stop_sequence": st.none() | st.text(max_size=4),
        "stop_details": st.none()
        | st.fixed_dictionaries(
            {"type": st.just("refusal"), "category": st.none() | st.just("cyber")},
            optional={"explanation": st.none() | st.text(max_size=6)},
        ),
    },
)
ERROR = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("error"),
            "error": st.fixed_dictionaries(
                {"type": st.sampled_from(["overloaded_error", "invalid_request_error"])},
                optional={"message": st.text(max_size=10)},
            ),
        }
    ),
    st.fixed_dictionaries({"type": st.just("api_error"), "message": st.text(max_size=10)}),
)
RESULT = st.one_of(
    st.fixed_dictionaries({"type": st.just("succeeded"), "message": MESSAGE}),
    st.fixed_dictionaries({"type": st.just("errored"), "error": ERROR}),
    st.fixed_dictionaries({"type": st.sampled_from(["expired", "canceled"])}),
)
LINE = st.fixed_dictionaries(
    {"custom_id": st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True), "result": RESULT}
)


@settings(max_examples=200, deadline=None)
@given(st.lists(LINE, min_size=1, max_size=12))
def test_columnar_decoding_matches_line_by_line(lines: list[dict[str, Any]]) -> None:
    block = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    assert decode_result_block(block).equals(_decode_lines(block))


@settings(max_examples=200, deadline=None)
@given(st.lists(LINE, min_size=1, max_size=12))
def test_every_content_block_and_tool_input_is_kept_as_returned(
    lines: list[dict[str, Any]],
) -> None:
    # Spaced out as a server might send it: the content is kept as the very bytes.
    block = b"".join(
        json.dumps(line, indent=1).replace("\n", " ").encode() + b"\n" for line in lines
    )
    table = decode_result_block(block)
    for line, row in zip(lines, table.to_pylist(), strict=True):
        message = line["result"].get("message")
        if message is None:
            assert row["content_json"] is None
            continue
        assert json.loads(row["content_json"]) == message["content"]
        assert row["content_json"] in block.decode()
        calls = [b for b in message["content"] if b["type"] == "tool_use"]
        assert [(c["id"], c["name"]) for c in row["tool_calls"]] == [
            (c["id"], c["name"]) for c in calls
        ]
        assert [json.loads(c["input_json"] or "null") for c in row["tool_calls"]] == [
            c.get("input") for c in calls
        ]
        details = message.get("stop_details")
        assert (json.loads(row["stop_details"]) if row["stop_details"] else None) == details
        assert row["stop_sequence"] == message.get("stop_sequence")
        thinking = message["usage"].get("output_tokens_details", {}).get("thinking_tokens")
        assert row["thinking_tokens"] == thinking


def test_a_block_parsed_in_pieces_decodes_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import llm_pipelines.providers.anthropic as provider

    usage = {"input_tokens": 7, "output_tokens": 3}
    # Every third answer thinks first and calls a tool with input of any shape: the reader
    # takes their fixed fields, the raw pass the rest, without falling back.
    call = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": [1, {"t": 2}]}}
    thought = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    lines = [
        {"custom_id": f"t-{i}", "result": {"type": "expired"}}
        if i % 7 == 0
        else {
            "custom_id": f"t-{i}",
            "result": {
                "type": "succeeded",
                "message": {
                    "content": [
                        *([thought] if i % 3 == 0 else []),
                        {"type": "text", "text": f"answer {i}"},
                        *([call] if i % 3 == 0 else []),
                    ],
                    "usage": usage,
                },
            },
        }
        for i in range(300)
    ]
    block = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    expected = _decode_lines(block)
    monkeypatch.setattr(provider, "RESULTS_PARSE_BYTES", 2048)  # about 20 pieces
    monkeypatch.setattr(provider, "_decode_lines", lambda _: pytest.fail("fell back"))
    table = decode_result_block(block)
    assert table.equals(expected)
    assert table.column("custom_id").to_pylist() == [f"t-{i}" for i in range(300)]
    calls = table.column("tool_calls").to_pylist()
    assert calls[3] == [{"id": "toolu_1", "name": "lookup", "input_json": '{"q":[1,{"t":2}]}'}]
    assert calls[1] == [] and table.column("output_text")[3].as_py() == "answer 3"


def test_a_line_the_json_reader_cannot_type_is_decoded_line_by_line() -> None:
    # A tool_use block whose "text" is a number: the reader types "text" as a string and
    # gives up on the block; text of non-text blocks is never used, so the line is fine.
    content = [{"type": "text", "text": "ok"}, {"type": "tool_use", "text": 5}]
    odd = {"custom_id": "a", "result": {"type": "succeeded", "message": {"content": content}}}
    block = orjson.dumps({"custom_id": "b", "result": {"type": "expired"}}) + b"\n"
    block += orjson.dumps(odd) + b"\n"
    table = decode_result_block(block)
    assert table.column("custom_id").to_pylist() == ["b", "a"]
    assert table.column("output_text").to_pylist()[1] == "ok"
    assert table.equals(_decode_lines(block))


def test_collect_counts_every_outcome_once_and_retries_or_dead_letters_the_rest(
    tmp_path: Path, day: str, routed_partition
) -> None:
    lake = routed_partition([f"t-{i}" for i in range(400)])
    faults = FaultPlan(seed=5, errored_rate=0.1, expired_rate=0.05, canceled_rate=0.05)
    app = EmulatorApp(EmulatorConfig(state_dir=str(tmp_path / "emulator"), faults=faults))
    provider = AnthropicProvider(in_process_client(app))
    submit_partition(lake, provider, day)
    [manifest] = read_manifests(lake, day)
    assert manifest.provider_batch_id is not None
    status = provider.get_batch(manifest.provider_batch_id)

    stats = collect_batch(lake, provider, manifest, default_price_table())
    assert stats.counts == {k: v for k, v in status.request_counts.items() if v}
    assert stats.counts["succeeded"] < 400 and stats.missing == stats.duplicates == 0

    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    retries = lake.read_table(lake.files(RETRIES, day, ".parquet"), schema=RETRIES_SCHEMA)
    assert results.num_rows == stats.counts["succeeded"] == stats.totals.rows
    # Non-retryable errors are dead-lettered; retryable ones, expired and canceled wait for
    # another attempt. Each failed request is in exactly one of the two.
    assert dead.num_rows + retries.num_rows == 400 - results.num_rows
    assert not set(dead["task_id"].to_pylist()) & set(retries["task_id"].to_pylist())
    assert pc.all(pc.greater(results["output_tokens"], 0)).as_py()
    assert set(results["requested_model"].to_pylist()) == {"claude-haiku-4-5"}
    assert {r.split(":")[0] for r in dead["reason"].to_pylist()} == {"invalid_request_error"}
    retried = {r.split(":")[0] for r in retries["reason"].to_pylist()}
    assert (
        {"expired", "canceled"}
        <= retried
        <= {
            "overloaded_error",
            "api_error",
            "rate_limit_error",
            "expired",
            "canceled",
        }
    )
    assert set(retries["attempt"].to_pylist()) == {2}
    # Every dead letter and retry carries the request, to replay or resend it.
    for request, task_id in zip(
        dead["payload"].to_pylist() + retries["request"].to_pylist(),
        dead["task_id"].to_pylist() + retries["task_id"].to_pylist(),
        strict=True,
    ):
        assert orjson.loads(request)["messages"][0]["content"] == f"grade answer {task_id[2:]}"
    ledger = partition_ledger(lake, day)
    assert (ledger.lost, ledger.duplicated, ledger.valid) == (0, 0, 400)


def _answered_batch(
    tmp_path: Path, day: str, routed_partition
) -> tuple[Lake, EmulatorApp, AnthropicProvider, BatchManifest, dict[str, bytes]]:
    """Three tasks submitted and answered; their result lines by task id, to replay."""
    lake = routed_partition(["t-0", "t-1", "t-2"])
    app = EmulatorApp(EmulatorConfig(state_dir=str(tmp_path / "emulator")))
    provider = AnthropicProvider(in_process_client(app))
    submit_partition(lake, provider, day)
    [manifest] = read_manifests(lake, day)
    batch_id = provider.get_batch(manifest.provider_batch_id or "").id
    with provider.client.messages.batches.with_streaming_response.results(batch_id) as stream:
        by_id = {orjson.loads(line)["custom_id"]: line for line in stream.read().splitlines()}
    return lake, app, provider, manifest, by_id


def test_repeated_unknown_and_absent_lines_are_counted_not_written(
    tmp_path: Path, day: str, routed_partition
) -> None:
    lake, app, provider, manifest, by_id = _answered_batch(tmp_path, day, routed_partition)
    # The provider repeats t-0, sends a stranger, and never answers t-2.
    replay = tmp_path / "replay.jsonl"
    stranger = by_id["t-1"].replace(b'"t-1"', b'"nobody"')
    replay.write_bytes(b"\n".join([by_id["t-0"], by_id["t-1"], by_id["t-0"], stranger]) + b"\n")
    manifest.provider_batch_id = app.store.replay_batch(replay).id

    stats = collect_batch(lake, provider, manifest, default_price_table())
    assert (stats.duplicates, stats.unexpected, stats.missing) == (1, 1, 1)
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    assert sorted(results["task_id"].to_pylist()) == ["t-0", "t-1"]
    # A request the provider never answered is retried in a later batch, not dropped.
    retries = lake.read_table(lake.files(RETRIES, day, ".parquet"), schema=RETRIES_SCHEMA)
    assert retries["task_id"].to_pylist() == ["t-2"]
    assert retries["reason"].to_pylist()[0].startswith("missing_result")
    assert pc.all(pc.is_valid(retries["request"])).as_py()


def test_repeats_across_chunks_and_a_success_without_message_are_handled(
    tmp_path: Path, day: str, monkeypatch: pytest.MonkeyPatch, routed_partition
) -> None:
    """Chunks of one line each: a repeat in a later chunk is still a repeat, and a line that
    claims success without a message, or has no outcome, is dead-lettered with a reason,
    not stored or lost."""
    monkeypatch.setattr(anthropic_provider, "RESULTS_BLOCK_BYTES", 1)
    lake, app, provider, manifest, by_id = _answered_batch(tmp_path, day, routed_partition)
    hollow = orjson.dumps({"custom_id": "t-2", "result": {"type": "succeeded"}})
    replay = tmp_path / "replay.jsonl"
    empty = orjson.dumps({"custom_id": "t-1", "result": {}})
    replay.write_bytes(b"\n".join([by_id["t-0"], by_id["t-0"], hollow, empty]) + b"\n")
    manifest.provider_batch_id = app.store.replay_batch(replay).id

    stats = collect_batch(lake, provider, manifest, default_price_table())
    assert (stats.duplicates, stats.unexpected, stats.missing) == (1, 0, 0)
    assert stats.counts == {"succeeded": 2, "malformed": 1}
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    assert results["task_id"].to_pylist() == ["t-0"]
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    assert sorted(dead["task_id"].to_pylist()) == ["t-1", "t-2"]
    assert all(reason.startswith("malformed_result") for reason in dead["reason"].to_pylist())
    ledger = partition_ledger(lake, day)
    assert (ledger.lost, ledger.duplicated) == (0, 0)
