"""Run workloads the way the daemon would: jobs, then every sensor ticked until all is quiet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pytest

from llm_pipelines.definitions import build_definitions


@dataclass
class Daemon:
    """Plays the Dagster daemon for tests: launches sensor run requests once per run key."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    resources: dict[str, Any]
    cursors: dict[str, str | None] = field(default_factory=dict)
    launched: dict[str, list[str]] = field(default_factory=dict)

    def run(self, job: str, partition: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        """Execute a job for a partition; fail loudly."""
        result = self.defs.resolve_job_def(job).execute_in_process(
            partition_key=partition, instance=self.instance, **kwargs
        )
        assert result.success, job
        return result

    def tick(self) -> int:
        """Tick every sensor once and launch what it asks for; return runs launched."""
        launched = 0
        for sensor in self.defs.get_repository_def().sensor_defs:
            context = dg.build_sensor_context(
                instance=self.instance,
                cursor=self.cursors.get(sensor.name),
                resources=self.resources,
                definitions=self.defs,
            )
            result = sensor(context)
            self.cursors[sensor.name] = result.cursor
            keys = self.launched.setdefault(sensor.name, [])
            for request in result.run_requests or []:
                if request.run_key in keys:
                    continue  # the daemon never launches a run key twice
                keys.append(request.run_key)
                self.run(
                    request.job_name or sensor.job_name,
                    request.partition_key,
                    run_config=request.run_config,
                    tags={**request.tags, "dagster/run_key": request.run_key},
                )
                launched += 1
        return launched

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

    def settle(self, max_ticks: int = 12) -> None:
        """Tick until no sensor asks for anything new."""
        for _ in range(max_ticks):
            if not self.tick():
                return
        raise AssertionError(f"sensors still launching runs after {max_ticks} ticks")


@pytest.fixture
def daemon_for(instance: dg.DagsterInstance):
    """Make a daemon over the project's Definitions bound to the given resources."""

    def make(resources: dict[str, Any]) -> Daemon:
        return Daemon(build_definitions(resources), instance, resources)

    return make


@pytest.fixture
def daemon(daemon_for, resources: dict[str, Any]) -> Daemon:
    """The project's Definitions on the test resources, and a daemon to drive them."""
    return daemon_for(resources)
