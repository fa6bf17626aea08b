"""The Definitions object loads and holds every asset, check, job, sensor and schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg

from llm_pipelines.definitions import defs

ASSETS = {
    "raw_llm_events",
    "routed_tasks",
    "realtime_results",
    "batch_submissions",
    "batch_results",
    "reused_results",
    "llm_cost_report",
}


def test_definitions_load_everything() -> None:
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    # The pipeline's own; workloads (tests/workloads) add theirs beside them.
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} >= ASSETS
    assert "batch_completion_sensor" in {s.name for s in repo.sensor_defs}
    assert {"nightly_batch_cycle", "nightly_sweep"} <= {s.name for s in repo.schedule_defs}
    assert {
        "daily_batch_cycle",
        "collect_batch_results",
        "resubmit_batch_retries",
        "replay_dead_letters",
        "cancel_batches",
        "sweep_abandoned_files",
    } <= {j.name for j in repo.get_all_jobs()}
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"conservation", "daily_budget", "dead_letter_rate"} <= checks


def test_every_asset_has_kinds_group_and_description() -> None:
    for spec in defs.resolve_all_asset_specs():
        assert spec.kinds, spec.key
        assert spec.group_name and spec.group_name != "default", spec.key
        assert spec.description, spec.key
        # Daily partitions everywhere but the model catalog: one current picture of the
        # provider's models, which every day's intake and routing read.
        assert (spec.partitions_def is None) == (spec.key == dg.AssetKey("model_catalog")), spec.key


def test_nightly_schedule_targets_the_day_that_just_ended() -> None:
    schedule = defs.resolve_schedule_def("nightly_batch_cycle")
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    )
    [request] = list(schedule.evaluate_tick(context).run_requests or [])
    assert request.partition_key == "2026-11-23"


HEAVY_AT_RUN_TIME = (
    "anthropic",  # the SDK: seconds; the resource builds a client when a run needs one
    "httpx2",
    "aiohttp",
    "pandas",  # pyarrow imports it when an array is first built
    "jsonschema",
    "llm_pipelines.emulator",
    "llm_pipelines.providers.contract",
    "fastapi",
    "starlette",
    "uvicorn",
    "s3fs",
    "botocore",
    "rich",
)
"""Packages the code location must not import when it loads: every ``dagster definitions
validate``, every run's start and every reload in the UI would pay for them."""


def test_code_location_loads_without_run_time_packages() -> None:
    # A fresh interpreter: this test process has imported everything already. What loading
    # costs in seconds is measured by benchmarks/code_location.py, not asserted here. (A
    # package's submodule is never loaded without the package, so the names suffice.)
    script = (
        "import json, sys, dagster as dg\n"
        "from llm_pipelines.definitions import defs\n"
        "dg.Definitions.validate_loadable(defs)\n"
        f"print(json.dumps([name for name in {HEAVY_AT_RUN_TIME!r} if name in sys.modules]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout.splitlines()[-1]) == []
