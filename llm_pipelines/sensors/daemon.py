"""Play the Dagster daemon in one process: tick the sensor, launch the runs it asks for.

In production ``dagster-daemon`` evaluates ``batch_completion_sensor``, launches each run
request whose run_key it has not seen, and (with run monitoring on) marks runs whose worker
died as failed. The demo, the tests and the chaos benchmark do the same with these helpers,
so what they exercise is the sensor's real contract, run keys included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from llm_pipelines.dispatch.ledger import Ledger, partition_ledger
from llm_pipelines.sensors.batch_completion import batch_completion_sensor

UNFINISHED = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


@contextlib.contextmanager
def disk_instance(home: str) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on SQLite under ``home``, shared with forked child processes.

    One consolidated event-log database and no compute-log capture: as fast as an in-memory
    instance, but runs started by a child (and the runs a crash leaves behind) are seen here.
    """
    Path(home).mkdir(parents=True, exist_ok=True)
    overrides = {
        "event_log_storage": {
            "module": "dagster._core.storage.event_log",
            "class": "ConsolidatedSqliteEventLogStorage",
            "config": {"base_dir": str(Path(home) / "event_log")},
        },
        "compute_logs": {
            "module": "dagster._core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        },
    }
    with dg.instance_for_test(temp_dir=home, overrides=overrides) as instance:
        yield instance


def tick(
    instance: dg.DagsterInstance, resources: dict[str, Any], cursor: str | None = None
) -> dg.SensorResult:
    """One evaluation of ``batch_completion_sensor``."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return batch_completion_sensor(context)


def new_run_requests(instance: dg.DagsterInstance, result: dg.SensorResult) -> list[dg.RunRequest]:
    """The requests the daemon would launch: those whose run_key no run carries yet."""
    fresh = []
    for request in result.run_requests or []:
        seen = instance.get_runs_count(dg.RunsFilter(tags={"dagster/run_key": request.run_key}))
        if not seen:
            fresh.append(request)
    return fresh


def launch(
    defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """Execute a run request in this process, tagged as the daemon tags it."""
    job = defs.resolve_job_def(request.job_name or "collect_batch_results")
    return job.execute_in_process(
        partition_key=request.partition_key,
        run_config=request.run_config,
        instance=instance,
        tags={**request.tags, "dagster/run_key": request.run_key or ""},
        raise_on_error=False,
    )


def fail_dead_runs(instance: dg.DagsterInstance, reason: str) -> int:
    """Mark every unfinished run failed, as run monitoring does when its worker is gone.

    Only for a harness whose runs all ran in processes that have ended.
    """
    dead = instance.get_runs(dg.RunsFilter(statuses=list(UNFINISHED)))
    for run in dead:
        instance.report_run_failed(run, message=reason)
    return len(dead)


def drive(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    partition: str,
    *,
    max_ticks: int = 30,
    run: Callable[[dg.RunRequest], object] | None = None,
    between_ticks: Callable[[], object] | None = None,
) -> Ledger:
    """Tick and launch until ``partition`` has no open batch work; return its ledger.

    ``run`` replaces in-process launching (a harness may run each request in a child
    process); ``between_ticks`` runs after a tick that left work open (advance a clock,
    cancel stalled batches, ...). Raises ``TimeoutError`` if the work does not settle.
    """
    lake = resources["lake"].lake()
    cursor = None
    for _ in range(max_ticks):
        result = tick(instance, resources, cursor)
        cursor = result.cursor
        for request in new_run_requests(instance, result):
            if run is None:
                launch(defs, instance, request)
            else:
                run(request)
        ledger = partition_ledger(lake, partition)
        if not ledger.open:
            return ledger
        if between_ticks is not None:
            between_ticks()
    raise TimeoutError(f"{partition} still has open work after {max_ticks} ticks: {ledger}")
