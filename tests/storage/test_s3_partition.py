"""A whole partition through Dagster with the lake on S3 (moto's server, through s3fs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pyarrow.compute as pc
import pytest

from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.storage import LandingZone, read_manifests
from llm_pipelines.storage.datasets import DEAD_LETTER, DEAD_LETTER_SCHEMA, RESULTS, RESULTS_SCHEMA

CYCLE = ["raw_llm_events", "routed_tasks", "realtime_results", "batch_submissions"]


@pytest.fixture
def resources(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> dict[str, Any]:
    """The conftest fixtures (materialize_assets, tick_sensor) then run against S3."""
    return {
        "lake": LakeResource(url=f"s3://{s3_bucket}/prod", s3_endpoint_url=s3_endpoint),
        "cost_policy": CostPolicyResource(),
        "anthropic": AnthropicResource(emulator_dir=str(tmp_path / "emulator")),
    }


def test_partition_end_to_end_with_the_lake_on_s3(
    resources: dict[str, Any],
    s3_endpoint: str,
    s3_bucket: str,
    day: str,
    materialize_assets,
    tick_sensor,
) -> None:
    lake = resources["lake"].lake()
    assert lake.url.startswith("s3://")
    items = list(generate_tasks(day, 240, seed=11, invalid_share=0.04, duplicate_share=0.04))
    LandingZone(lake).append(items, partition=day, flush_rows=100)

    cycle = materialize_assets(CYCLE)
    intake = cycle.asset_materializations_for_node("raw_llm_events")[0].metadata
    assert intake["lines"].value == 240 and intake["landing_files"].value == 3
    valid = intake["valid"].value
    submitted = cycle.asset_materializations_for_node("batch_submissions")[0].metadata
    assert submitted["batches"].value >= 1

    tick = tick_sensor()
    assert {r.run_key for r in tick.run_requests} == {
        f"collect-{m.provider_batch_id}" for m in read_manifests(lake, day)
    }
    for request in tick.run_requests:
        collected = materialize_assets(["batch_results", "llm_cost_report"], request.run_config)
        checks = {c.check_name: c for c in collected.get_asset_check_evaluations()}
        check = checks["conservation"]

    assert check.passed, check.metadata
    ledger = {k: v.value for k, v in check.metadata.items()}
    assert ledger["lost"] == 0 and ledger["duplicated"] == 0 and ledger["in_flight"] == 0
    assert ledger["valid"] == valid
    assert ledger["succeeded"] + ledger["dead_lettered"] == valid

    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    assert set(results["route"].to_pylist()) == {"batch", "realtime"}
    assert pc.all(pc.greater(results["cost_usd"], 0)).as_py()
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    assert dead.num_rows == intake["invalid"].value > 0

    # Every dataset really is in the bucket, under the lake's prefix.
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    datasets = {key.split("/")[1] for key in keys}
    assert {"landing", "events", "tasks", "batches", "results", "dead_letter"} <= datasets
    assert all(key.startswith("prod/") for key in keys)
    assert not [key for key in keys if "/.tmp-" in key], "no temporary objects left behind"
