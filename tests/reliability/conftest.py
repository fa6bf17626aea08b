"""Fixtures for the reliability tests: a Dagster instance on disk, resources with faults."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_pipelines.resources import AnthropicResource, LakeResource
from llm_pipelines.sensors import daemon


@pytest.fixture
def disk_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on disk (SQLite), shared by this process and its forked children."""
    with daemon.disk_instance(str(tmp_path / "dagster_home")) as instance:
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
            "anthropic": AnthropicResource(
                emulator_dir=str(tmp_path / "emulator"), emulator_faults=faults, **options
            ),
        }

    return build
