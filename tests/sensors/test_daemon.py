"""The in-process daemon follows dagster-daemon's rules: one run per run key, failures kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.dispatch.collect import stream_cut_errors
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.resources import AnthropicResource
from llm_pipelines.sensors.daemon import COLLECTION_SENSOR, InProcessDaemon
from llm_pipelines.storage import LandingZone


def _started_day(resources: dict[str, Any], instance: dg.DagsterInstance, day: str, count: int):
    LandingZone(resources["lake"].lake()).append(generate_tasks(day, count, seed=4), partition=day)
    daemon = InProcessDaemon.for_resources(resources, instance)
    daemon.run("daily_batch_cycle", day)
    return daemon


def test_a_run_key_any_run_carries_is_not_launched_again(
    tmp_path: Path, resources: dict[str, Any], instance: dg.DagsterInstance, day: str
) -> None:
    emulator = AnthropicResource(emulator_dir=str(tmp_path / "emulator"), max_batch_requests=20)
    resources = {**resources, "anthropic": emulator}  # several batches, so several run keys
    first = _started_day(resources, instance, day, 120)
    [held, *rest] = first.new_run_requests(first.evaluate())
    assert rest
    # Another daemon (or a crashed one) already launched ``held``: its run is created, not yet
    # started, so the batch is still uncollected and the sensor asks for it again.
    instance.add_run(
        dg.DagsterRun(
            job_name="collect_batch_results",
            tags={"dagster/run_key": held.run_key or ""},
            status=dg.DagsterRunStatus.NOT_STARTED,
        )
    )

    second = InProcessDaemon.for_resources(resources, instance)  # no memory of its own
    launched = second.tick([COLLECTION_SENSOR])
    assert held.run_key not in launched
    assert set(launched) == {request.run_key for request in rest}
    assert second.launched == {COLLECTION_SENSOR: launched}
    for key in launched:
        [run] = instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": key}))
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.job_name == "collect_batch_results"
    assert partition_ledger(resources["lake"].lake(), day).in_flight > 0, "held stays open"
    assert second.tick([COLLECTION_SENSOR]) == [], "asked again, launched never twice"


def test_failed_runs_raise_or_are_kept_and_asked_for_again(
    tmp_path: Path, resources: dict[str, Any], instance: dg.DagsterInstance, day: str
) -> None:
    plan = tmp_path / "cut.yaml"
    plan.write_text("truncated_results_rate: 1.0\n")  # every results stream is cut off
    cut = {
        **resources,
        "anthropic": AnthropicResource(
            emulator_dir=str(tmp_path / "emulator"), emulator_faults=str(plan)
        ),
    }
    strict = _started_day(cut, instance, day, 40)
    with pytest.raises(stream_cut_errors()):  # the run's own error, as a test wants it
        strict.tick([COLLECTION_SENSOR])

    # As the real daemon does: record the failed run and go on; the sensor asks again
    # under a fresh key, which a healthy API then answers.
    lenient = InProcessDaemon.for_resources(cut, instance, tolerate_failed_runs=True)
    [failed] = lenient.tick([COLLECTION_SENSOR])
    assert failed.endswith("-retry1") and lenient.failed == [failed]
    healthy = InProcessDaemon.for_resources(resources, instance, tolerate_failed_runs=True)
    assert healthy.drive(day).open == 0
    assert healthy.failed == []
