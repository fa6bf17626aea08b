"""Per-request failures: retried in later batches with an attempt counter, or dead-lettered."""

from __future__ import annotations

import dagster as dg
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.storage import read_manifests
from llm_pipelines.storage.datasets import (
    BATCHES,
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    RETRIES,
    RETRIES_SCHEMA,
)

PLAN = """
seed: 11
errored_rate: 0.3
non_retryable_error_share: 0.3
expired_rate: 0.1
canceled_rate: 0.1
"""


def test_failures_are_retried_in_later_batches_then_dead_lettered(
    day: str, instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    resources = fault_resources(PLAN, max_batch_requests=100)
    lake = resources["lake"].lake()
    daemon = start_day(resources, instance, 240, seed=3)

    # First collection round only: failures wait in retries/, counted, not lost.
    first = daemon.evaluate()
    assert {r.job_name for r in first.run_requests} == {"collect_batch_results"}
    for request in first.run_requests:
        assert daemon.launch(request).success
    waiting = partition_ledger(lake, day)
    assert waiting.retrying > 0 and waiting.in_flight == 0 and waiting.holds, waiting
    report = daemon.run("collect_batch_results", day)
    checks = {c.check_name: c for c in report.get_asset_check_evaluations()}
    assert checks["conservation"].passed
    assert checks["conservation"].metadata["retrying"].value == waiting.retrying

    ledger = daemon.drive(day)
    assert ledger.holds and ledger.open == 0
    assert ledger.succeeded + ledger.dead_lettered == ledger.valid

    manifests = read_manifests(lake, day)
    assert {m.attempt for m in manifests} == {1, 2, 3}
    retries = lake.read_table(lake.files(RETRIES, day, ".parquet"), schema=RETRIES_SCHEMA)
    assert set(retries["attempt"].to_pylist()) == {2, 3}
    for manifest in manifests:
        if manifest.attempt == 1:
            continue
        # Every task of an attempt-n batch was waiting for attempt n.
        sidecar = lake.read_table([lake.path(BATCHES, day, manifest.tasks_name)])
        waiting_ids = retries.filter(pc.equal(retries["attempt"], manifest.attempt))["task_id"]
        assert pc.all(pc.is_in(sidecar["task_id"], value_set=waiting_ids)).as_py()

    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    batch_rows = results.filter(pc.equal(results["route"], "batch"))
    assert {2, 3} <= set(batch_rows["attempt"].to_pylist())
    by_batch = {m.provider_batch_id: m.attempt for m in manifests}
    for batch_id, attempt in zip(
        batch_rows["batch_id"].to_pylist(), batch_rows["attempt"].to_pylist(), strict=True
    ):
        assert by_batch[batch_id] == attempt

    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    dead = dead.filter(pc.equal(dead["stage"], "collect"))
    reasons = dead["reason"].to_pylist()
    rejected = [r for r in reasons if r.startswith("invalid_request_error: emulated fault")]
    gave_up = [r for r in reasons if "gave up after attempt 3 of 3" in r]
    assert rejected and gave_up and len(rejected) + len(gave_up) == len(reasons)
    for row in dead.to_pylist():
        if "gave up" in row["reason"]:
            assert row["attempt"] == 3
        # The payload is the original request, ready to replay.
        assert orjson.loads(row["payload"])["messages"]


def test_max_attempts_is_configurable_per_run(
    day: str, instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    resources = fault_resources(PLAN)
    lake = resources["lake"].lake()
    collect = start_day(resources, instance, 80, seed=5).defs.resolve_job_def(
        "collect_batch_results"
    )
    run = collect.execute_in_process(
        partition_key=day,
        instance=instance,
        run_config={"ops": {"batch_results": {"config": {"max_attempts": 1}}}},
    )
    metadata = run.asset_materializations_for_node("batch_results")[0].metadata
    assert metadata["retrying"].value == 0
    assert metadata["dead_lettered"].value > 0
    ledger = partition_ledger(lake, day)
    assert ledger.open == 0 and ledger.holds
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    assert any("gave up after attempt 1 of 1" in r for r in dead["reason"].to_pylist())


def test_a_retry_refused_at_submission_does_not_wait_forever(lake, day: str) -> None:
    from llm_pipelines.dispatch.retries import retry_row
    from llm_pipelines.dispatch.state import PartitionState, pending_retry_pairs
    from llm_pipelines.storage.datasets import dead_letter_path, dead_letter_row

    row = retry_row(
        task_id="t1", attempt=2, task_type="x", requested_model="m", request="{}", reason="r",
        source="replay:1",
    )  # fmt: skip
    lake.write_table(
        lake.path(RETRIES, day, "replay-1.parquet"),
        pa.Table.from_pylist([row], schema=RETRIES_SCHEMA),
    )
    assert pending_retry_pairs(lake, PartitionState.load(lake, day))["task_id"].to_pylist() == [
        "t1"
    ]
    refused = dead_letter_row(
        stage="submit", task_id="t1", attempt=2, reason="too big", payload=None
    )
    lake.write_table(
        dead_letter_path(lake, day, "submit", "a2"),
        pa.Table.from_pylist([refused], schema=DEAD_LETTER_SCHEMA),
    )
    assert not len(pending_retry_pairs(lake, PartitionState.load(lake, day)))
