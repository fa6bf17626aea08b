"""Dagster's daemon, played in one process: tick sensors, launch the runs they ask for.

In production ``dagster-daemon`` evaluates the sensors, launches each run request whose run
key no run carries yet, and (with run monitoring on) marks runs whose worker died as failed.
The demo, the workloads command, the tests and the chaos benchmark run without it; they use
:class:`InProcessDaemon`, which follows the same rules, so what they exercise is the sensors'
real contract, run keys included. This is the only stand-in for the daemon in the project.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from llm_pipelines.dispatch.ledger import Ledger

COLLECTION_SENSOR = "batch_completion_sensor"
"""The sensor that collects ended batches and resubmits retries."""

QUIET_LOGS = "WARNING"
"""Console log level for runs in a CLI: warnings and errors only, no DEBUG event stream."""

UNFINISHED = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def with_log_level(run_config: dict[str, Any] | None, level: str | None) -> dict[str, Any]:
    """``run_config`` with the console logger at ``level`` (unchanged when ``level`` is None)."""
    config = dict(run_config or {})
    if level is not None:
        config["loggers"] = {"console": {"config": {"log_level": level}}}
    return config


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


@dataclass
class InProcessDaemon:
    """Ticks the sensors and runs the jobs of one Definitions against one instance."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    resources: dict[str, Any]
    log_level: str | None = None
    """Console log level of the runs it launches (None: Dagster's default)."""
    cursors: dict[str, str | None] = field(default_factory=dict)
    """Each sensor's cursor after its last evaluation, by sensor name."""
    launched: dict[str, list[str]] = field(default_factory=dict)
    """Run keys this daemon launched, by sensor name."""
    tolerate_failed_runs: bool = False
    """Like the real daemon, record a failed sensor-launched run instead of raising (the
    sensor asks again under a fresh run key); off by default so tests fail loudly."""
    failed: list[str] = field(default_factory=list)
    """Run keys of sensor-launched runs that failed (with ``tolerate_failed_runs``)."""

    @classmethod
    def for_resources(
        cls, resources: dict[str, Any], instance: dg.DagsterInstance, **options: Any
    ) -> InProcessDaemon:
        """The project's Definitions with ``resources`` (the rest from the environment)."""
        from llm_pipelines.definitions import build_definitions

        return cls(build_definitions(resources), instance, resources, **options)

    @classmethod
    def on_emulator(
        cls,
        *,
        lake_url: str,
        emulator_dir: str,
        batch_latency_s: float,
        instance: dg.DagsterInstance,
        log_level: str | None = QUIET_LOGS,
        policy_path: str | None = None,
        faults: str = "",
    ) -> InProcessDaemon:
        """The project's Definitions on a lake and the in-process emulator (no key used).

        ``policy_path`` routes with that policy file instead of the deployment's; ``faults``
        (a preset or a fault-plan file) makes the emulator fail on purpose.
        """
        from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource

        resources: dict[str, Any] = {
            "lake": LakeResource(url=lake_url),
            "anthropic": AnthropicResource(
                emulator_dir=emulator_dir,
                emulator_batch_latency_s=batch_latency_s,
                emulator_faults=faults,
            ),
        }
        if policy_path:
            resources["cost_policy"] = CostPolicyResource(routing_policy_path=policy_path)
        return cls.for_resources(resources, instance, log_level=log_level)

    def describe(self) -> str:
        """Where the data goes and which LLM backend answers, for a CLI's first line."""
        return (
            f"lake: {self.resources['lake'].url}; LLM backend: {self.resources['anthropic'].mode}"
        )

    def run(
        self,
        job: str,
        partition: str | None,
        run_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        raise_on_error: bool = True,
    ) -> dg.ExecuteInProcessResult:
        """Execute a job for a partition; raise if it fails (unless ``raise_on_error`` is off)."""
        result = self.defs.resolve_job_def(job).execute_in_process(
            partition_key=partition,
            instance=self.instance,
            run_config=with_log_level(run_config, self.log_level),
            tags=tags,
            raise_on_error=raise_on_error,
        )
        if not result.success and raise_on_error:
            raise RuntimeError(f"{job} failed for {partition}")
        return result

    def evaluate(
        self, sensor: str = COLLECTION_SENSOR, cursor: str | None = None
    ) -> dg.SensorResult:
        """One evaluation of ``sensor``, from ``cursor`` (default: where its last one ended).

        Launches nothing (see :meth:`new_run_requests` and :meth:`launch`); a harness that
        evaluates in a child process passes the cursor it got back from the last one.
        """
        definition = self.defs.get_repository_def().get_sensor_def(sensor)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor if cursor is not None else self.cursors.get(sensor),
            resources=self.resources,
            definitions=self.defs,
        )
        if self.log_level is not None:
            context.log.setLevel(self.log_level)
        result = definition(context)
        self.cursors[sensor] = result.cursor
        return result

    def new_run_requests(self, result: dg.SensorResult) -> list[dg.RunRequest]:
        """The requests the daemon would launch: those whose run key no run carries yet
        (in this instance, whoever launched it: a worker that crashed included)."""
        return [
            request
            for request in result.run_requests or []
            if not self.instance.get_runs_count(
                dg.RunsFilter(tags={"dagster/run_key": request.run_key or ""})
            )
        ]

    def launch(
        self, request: dg.RunRequest, sensor: str = COLLECTION_SENSOR, raise_on_error: bool = False
    ) -> dg.ExecuteInProcessResult:
        """Execute a run request of ``sensor`` in this process, tagged as the daemon tags it."""
        return self.run(
            request.job_name or self.defs.get_repository_def().get_sensor_def(sensor).job_name,
            request.partition_key,
            run_config=request.run_config,
            tags={**request.tags, "dagster/run_key": request.run_key or ""},
            raise_on_error=raise_on_error,
        )

    def tick(self, sensors: Iterable[str] | None = None) -> list[str]:
        """Tick the named sensors (default: all) once; launch new requests; return their keys."""
        names = (
            list(sensors)
            if sensors is not None
            else [sensor.name for sensor in self.defs.get_repository_def().sensor_defs]
        )
        keys: list[str] = []
        for sensor in names:
            for request in self.new_run_requests(self.evaluate(sensor)):
                key = request.run_key or ""
                self.launched.setdefault(sensor, []).append(key)
                result = self.launch(request, sensor, raise_on_error=not self.tolerate_failed_runs)
                if not result.success:
                    self.failed.append(key)
                keys.append(key)
        return keys

    def settle(self, max_ticks: int = 12) -> None:
        """Tick until no sensor asks for anything new (work that needs no waiting)."""
        for _ in range(max_ticks):
            if not self.tick():
                return
        raise RuntimeError(f"sensors still launching runs after {max_ticks} ticks")

    def drive(
        self,
        partition: str,
        *,
        max_ticks: int = 30,
        between_ticks: Callable[[], object] | None = None,
    ) -> Ledger:
        """Tick the collection sensor and launch until ``partition`` has no open batch work;
        return its ledger. Runs that fail are left failed (the sensor asks again under a new
        key), as the real daemon leaves them.

        ``between_ticks`` runs after a tick that left work open (advance a clock, cancel
        stalled batches, ...). Raises ``TimeoutError`` if the work does not settle.
        """
        from llm_pipelines.dispatch.ledger import partition_ledger

        lake = self.resources["lake"].lake()
        for _ in range(max_ticks):
            for request in self.new_run_requests(self.evaluate(COLLECTION_SENSOR)):
                self.launch(request)
            ledger = partition_ledger(lake, partition)
            if not ledger.open:
                return ledger
            if between_ticks is not None:
                between_ticks()
        raise TimeoutError(f"{partition} still has open work after {max_ticks} ticks: {ledger}")

    def fail_dead_runs(self, reason: str) -> int:
        """Mark every unfinished run failed, as run monitoring does when its worker is gone.

        Only for a harness whose runs all ran in processes that have ended.
        """
        dead = self.instance.get_runs(dg.RunsFilter(statuses=list(UNFINISHED)))
        for run in dead:
            self.instance.report_run_failed(run, message=reason)
        return len(dead)

    def latest_checks(self, asset: str) -> dict[str, dg.AssetCheckEvaluation]:
        """The latest evaluation of each check on ``asset``, by check name."""
        keys = [
            key
            for key in self.defs.resolve_asset_graph().asset_check_keys
            if key.asset_key == dg.AssetKey(asset)
        ]
        records = self.instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
        return {
            key.name: record.event.dagster_event.event_specific_data
            for key, record in records.items()
            if record.event and record.event.dagster_event
        }
