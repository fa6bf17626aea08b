"""Shared fixtures: a lake in a temp folder and the emulator in process, through Dagster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.storage import Lake

DAY = "2026-11-23"


@pytest.fixture
def day() -> str:
    """The partition the tests work on."""
    return DAY


@pytest.fixture
def resources(tmp_path: Path) -> dict[str, Any]:
    """Lake + Anthropic resources: a fresh lake and emulator state per test, no latency."""
    return {
        "lake": LakeResource(url=str(tmp_path / "lake")),
        "anthropic": AnthropicResource(emulator_dir=str(tmp_path / "emulator")),
        # Explicit, so a developer's LLM_PIPELINES_* environment cannot change the tests.
        "cost_policy": CostPolicyResource(routing_policy_path=None, daily_budget_usd=None),
    }


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's) on loopback, for lakes on ``s3://``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials, as moto wants some and s3fs reads them from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_bucket(s3_endpoint: str, s3_credentials: None, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test on the moto server."""
    import boto3

    name = "lake-" + request.node.name.lower().replace("_", "-").replace("[", "-")[:40]
    name = "".join(c for c in name if c.isalnum() or c == "-").strip("-")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_lake(s3_endpoint: str, s3_bucket: str) -> Lake:
    """A lake in a fresh bucket on the moto server."""
    return LakeResource(url=f"s3://{s3_bucket}/llm", s3_endpoint_url=s3_endpoint).lake()


@pytest.fixture
def lake(resources: dict[str, Any]) -> Lake:
    """The test lake."""
    return resources["lake"].lake()


@pytest.fixture
def instance() -> dg.DagsterInstance:
    """An in-memory Dagster instance (run history for run_key checks)."""
    return dg.DagsterInstance.ephemeral()


DAILY_CYCLE = ["raw_llm_events", "routed_tasks", "realtime_results", "batch_submissions"]


def _assets_named(names: list[str]) -> list[Any]:
    """The asset definitions (with their checks) as the modules declare them, unbound."""
    from llm_pipelines.assets import dispatch, intake, report

    modules = [intake, dispatch, report]
    by_name = {a.key.to_user_string(): a for a in dg.load_assets_from_modules(modules)}
    checks = dg.load_asset_checks_from_modules(modules)
    selected = [by_name[name] for name in names]
    wanted = {a.key for a in selected}
    return selected + [c for c in checks if {k.asset_key for k in c.check_keys} <= wanted]


@pytest.fixture
def materialize_assets(resources: dict[str, Any], instance: dg.DagsterInstance, day: str):
    """Materialize named assets for the test partition through Dagster; fail loudly.

    ``resources_override`` replaces some of the test resources for one run; ``partition``
    runs another day than the test's; ``expect_success=False`` returns a failed run's result
    for the test to look into.
    """

    def run(
        names: list[str],
        run_config: dict[str, Any] | None = None,
        *,
        resources_override: dict[str, Any] | None = None,
        partition: str | None = None,
        expect_success: bool = True,
    ) -> dg.ExecuteInJobResult:
        result = dg.materialize(
            _assets_named(names),
            partition_key=partition or day,
            resources={**resources, **(resources_override or {})},
            instance=instance,
            run_config=run_config,
            raise_on_error=expect_success,
        )
        assert result.success or not expect_success
        return result

    return run


@pytest.fixture
def tick_sensor(resources: dict[str, Any], instance: dg.DagsterInstance):
    """Evaluate batch_completion_sensor once with a sensor context; return its result."""
    from llm_pipelines.sensors import batch_completion_sensor

    def tick(cursor: str | None = None) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        return batch_completion_sensor(context)

    return tick


@pytest.fixture
def http_emulator(tmp_path: Path):
    """Start the emulator over HTTP on loopback: ``start(faults, wrap) -> (base_url, app)``.

    ``wrap`` wraps the WSGI app (a middleware that observes requests); servers stop at
    teardown. Point ``AnthropicResource(base_url=...)`` at the URL.
    """
    import threading

    from werkzeug.serving import make_server

    from llm_pipelines.emulator import EmulatorApp, EmulatorConfig, FaultPlan

    servers: list[tuple[Any, threading.Thread]] = []

    def start(faults: FaultPlan | None = None, wrap: Any = None) -> tuple[str, EmulatorApp]:
        config = EmulatorConfig(
            state_dir=str(tmp_path / f"emulator-http-{len(servers)}"), faults=faults or FaultPlan()
        )
        app = EmulatorApp(config)
        server = make_server("127.0.0.1", 0, wrap(app) if wrap else app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}", app

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
