"""Dagster's daemon, played in process: tick sensors, launch what they ask for once per run key.

The demo, the workloads command and the tests run without a ``dagster-daemon``; this is the
part of it they need, with the same rule the daemon follows (a run key is launched once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

QUIET_LOGS = "WARNING"
"""Console log level for runs in a CLI: warnings and errors only, no DEBUG event stream."""


def with_log_level(run_config: dict[str, Any] | None, level: str | None) -> dict[str, Any]:
    """``run_config`` with the console logger at ``level`` (unchanged when ``level`` is None)."""
    config = dict(run_config or {})
    if level is not None:
        config["loggers"] = {"console": {"config": {"log_level": level}}}
    return config


@dataclass
class InProcessDaemon:
    """Runs jobs and ticks sensors of one Definitions against one instance."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    resources: dict[str, Any]
    log_level: str | None = None
    cursors: dict[str, str | None] = field(default_factory=dict)
    launched: dict[str, list[str]] = field(default_factory=dict)
    """Run keys launched so far, by sensor name."""
    tolerate_failed_runs: bool = False
    """Like the real daemon, record a failed sensor-launched run instead of raising (the
    sensor asks again under a fresh run key); off by default so tests fail loudly."""
    failed: list[str] = field(default_factory=list)
    """Run keys of sensor-launched runs that failed (with ``tolerate_failed_runs``)."""

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
        from llm_pipelines.definitions import build_definitions
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
        return cls(build_definitions(resources), instance, resources, log_level)

    def describe(self) -> str:
        """Where the data goes and which LLM backend answers, for a CLI's first line."""
        return (
            f"lake: {self.resources['lake'].url}; LLM backend: {self.resources['anthropic'].mode}"
        )

    def run(
        self,
        job: str,
        partition: str,
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

    def tick(self, sensors: Iterable[str] | None = None) -> list[str]:
        """Tick the named sensors (default: all) once; launch new requests; return their keys."""
        wanted = set(sensors) if sensors is not None else None
        keys: list[str] = []
        for sensor in self.defs.get_repository_def().sensor_defs:
            if wanted is not None and sensor.name not in wanted:
                continue
            context = dg.build_sensor_context(
                instance=self.instance,
                cursor=self.cursors.get(sensor.name),
                resources=self.resources,
                definitions=self.defs,
            )
            if self.log_level is not None:
                context.log.setLevel(self.log_level)
            result = sensor(context)
            self.cursors[sensor.name] = result.cursor
            seen = self.launched.setdefault(sensor.name, [])
            for request in result.run_requests or []:
                if request.run_key in seen:
                    continue  # the daemon never launches a run key twice
                seen.append(request.run_key)
                result = self.run(
                    request.job_name or sensor.job_name,
                    request.partition_key,
                    run_config=request.run_config,
                    tags={**request.tags, "dagster/run_key": request.run_key},
                    raise_on_error=not self.tolerate_failed_runs,
                )
                if not result.success:
                    self.failed.append(request.run_key)
                keys.append(request.run_key)
        return keys

    def settle(self, max_ticks: int = 12) -> None:
        """Tick until no sensor asks for anything new (work that needs no waiting)."""
        for _ in range(max_ticks):
            if not self.tick():
                return
        raise RuntimeError(f"sensors still launching runs after {max_ticks} ticks")

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
