"""Operator jobs: replay chosen dead letters; cancel a partition's in-flight batches."""

from __future__ import annotations

import dagster as dg
import pyarrow.compute as pc

from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.emulator import EmulatorConfig, EmulatorStore
from llm_pipelines.sensors.daemon import InProcessDaemon
from llm_pipelines.storage import read_manifests
from llm_pipelines.storage.datasets import RESULTS, RESULTS_SCHEMA, RETRIES

REJECTING = "seed: 6\nerrored_rate: 0.3\nnon_retryable_error_share: 1.0\n"


def _replay(defs: dg.Definitions, instance, day: str, **config) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("replay_dead_letters").execute_in_process(
        partition_key=day,
        instance=instance,
        run_config={"ops": {"replay_dead_letters_op": {"config": config}}},
        raise_on_error=False,
    )


def _observed(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [observation] = [
        e.event_specific_data.asset_observation  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    return {k: v.value for k, v in observation.metadata.items()}


def test_replay_reenqueues_chosen_dead_letters_until_they_succeed(
    day: str, instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    rejecting = fault_resources(REJECTING, max_batch_requests=100)
    lake = rejecting["lake"].lake()
    defs = (daemon := start_day(rejecting, instance, 120, seed=2)).defs
    settled = daemon.drive(day)
    rejected = settled.dead_lettered
    assert rejected > 0 and settled.holds

    # Choosing changes nothing until asked: dry run, a reason that matches none, intake.
    assert _observed(_replay(defs, instance, day, dry_run=True))["matched"] == rejected
    assert _observed(_replay(defs, instance, day, reason_contains="no such reason"))["matched"] == 0
    refused = _replay(defs, instance, day, stages=["intake"])
    assert not refused.success
    assert not [path for path in lake.files(RETRIES, day) if "/replay-" in path]

    # The cause is fixed (no more faults): replay by reason text, any case.
    healthy = fault_resources("", max_batch_requests=100)
    defs = (daemon := InProcessDaemon.for_resources(healthy, instance)).defs
    replay = _replay(defs, instance, day, stages=["collect"], reason_contains="INVALID_REQUEST")
    assert replay.success and _observed(replay)["replayed"] == rejected
    waiting = partition_ledger(lake, day)
    assert (waiting.dead_lettered, waiting.retrying) == (0, rejected) and waiting.holds

    final = daemon.drive(day)
    assert final.holds and final.succeeded == final.valid and final.dead_lettered == 0
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    assert pc.sum(pc.equal(results["attempt"], 2)).as_py() == rejected
    assert _observed(_replay(defs, instance, day))["matched"] == 0, "nothing left standing"


def test_cancel_stops_in_flight_batches_and_their_tasks_are_retried(
    day: str, instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    slow = fault_resources(emulator_batch_latency_s=3600)
    lake = slow["lake"].lake()
    daemon = start_day(slow, instance, 100, seed=12)
    batches = read_manifests(lake, day)
    assert len(batches) > 1
    cancel = daemon.defs.resolve_job_def("cancel_batches")

    one = cancel.execute_in_process(
        partition_key=day,
        instance=instance,
        run_config={
            "ops": {"cancel_batches_op": {"config": {"batch_ids": [batches[0].provider_batch_id]}}}
        },
    )
    assert _observed(one)["canceled"] == 1
    everything = cancel.execute_in_process(partition_key=day, instance=instance)
    assert _observed(everything)["canceled"] == len(batches) - 1
    assert all(m.cancel_requested_at for m in read_manifests(lake, day))

    # Canceled batches end at once: collected, their unrun requests wait as attempt 2.
    for request in daemon.new_run_requests(daemon.evaluate()):
        assert daemon.launch(request).success
    waiting = partition_ledger(lake, day)
    batched = sum(m.request_count for m in batches)
    assert waiting.retrying == batched and waiting.holds

    emulator = EmulatorStore(EmulatorConfig(state_dir=slow["anthropic"].emulator_dir))
    final = daemon.drive(day, between_ticks=lambda: emulator.advance_clock(3600))
    assert final.holds and final.succeeded == final.valid
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    batch_rows = results.filter(pc.equal(results["route"], "batch"))
    assert set(batch_rows["attempt"].to_pylist()) == {2}
