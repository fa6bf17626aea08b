"""Fixtures for the reliability tests: a Dagster instance on disk, resources with faults."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.sensors.daemon import InProcessDaemon
from llm_pipelines.sensors.daemon import disk_instance as on_disk
from llm_pipelines.storage import LandingZone
from llm_pipelines.storage.scratch import scratch_dir


@pytest.fixture
def disk_instance() -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on disk (SQLite), shared by this process and its forked children."""
    with scratch_dir("dagster-home-") as home, on_disk(home) as instance:
        yield instance


@pytest.fixture
def fault_resources(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Build lake + in-process emulator resources whose emulator follows a YAML fault plan."""

    def build(plan: str = "", **anthropic: Any) -> dict[str, Any]:
        faults = ""
        if plan:
            path = tmp_path / f"faults-{abs(hash(plan))}.yaml"
            path.write_text(plan)
            faults = str(path)
        options = {"max_batch_requests": 40, "max_retries": 8, **anthropic}
        return {
            "lake": LakeResource(url=str(tmp_path / "lake")),
            "cost_policy": CostPolicyResource(),
            "anthropic": AnthropicResource(
                emulator_dir=str(tmp_path / "emulator"), emulator_faults=faults, **options
            ),
        }

    return build


@pytest.fixture
def start_day(day: str) -> Callable[..., InProcessDaemon]:
    """Land ``count`` demo tasks for the test day and run its daily cycle; the daemon that
    goes on (its ``defs``: the Definitions on ``resources``)."""

    def start(
        resources: dict[str, Any], instance: dg.DagsterInstance, count: int, seed: int = 1
    ) -> InProcessDaemon:
        LandingZone(resources["lake"].lake()).append(
            generate_tasks(day, count, seed=seed), partition=day
        )
        daemon = InProcessDaemon.for_resources(resources, instance)
        daemon.run("daily_batch_cycle", day)
        return daemon

    return start
