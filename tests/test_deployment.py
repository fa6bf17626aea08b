"""The instance configs: the run queue limits tags the jobs really set; no secret in a file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from llm_pipelines.definitions import build_definitions
from llm_pipelines.sensors.jobs import STAGE_TAG

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "dagster.yaml"
PRODUCTION = ROOT / "deploy" / "dagster.yaml"


def _limits(config: dict[str, Any]) -> list[tuple[str, str | None]]:
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    return [(limit["key"], limit.get("value")) for limit in limits]


def _job_tags(resources: dict[str, Any]) -> set[tuple[str, str]]:
    defs = build_definitions(resources)
    return {
        (key, value)
        for job in ("daily_batch_cycle", "collect_batch_results")
        for key, value in defs.resolve_job_def(job).tags.items()
    }


def test_run_queue_limits_name_tags_the_jobs_set(resources: dict[str, Any]) -> None:
    tags = _job_tags(resources)
    assert (STAGE_TAG, "submit") in tags and (STAGE_TAG, "collect") in tags
    for path in (DEV, PRODUCTION):
        limits = _limits(yaml.safe_load(path.read_text()))
        assert limits, path
        for key, value in limits:
            assert (key, value) in tags, f"{path.name}: no job sets the run tag {key}={value}"
    assert _limits(yaml.safe_load(DEV.read_text())) == _limits(
        yaml.safe_load(PRODUCTION.read_text())
    )


def test_development_instance_loads_with_the_queue(tmp_path: Path) -> None:
    shutil.copy(DEV, tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    queue = instance.run_coordinator.get_run_queue_config()
    assert queue is not None
    assert {(limit["key"], limit.get("value")) for limit in queue.tag_concurrency_limits} == set(
        _limits(yaml.safe_load(DEV.read_text()))
    )
    instance.dispose()


def test_production_instance_takes_every_secret_from_the_environment() -> None:
    production = yaml.safe_load(PRODUCTION.read_text())
    database = production["storage"]["postgres"]["postgres_db"]
    for field in ("hostname", "username", "password", "db_name"):
        assert set(database[field]) == {"env"}, field
    launcher = production["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert launcher["config"]["env_secrets"]
    # The commented Postgres block of the development file is the same block.
    commented = "\n".join(
        line.removeprefix("# ")
        for line in DEV.read_text().splitlines()
        if line.startswith("# ") and line[2:3] in (" ", "s")
    )
    assert yaml.safe_load(commented[commented.index("storage:") :]) == {
        "storage": production["storage"]
    }
