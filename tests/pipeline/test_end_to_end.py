"""One partition through every asset and the sensor, with conservation asserted."""

from __future__ import annotations

import collections

import pyarrow.compute as pc

from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    EVENTS,
    RESULTS,
    RESULTS_SCHEMA,
    read_manifests,
)


def _collect_all(tick_sensor, materialize_assets) -> list[str]:
    tick = tick_sensor()
    keys = []
    for request in tick.run_requests:
        keys.append(request.run_key)
        materialize_assets(["batch_results", "llm_cost_report"], request.run_config)
    return keys


def test_day_end_to_end_conserves_every_task(
    lake: Lake, day, materialize_assets, tick_sensor
) -> None:
    items = list(generate_tasks(day, 400, seed=3, invalid_share=0.05, duplicate_share=0.05))
    LandingZone(lake).append(items, partition=day, flush_rows=150)

    cycle = materialize_assets(
        ["raw_llm_events", "routed_tasks", "realtime_results", "batch_submissions"]
    )
    intake = cycle.asset_materializations_for_node("raw_llm_events")[0].metadata
    assert intake["lines"].value == 400
    invalid = intake["invalid"].value
    duplicates = intake["duplicates"].value
    assert invalid > 0 and duplicates > 0
    valid = intake["valid"].value
    assert valid + invalid + duplicates == 400

    run_keys = _collect_all(tick_sensor, materialize_assets)
    manifests = read_manifests(lake, day)
    assert run_keys == [f"collect-{m.provider_batch_id}" for m in manifests]

    events = lake.read_table(lake.files(EVENTS, day, ".parquet"), ["task_id"])
    valid_ids = collections.Counter(events["task_id"].to_pylist())
    assert len(valid_ids) == valid and max(valid_ids.values()) == 1

    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    intake_dead = dead.filter(pc.equal(dead["stage"], "intake"))
    later_dead = dead.filter(pc.not_equal(dead["stage"], "intake"))
    assert intake_dead.num_rows == invalid
    assert all(reason for reason in intake_dead["reason"].to_pylist())

    terminal = collections.Counter(
        results["task_id"].to_pylist() + later_dead["task_id"].to_pylist()
    )
    assert set(terminal) == set(valid_ids), "every valid task ends in a result or dead letter"
    assert max(terminal.values()) == 1, "no task ends twice"
    routes = set(results["route"].to_pylist())
    assert routes == {"batch", "realtime"}
    assert pc.all(pc.greater(results["cost_usd"], 0)).as_py()
    batch_rows = results.filter(pc.equal(results["route"], "batch"))
    assert pc.all(pc.less(batch_rows["cost_usd"], batch_rows["sync_cost_usd"])).as_py(), (
        "batch results are discounted against the synchronous price"
    )


def test_conservation_check_passes_in_dagster(lake: Lake, day, materialize_assets, tick_sensor):
    LandingZone(lake).append(generate_tasks(day, 60, seed=5), partition=day)
    materialize_assets(["raw_llm_events", "routed_tasks", "realtime_results", "batch_submissions"])
    _collect_all(tick_sensor, materialize_assets)
    result = materialize_assets(["llm_cost_report"])
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    check = checks["conservation"]
    assert check.passed, check.metadata
    assert check.metadata["lost"].value == 0
    report = result.asset_materializations_for_node("llm_cost_report")[0].metadata
    assert report["savings_pct"].value > 0
    assert report["all_sync_cost_usd"].value > report["cost_usd"].value


def test_rerunning_the_cycle_submits_nothing_twice(lake: Lake, day, materialize_assets) -> None:
    LandingZone(lake).append(generate_tasks(day, 80, seed=9), partition=day)
    cycle = ["raw_llm_events", "routed_tasks", "realtime_results", "batch_submissions"]
    first = materialize_assets(cycle)
    second = materialize_assets(cycle)
    sent = first.asset_materializations_for_node("batch_submissions")[0].metadata
    again = second.asset_materializations_for_node("batch_submissions")[0].metadata
    assert sent["requests"].value > 0
    assert again["requests"].value == 0
    assert again["already_submitted"].value == sent["requests"].value
    answered = first.asset_materializations_for_node("realtime_results")[0].metadata
    realtime = second.asset_materializations_for_node("realtime_results")[0].metadata
    assert answered["tasks"].value > 0
    assert realtime["chunks_written"].value == 0 and realtime["tasks"].value == 0
    assert realtime["already_answered"].value == answered["tasks"].value
