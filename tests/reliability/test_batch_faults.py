"""Batch-level faults: HTTP errors retried by the SDK; cut result streams read again, once."""

from __future__ import annotations

import collections

import dagster as dg

from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.emulator import EmulatorConfig, EmulatorStore
from llm_pipelines.sensors.daemon import InProcessDaemon
from llm_pipelines.storage import read_manifests
from llm_pipelines.storage.datasets import RESULTS, RESULTS_SCHEMA

EVERY_BATCH_ENDPOINT = """
seed: 5
retry_after_ms: 1
endpoint_error_rates:
  batches_create: 0.4
  batches_retrieve: 0.4
  batches_results: 0.4
  messages: 0.2
"""


def _result_counts(lake, day: str) -> collections.Counter[str]:
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    return collections.Counter(results["task_id"].to_pylist())


def test_http_faults_on_every_batch_call_are_absorbed_by_sdk_retries(
    day: str, instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    resources = fault_resources(EVERY_BATCH_ENDPOINT, max_retries=12)
    ledger = start_day(resources, instance, 150, seed=8).drive(day)
    assert ledger.holds and ledger.succeeded == ledger.valid
    store = EmulatorStore(EmulatorConfig(state_dir=resources["anthropic"].emulator_dir))
    injected = {k: n for k, n in store.fault_totals().items() if k.startswith("http_")}
    assert sum(injected.values()) >= 10 and set(injected) == {"http_429", "http_500", "http_529"}
    # A create answered 429/5xx did nothing, so retrying it made no second batch.
    named = {m.provider_batch_id for m in read_manifests(resources["lake"].lake(), day)}
    assert set(store.list_batch_ids()) == named


def test_cut_result_streams_are_read_again_without_doubling_rows(
    day: str, instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    resources = fault_resources("seed: 2\ntruncated_results_rate: 0.4\n", max_batch_requests=20)
    daemon = start_day(resources, instance, 160, seed=8)
    restarts = 0
    for request in daemon.evaluate().run_requests:
        run = daemon.launch(request)
        assert run.success
        restarts += (
            run.asset_materializations_for_node("batch_results")[0]
            .metadata["stream_restarts"]
            .value
        )
    assert restarts > 0
    counts = _result_counts(resources["lake"].lake(), day)
    assert max(counts.values()) == 1
    ledger = partition_ledger(resources["lake"].lake(), day)
    assert ledger.holds and ledger.open == 0


def test_a_stream_cut_every_time_publishes_nothing_until_a_later_run(
    day: str, instance: dg.DagsterInstance, fault_resources, start_day
) -> None:
    always_cut = fault_resources("truncated_results_rate: 1.0\n", max_batch_requests=1000)
    lake = always_cut["lake"].lake()
    daemon = start_day(always_cut, instance, 60, seed=8)
    [request] = daemon.evaluate().run_requests
    assert not daemon.launch(request).success
    # Nothing half-written is visible: no results, no temporary files, still in flight.
    assert lake.files(RESULTS, day) == [p for p in lake.files(RESULTS, day) if "realtime" in p]
    assert not [p for p in lake.fs.ls(lake.partition_dir(RESULTS, day)) if "/.tmp-" in p]
    before = partition_ledger(lake, day)
    assert before.in_flight > 0 and before.holds

    healthy = fault_resources("", max_batch_requests=1000)
    recovered = InProcessDaemon.for_resources(healthy, instance)
    [again] = recovered.evaluate().run_requests
    assert again.run_key == f"{request.run_key}-retry1", "a failed run is asked for again"
    assert recovered.launch(again).success
    counts = _result_counts(lake, day)
    assert max(counts.values()) == 1
    after = partition_ledger(lake, day)
    assert after.holds and after.open == 0 and after.succeeded == after.valid
