"""batch_completion_sensor through sensor contexts: run keys, cursor, waiting."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.resources import AnthropicResource
from llm_pipelines.sensors import batch_completion_sensor
from llm_pipelines.sensors.batch_completion import FULL_SCAN_EVERY, CompletionCursor
from llm_pipelines.storage import Lake, LandingZone, read_manifests

CYCLE = ["raw_llm_events", "routed_tasks", "realtime_results", "batch_submissions"]


def test_one_run_request_per_ended_batch_with_stable_run_keys(
    lake: Lake, day: str, materialize_assets, tick_sensor
) -> None:
    LandingZone(lake).append(generate_tasks(day, 120, seed=1), partition=day)
    materialize_assets(CYCLE)
    manifests = read_manifests(lake, day)
    assert manifests

    first = tick_sensor()
    expected = {f"collect-{m.provider_batch_id}" for m in manifests}
    assert {r.run_key for r in first.run_requests} == expected
    for request in first.run_requests:
        assert request.partition_key == day
        [batch_id] = request.run_config["ops"]["batch_results"]["config"]["batch_ids"]
        assert request.run_key == f"collect-{batch_id}"
    assert CompletionCursor.parse(first.cursor).oldest_open == day

    # Until collected, the same batches are asked for under the same keys (the daemon
    # skips keys it has already launched), so a slow run never makes a second one.
    second = tick_sensor(first.cursor)
    assert {r.run_key for r in second.run_requests} == expected

    for request in first.run_requests:
        materialize_assets(["batch_results"], request.run_config)
    third = tick_sensor(second.cursor)
    assert third.run_requests == []
    assert CompletionCursor.parse(third.cursor).ticks == 3


def test_running_batches_are_left_to_a_later_tick(
    tmp_path, lake: Lake, day: str, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    slow = {
        **resources,
        "anthropic": AnthropicResource(
            emulator_dir=str(tmp_path / "emulator"), emulator_batch_latency_s=3_600
        ),
    }
    LandingZone(lake).append(generate_tasks(day, 50, seed=2), partition=day)
    from llm_pipelines.definitions import build_definitions

    defs = build_definitions(slow)
    assert (
        defs.resolve_job_def("daily_batch_cycle")
        .execute_in_process(partition_key=day, instance=instance)
        .success
    )
    context = dg.build_sensor_context(instance=instance, resources=slow)
    result = batch_completion_sensor(context)
    assert result.run_requests == []
    assert "still running" in (result.skip_reason.skip_message if result.skip_reason else "")
    assert CompletionCursor.parse(result.cursor).oldest_open == day


def test_cursor_skips_closed_partitions_between_full_scans(
    lake: Lake, materialize_assets, tick_sensor, day: str
) -> None:
    LandingZone(lake).append(generate_tasks(day, 40, seed=4), partition=day)
    materialize_assets(CYCLE)
    # A cursor past this partition, mid-way between full scans, does not look back...
    ahead = json.dumps({"oldest_open": "2026-12-01", "ticks": 1})
    assert tick_sensor(ahead).run_requests == []
    # ...but the periodic full scan finds batches submitted into older partitions.
    due = json.dumps({"oldest_open": "2026-12-01", "ticks": FULL_SCAN_EVERY})
    assert tick_sensor(due).run_requests
