"""Collecting results: columnar decoding agrees with line-by-line, and nothing is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_pipelines.costs import default_price_table
from llm_pipelines.dispatch.collect import collect_batch
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.dispatch.submit import submit_partition
from llm_pipelines.emulator import EmulatorApp, EmulatorConfig, FaultPlan, in_process_client
from llm_pipelines.intake import ingest_partition
from llm_pipelines.providers import AnthropicProvider
from llm_pipelines.providers import anthropic as anthropic_provider
from llm_pipelines.providers.anthropic import _decode_lines, decode_result_block
from llm_pipelines.routing import default_policy
from llm_pipelines.routing.route import route_partition
from llm_pipelines.storage import Lake, LandingZone, read_manifests
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    RETRIES,
    RETRIES_SCHEMA,
    BatchManifest,
    utcnow,
)

TOKENS = st.one_of(st.none(), st.integers(min_value=0, max_value=5_000))
BLOCK = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=8)}),
    st.fixed_dictionaries(
        {"type": st.just("tool_use"), "id": st.just("tu_1"), "name": st.just("f")},
        optional={
            "input": st.dictionaries(st.text(max_size=3), st.integers(-1000, 1000), max_size=2)
        },
    ),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": st.text(max_size=5)}),
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
    },
)
MESSAGE = st.fixed_dictionaries(
    {
        "id": st.just("msg_1"),
        "type": st.just("message"),
        "role": st.just("assistant"),
        "model": st.sampled_from(["claude-haiku-4-5", "claude-sonnet-5-5"]),
        "content": st.lists(BLOCK, max_size=3),
        "stop_reason": st.sampled_from(["end_turn", "max_tokens", None]),
        "usage": USAGE,
    }
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


def test_a_block_parsed_in_pieces_decodes_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import llm_pipelines.providers.anthropic as provider

    usage = {"input_tokens": 7, "output_tokens": 3}
    lines = [
        {"custom_id": f"t-{i}", "result": {"type": "expired"}}
        if i % 7 == 0
        else {
            "custom_id": f"t-{i}",
            "result": {
                "type": "succeeded",
                "message": {"content": [{"type": "text", "text": f"answer {i}"}], "usage": usage},
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


def _routed_partition(tmp_path: Path, day: str, count: int) -> Lake:
    """A lake with ``count`` batchable tasks (``t-<i>``: "grade answer <i>") landed and routed."""
    lake = Lake(str(tmp_path / "lake"))
    tasks = [
        {
            "task_id": f"t-{i}",
            "task_type": "offline_eval",
            "model": "claude-haiku-4-5",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": f"grade answer {i}"}],
        }
        for i in range(count)
    ]
    LandingZone(lake).append(tasks, partition=day)
    ingest_partition(lake, day)
    route_partition(lake, day, default_policy(), default_price_table(), utcnow())
    return lake


def test_collect_counts_every_outcome_once_and_retries_or_dead_letters_the_rest(
    tmp_path: Path, day: str
) -> None:
    lake = _routed_partition(tmp_path, day, 400)
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
    tmp_path: Path, day: str
) -> tuple[Lake, EmulatorApp, AnthropicProvider, BatchManifest, dict[str, bytes]]:
    """Three tasks submitted and answered; their result lines by task id, to replay."""
    lake = _routed_partition(tmp_path, day, 3)
    app = EmulatorApp(EmulatorConfig(state_dir=str(tmp_path / "emulator")))
    provider = AnthropicProvider(in_process_client(app))
    submit_partition(lake, provider, day)
    [manifest] = read_manifests(lake, day)
    batch_id = provider.get_batch(manifest.provider_batch_id or "").id
    with provider.client.messages.batches.with_streaming_response.results(batch_id) as stream:
        by_id = {orjson.loads(line)["custom_id"]: line for line in stream.read().splitlines()}
    return lake, app, provider, manifest, by_id


def test_repeated_unknown_and_absent_lines_are_counted_not_written(
    tmp_path: Path, day: str
) -> None:
    lake, app, provider, manifest, by_id = _answered_batch(tmp_path, day)
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
    tmp_path: Path, day: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of one line each: a repeat in a later chunk is still a repeat, and a line that
    claims success without a message, or has no outcome, is dead-lettered with a reason,
    not stored or lost."""
    monkeypatch.setattr(anthropic_provider, "RESULTS_BLOCK_BYTES", 1)
    lake, app, provider, manifest, by_id = _answered_batch(tmp_path, day)
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
