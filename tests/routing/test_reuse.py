"""Reuse: an identical request already answered is sent once, and every task still ends once."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
import yaml

from llm_pipelines.dispatch.results import COMPLETE_STOP_REASONS
from llm_pipelines.emulator import FaultPlan
from llm_pipelines.resources import AnthropicResource, CostPolicyResource
from llm_pipelines.storage import Lake, LandingZone, read_manifests
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    TASKS,
    TASKS_FILE,
)

CYCLE = [
    "raw_llm_events",
    "routed_tasks",
    "realtime_results",
    "reused_results",
    "batch_submissions",
]
COLLECT = ["batch_results", "reused_results", "llm_cost_report"]


def _task(task_id: str, text: str, task_type: str = "bulk", **fields: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "task_type": task_type,
        "model": "claude-sonnet-5-5",
        "max_tokens": 60,
        "messages": [{"role": "user", "content": text}],
        **fields,
    }


def _by_id(lake: Lake, dataset: str, day: str, schema: Any = None) -> dict[str, dict[str, Any]]:
    if dataset == TASKS:
        table = lake.read_table([lake.path(TASKS, day, TASKS_FILE)])
    else:
        table = lake.read_table(lake.files(dataset, day, ".parquet"), schema=schema)
    return {row["task_id"]: row for row in table.to_pylist()}


def _collect(tick_sensor, materialize_assets) -> Any:
    last = None
    for request in tick_sensor().run_requests:
        last = materialize_assets(COLLECT, request.run_config)
    return last


def test_identical_requests_in_a_day_are_sent_once_and_answered_for_free(
    lake: Lake, day: str, materialize_assets, tick_sensor
) -> None:
    LandingZone(lake).append(
        [
            _task("bulk-a", "describe sku 1"),
            _task("bulk-a-again", "describe sku 1"),  # another producer, same request
            _task("chat-b", "hello there", task_type="chat_reply"),
            _task("chat-b-again", "hello there", task_type="chat_reply"),
            _task("bulk-c", "summarise ticket 7"),
            # The same request, but needed now: it is the one sent; the batch task reuses it.
            _task("urgent-c", "summarise ticket 7", requires_realtime=True),
            _task("bulk-d", "describe sku 2"),
        ],
        partition=day,
    )
    cycle = materialize_assets(CYCLE)
    routed = cycle.asset_materializations_for_node("routed_tasks")[0].metadata
    assert (routed["reuse"].value, routed["batch"].value, routed["realtime"].value) == (3, 2, 2)
    tasks = _by_id(lake, TASKS, day)
    assert {t: r["reuse_of"] for t, r in tasks.items() if r["route"] == "reuse"} == {
        "bulk-a-again": "bulk-a",
        "chat-b-again": "chat-b",
        "bulk-c": "urgent-c",
    }
    assert all(r["rule"] == "reuse" for r in tasks.values() if r["route"] == "reuse")
    # Copies of real-time answers are answered in the same cycle; the batch copy waits.
    reused = cycle.asset_materializations_for_node("reused_results")[0].metadata
    assert (reused["reused"].value, reused["waiting_for_source"].value) == (2, 1)
    assert sum(m.request_count for m in read_manifests(lake, day)) == 2

    report = _collect(tick_sensor, materialize_assets)
    results = _by_id(lake, RESULTS, day, RESULTS_SCHEMA)
    assert set(results) == set(tasks), "every task ends in exactly one result row"
    for copy, source in (("bulk-a-again", "bulk-a"), ("chat-b-again", "chat-b")):
        assert results[copy]["route"] == "reuse"
        for column in ("output_text", "content_json", "tool_calls", "message_id", "complete"):
            assert results[copy][column] == results[source][column], column
        assert results[copy]["content_json"].startswith('[{"type":"text"')
        assert results[copy]["output_tokens"] == results[source]["output_tokens"]
        assert results[copy]["cost_usd"] == 0
        assert results[copy]["sync_cost_usd"] == pytest.approx(results[source]["sync_cost_usd"])
        assert results[copy]["sync_cost_usd"] > 0
    checks = {c.check_name: c for c in report.get_asset_check_evaluations()}
    assert checks["conservation"].passed, checks["conservation"].metadata
    metadata = report.asset_materializations_for_node("llm_cost_report")[0].metadata
    reuse_sync = sum(r["sync_cost_usd"] for r in results.values() if r["route"] == "reuse")
    assert metadata["saved_usd_reuse"].value == pytest.approx(reuse_sync, abs=1e-6)
    assert metadata["cost_usd_route_reuse"].value == 0


def _answered_days_ago(
    lake: Lake, day: str, days: int, materialize_assets, tick_sensor, task_id: str
) -> str:
    """A partition ``days`` before ``day`` where ``task_id`` ("classify doc 42") was answered."""
    earlier = str(date.fromisoformat(day) - timedelta(days=days))
    LandingZone(lake).append([_task(task_id, "classify doc 42")], partition=earlier)
    materialize_assets(CYCLE, partition=earlier)
    for request in tick_sensor().run_requests:
        materialize_assets(COLLECT, request.run_config, partition=earlier)
    return earlier


def test_an_answer_from_an_earlier_day_is_reused_within_the_lookback(
    tmp_path: Path, lake: Lake, day: str, materialize_assets, tick_sensor
) -> None:
    first_day = _answered_days_ago(lake, day, 2, materialize_assets, tick_sensor, "monday-x")

    next_day = str(date.fromisoformat(day) - timedelta(days=1))
    LandingZone(lake).append(
        [_task("tuesday-x", "classify doc 42"), _task("tuesday-y", "classify doc 43")],
        partition=next_day,
    )
    cycle = materialize_assets(CYCLE, partition=next_day)
    routed = cycle.asset_materializations_for_node("routed_tasks")[0].metadata
    assert routed["reuse_from_earlier_days"].value == 1
    tasks = _by_id(lake, TASKS, next_day)
    assert (tasks["tuesday-x"]["reuse_of"], tasks["tuesday-x"]["reuse_partition"]) == (
        "monday-x",
        first_day,
    )
    # Answered in the daily cycle itself: the source is already in the lake.
    results = _by_id(lake, RESULTS, next_day, RESULTS_SCHEMA)
    earlier = _by_id(lake, RESULTS, first_day, RESULTS_SCHEMA)
    assert results["tuesday-x"]["output_text"] == earlier["monday-x"]["output_text"]
    assert results["tuesday-x"]["cost_usd"] == 0
    assert sum(m.request_count for m in read_manifests(lake, next_day)) == 1

    # With no lookback, the same request on a third day is sent again.
    third_day = day
    policy = tmp_path / "no-lookback.yaml"
    policy.write_text(yaml.safe_dump({"batch_turnaround_hours": 24, "reuse": {"lookback_days": 0}}))
    LandingZone(lake).append([_task("wednesday-x", "classify doc 42")], partition=third_day)
    override = {"cost_policy": CostPolicyResource(routing_policy_path=str(policy))}
    materialize_assets(CYCLE, partition=third_day, resources_override=override)
    assert _by_id(lake, TASKS, third_day)["wednesday-x"]["route"] == "batch"


def test_answers_in_result_files_of_an_earlier_release_are_reused(
    lake: Lake, day: str, materialize_assets, tick_sensor
) -> None:
    """Result files written before the answer's content, tool calls, structured output ...
    were kept lack those columns; reusing their answers gives nulls there, not a crash."""
    earlier = _answered_days_ago(lake, day, 1, materialize_assets, tick_sensor, "monday-x")
    added = ["message_id", "stop_sequence", "stop_details", "complete", "content_json"]
    added += ["tool_calls", "structured_output", "structured_output_error", "thinking_tokens"]
    for path in lake.files(RESULTS, earlier, ".parquet"):
        lake.write_table(path, lake.read_table([path]).drop_columns(added))

    LandingZone(lake).append([_task("tuesday-x", "classify doc 42")], partition=day)
    materialize_assets(CYCLE)
    reused = _by_id(lake, RESULTS, day, RESULTS_SCHEMA)["tuesday-x"]
    source = _by_id(lake, RESULTS, earlier)["monday-x"]
    assert (reused["route"], reused["output_text"]) == ("reuse", source["output_text"])
    assert reused["content_json"] is None and reused["tool_calls"] is None
    assert reused["complete"] == (source["stop_reason"] in COMPLETE_STOP_REASONS)


def test_excluded_task_types_are_never_reused(
    tmp_path: Path, lake: Lake, day: str, materialize_assets
) -> None:
    policy = tmp_path / "samples.yaml"
    policy.write_text(
        yaml.safe_dump(
            {"batch_turnaround_hours": 24, "reuse": {"exclude_task_types": ["offline_eval"]}}
        )
    )
    LandingZone(lake).append(
        [_task(f"sample-{n}", "judge answer 1", task_type="offline_eval") for n in range(3)],
        partition=day,
    )
    override = {"cost_policy": CostPolicyResource(routing_policy_path=str(policy))}
    materialize_assets(["raw_llm_events", "routed_tasks"], resources_override=override)
    assert {r["route"] for r in _by_id(lake, TASKS, day).values()} == {"batch"}


def test_a_copy_of_a_failed_request_is_dead_lettered_with_its_source(
    lake: Lake, day: str, materialize_assets, http_emulator
) -> None:
    # Every synchronous call fails (the SDK does not retry here): the real-time source is
    # dead-lettered, and so is the batch task that was going to reuse its answer.
    url, _ = http_emulator(FaultPlan(endpoint_error_rates={"messages": 1.0}, retry_after_ms=0))
    LandingZone(lake).append(
        [
            _task("urgent-e", "escalate order 9", requires_realtime=True),
            _task("bulk-e", "escalate order 9"),
        ],
        partition=day,
    )
    anthropic = AnthropicResource(base_url=url, max_retries=0)
    materialize_assets(CYCLE, resources_override={"anthropic": anthropic})
    dead = _by_id(lake, DEAD_LETTER, day, DEAD_LETTER_SCHEMA)
    assert dead["urgent-e"]["stage"] == "realtime"
    assert dead["bulk-e"]["stage"] == "reuse"
    assert "urgent-e" in dead["bulk-e"]["reason"]
    assert '"escalate order 9"' in dead["bulk-e"]["payload"], "replayable: the request is kept"
    report = materialize_assets(["llm_cost_report"], resources_override={"anthropic": anthropic})
    checks = {c.check_name: c for c in report.get_asset_check_evaluations()}
    assert checks["conservation"].passed
    assert checks["conservation"].metadata["dead_lettered"].value == 2
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    assert pc.sum(pc.equal(results["route"], "reuse")).as_py() in (None, 0)
