"""Documented result lines through the real collection and real-time paths.

``fixtures/result_lines.jsonl`` holds one line per stop reason, per content block type the
SDK's ``Message`` can hold, per error type, expired and canceled, and answers to requests
that asked for structured output; each is checked against the SDK's own model. The lines
are served by the emulator as an ended batch (and, for the real-time route, as the answers
of ``POST /v1/messages``), and the pipeline's rows, retries and dead letters are asserted
line by line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, get_args

import orjson
import pyarrow as pa
import pytest
from anthropic.types import ContentBlock, StopReason
from anthropic.types.messages import MessageBatchIndividualResponse
from anthropic.types.shared.error_object import ErrorObject
from pydantic import BaseModel

from llm_pipelines.costs import default_price_table
from llm_pipelines.dispatch import collect
from llm_pipelines.dispatch.collect import collect_batch
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.dispatch.results import COMPLETE_STOP_REASONS, INCOMPLETE_STOP_REASONS
from llm_pipelines.dispatch.retries import RETRYABLE_ERROR_TYPES, retryable
from llm_pipelines.dispatch.structured import may_have_asked
from llm_pipelines.dispatch.submit import submit_partition
from llm_pipelines.emulator import EmulatorApp, EmulatorConfig, in_process_client
from llm_pipelines.providers import AnthropicProvider
from llm_pipelines.providers import anthropic as anthropic_provider
from llm_pipelines.providers.base import RequestResult
from llm_pipelines.resources import AnthropicResource
from llm_pipelines.storage import Lake, LandingZone, read_manifests
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    RETRIES,
    RETRIES_SCHEMA,
    TASKS,
    TASKS_FILE,
)

FIXTURES = Path(__file__).parent / "fixtures" / "result_lines.jsonl"
LINES: list[dict[str, Any]] = [json.loads(line) for line in FIXTURES.read_text().splitlines()]
BY_ID = {line["custom_id"]: line for line in LINES}
ANSWERED = [line["custom_id"] for line in LINES if line["result"]["type"] == "succeeded"]

SENTIMENT = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number"},
    },
    "required": ["sentiment", "score"],
    "additionalProperties": False,
}
"""The schema the ``json-*`` tasks but ``json-asked-in-prompt`` ask for (output_config)."""
STRUCTURED = {
    "json-valid": ('{"sentiment": "positive", "score": 0.9}', None),
    "json-breaks-schema": (None, "the answer breaks the schema at $.sentiment: 'ecstatic' is"),
    "json-cut-short": (None, "the answer is not JSON"),
    "json-refused": (None, "the answer is not JSON"),
}
"""(structured_output, the start of structured_output_error) of the format requests."""
RETRIED = {
    "error-rate_limit_error",
    "error-timeout_error",
    "error-api_error",
    "error-overloaded_error",
    "expired",
    "canceled",
}
"""Lines that go to retries/ for another attempt: the API was busy or broke, or never ran it."""
DEAD = {
    "error-invalid_request_error",
    "error-authentication_error",
    "error-billing_error",
    "error-permission_error",
    "error-not_found_error",
}
"""Lines dead-lettered at once: the request, the key or the account must change first."""


def _extras(model: Any, path: str = "$") -> list[str]:
    """Fields the SDK's models do not declare, anywhere in a validated line."""
    if isinstance(model, list):
        return [found for i, item in enumerate(model) for found in _extras(item, f"{path}[{i}]")]
    if not isinstance(model, BaseModel):
        return []
    found = [f"{path}.{name}" for name in model.model_extra or {}]
    for name in type(model).model_fields:
        found += _extras(getattr(model, name), f"{path}.{name}")
    return found


@pytest.mark.parametrize("line", LINES, ids=[line["custom_id"] for line in LINES])
def test_each_fixture_line_is_a_result_line_the_sdk_accepts(line: dict[str, Any]) -> None:
    parsed = MessageBatchIndividualResponse.model_validate(line, strict=True)
    assert _extras(parsed) == [], "every field is one the SDK knows"


def _members(annotated_union: Any) -> set[Any]:
    """The models of one of the SDK's discriminated unions (``Annotated[Union[...], ...]``)."""
    return set(get_args(get_args(annotated_union)[0]))


def _error_types() -> set[str]:
    """Every ``type`` of the SDK's ``ErrorObject`` union."""
    return {get_args(m.model_fields["type"].annotation)[0] for m in _members(ErrorObject)}


def test_the_fixtures_cover_every_stop_reason_block_type_error_type_and_outcome() -> None:
    parsed = [MessageBatchIndividualResponse.model_validate(line, strict=True) for line in LINES]
    messages = [item.result.message for item in parsed if item.result.type == "succeeded"]
    assert {type(block) for m in messages for block in m.content} == _members(ContentBlock)
    assert {m.stop_reason for m in messages} == set(get_args(StopReason))
    errors = {item.result.error.error.type for item in parsed if item.result.type == "errored"}
    assert errors == _error_types()
    assert {item.result.type for item in parsed} == {"succeeded", "errored", "expired", "canceled"}


def test_every_stop_reason_and_error_type_of_the_sdk_has_a_decided_outcome() -> None:
    # A new SDK adding a stop reason or an error type fails here until someone decides.
    assert set(get_args(StopReason)) == COMPLETE_STOP_REASONS | INCOMPLETE_STOP_REASONS
    assert not COMPLETE_STOP_REASONS & INCOMPLETE_STOP_REASONS
    retried = {
        error_type
        for error_type in _error_types()
        if retryable(RequestResult("x", "errored", None, error_type, ""))
    }
    assert retried == {t.removeprefix("error-") for t in RETRIED if t.startswith("error-")}
    assert retried <= RETRYABLE_ERROR_TYPES
    assert _error_types() - retried == {t.removeprefix("error-") for t in DEAD}


def test_requests_are_read_only_for_answers_that_may_be_structured_output() -> None:
    texts = ["Plain words.", '  {"a": 1}', "\n  plain, after blank lines", "", "[1, 2]"]
    texts += [" " * 70 + "{", "x {", "Plain but refused.", "Stopped to call a tool."]
    stops = ["end_turn"] * 5 + ["stop_sequence", "max_tokens", "refusal", "tool_use"]
    asked = may_have_asked(pa.array(texts), pa.array(stops))
    assert asked.tolist() == [False, True, False, True, True, True, False, True, True]


def _ask_for_structured_output(lake: Lake, day: str) -> None:
    """Give the ``json-*`` tasks' requests an ``output_config.format``.

    The task contract does not admit ``output_config`` yet (``LLMTask`` forbids fields it
    does not know), nor does the emulator, so the routed tasks are given the request a
    producer will send once it does; collection reads requests from there.
    """
    path = lake.path(TASKS, day, TASKS_FILE)
    tasks = lake.read_table([path])
    asked = {"format": {"type": "json_schema", "schema": SENTIMENT}}
    requests = [
        orjson.dumps({**orjson.loads(request), "output_config": asked}).decode()
        if task_id in STRUCTURED
        else request
        for task_id, request in zip(
            tasks["task_id"].to_pylist(), tasks["request"].to_pylist(), strict=True
        )
    ]
    column = tasks.schema.get_field_index("request")
    lake.write_table(path, tasks.set_column(column, "request", pa.array(requests, pa.string())))


def _assert_rows_keep_the_answers(results: pa.Table, route: str) -> None:
    """Each result row holds the whole answer of its fixture line, as the policy says."""
    rows = {row["task_id"]: row for row in results.to_pylist()}
    assert sorted(rows) == sorted(ANSWERED)
    for task_id, row in rows.items():
        message = BY_ID[task_id]["result"]["message"]
        content = message["content"]
        assert row["route"] == route
        assert json.loads(row["content_json"]) == content, task_id
        texts = [block["text"] for block in content if block["type"] == "text"]
        assert row["output_text"] == "".join(texts)
        calls = [block for block in content if block["type"] == "tool_use"]
        assert [(c["id"], c["name"], json.loads(c["input_json"])) for c in row["tool_calls"]] == [
            (call["id"], call["name"], call["input"]) for call in calls
        ], task_id
        assert (row["message_id"], row["model"]) == (message["id"], message["model"])
        assert (row["stop_reason"], row["stop_sequence"]) == (
            message["stop_reason"],
            message["stop_sequence"],
        )
        assert row["complete"] == (message["stop_reason"] in COMPLETE_STOP_REASONS)
        details = message.get("stop_details")
        assert (json.loads(row["stop_details"]) if row["stop_details"] else None) == details
        usage = message["usage"]
        assert row["output_tokens"] == usage["output_tokens"]
        assert row["thinking_tokens"] == usage.get("output_tokens_details", {}).get(
            "thinking_tokens"
        )
        assert row["cost_usd"] > 0, "answered is billed, complete or not"
        output, error = STRUCTURED.get(task_id, (None, None))
        assert row["structured_output"] == output, task_id
        if error is None:
            assert row["structured_output_error"] is None, task_id
        else:
            assert row["structured_output_error"].startswith(error), row["structured_output_error"]
    # The tool input's integer past 64 bits is kept digit for digit.
    assert "12345678901234567890123" in rows["stop-tool_use"]["tool_calls"][0]["input_json"]
    assert "(stop_reason max_tokens)" in rows["json-cut-short"]["structured_output_error"]
    assert "(stop_reason refusal)" in rows["json-refused"]["structured_output_error"]
    assert json.loads(rows["stop-refusal"]["stop_details"])["category"] == "cyber"


@pytest.mark.parametrize("line_by_line", [False, True], ids=["blocks", "line-by-line"])
def test_documented_result_lines_become_rows_retries_and_dead_letters(
    tmp_path: Path, day: str, routed_partition, monkeypatch: pytest.MonkeyPatch, line_by_line: bool
) -> None:
    if line_by_line:
        # A chunk per line, and answers that may be structured output checked chunk by
        # chunk rather than held to the end: the same rows, retries and dead letters.
        monkeypatch.setattr(anthropic_provider, "RESULTS_BLOCK_BYTES", 1)
        monkeypatch.setattr(collect, "HELD_BYTES", 0)
    lake = routed_partition([line["custom_id"] for line in LINES])
    app = EmulatorApp(EmulatorConfig(state_dir=str(tmp_path / "emulator")))
    provider = AnthropicProvider(in_process_client(app))
    submit_partition(lake, provider, day)
    _ask_for_structured_output(lake, day)
    [manifest] = read_manifests(lake, day)
    # The batch's results are the fixture lines: the emulator serves them as an ended batch.
    served = tmp_path / "served.jsonl"
    shutil.copy(FIXTURES, served)
    manifest.provider_batch_id = app.store.replay_batch(served).id

    stats = collect_batch(lake, provider, manifest, default_price_table())
    assert stats.counts == {"succeeded": len(ANSWERED), "errored": 9, "expired": 1, "canceled": 1}
    assert (stats.missing, stats.duplicates, stats.unexpected) == (0, 0, 0)

    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    _assert_rows_keep_the_answers(results, "batch")
    retries = lake.read_table(lake.files(RETRIES, day, ".parquet"), schema=RETRIES_SCHEMA)
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    assert set(retries["task_id"].to_pylist()) == RETRIED
    assert set(dead["task_id"].to_pylist()) == DEAD
    assert set(retries["attempt"].to_pylist()) == {2}
    for task_id, reason, request in zip(
        *(dead[c].to_pylist() for c in ("task_id", "reason", "payload")), strict=True
    ):
        error_type = task_id.removeprefix("error-")
        assert reason == f"{error_type}: a {error_type.replace('_', ' ')}"
        assert orjson.loads(request)["model"] == "claude-haiku-4-5", "replayable"
    for task_id, reason in zip(
        *(retries[c].to_pylist() for c in ("task_id", "reason")), strict=True
    ):
        assert reason.startswith(task_id.removeprefix("error-"))
    ledger = partition_ledger(lake, day)
    assert (ledger.valid, ledger.succeeded, ledger.retrying) == (len(LINES), len(ANSWERED), 6)
    assert (ledger.dead_lettered, ledger.lost, ledger.duplicated) == (5, 0, 0)


class FixtureAnswers:
    """WSGI middleware in front of the emulator: ``POST /v1/messages`` is answered with the
    fixture message the prompt names ("fixture <custom_id>"), as the API's JSON body."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/v1/messages":
            return self.app(environ, start_response)
        body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        name = body["messages"][0]["content"].removeprefix("fixture ")
        # json, not orjson: the tool input's integer past 64 bits goes out as it came in
        answer = json.dumps(BY_ID[name]["result"]["message"]).encode()
        start_response(
            "200 OK",
            [("content-type", "application/json"), ("content-length", str(len(answer)))],
        )
        return [answer]


def test_the_real_time_route_keeps_the_same_answers_in_the_same_columns(
    lake: Lake, day: str, materialize_assets, http_emulator
) -> None:
    url, _ = http_emulator(wrap=FixtureAnswers)
    tasks = [
        {
            "task_id": custom_id,
            "task_type": "chat_reply",
            "model": "claude-haiku-4-5",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": f"fixture {custom_id}"}],
            "requires_realtime": True,
        }
        for custom_id in ANSWERED
    ]
    LandingZone(lake).append(tasks, partition=day)
    anthropic = {"anthropic": AnthropicResource(base_url=url, max_retries=0)}
    materialize_assets(["raw_llm_events", "routed_tasks"], resources_override=anthropic)
    _ask_for_structured_output(lake, day)
    materialize_assets(["realtime_results"], resources_override=anthropic)

    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    _assert_rows_keep_the_answers(results, "realtime")
    assert not lake.files(DEAD_LETTER, day, ".parquet")
