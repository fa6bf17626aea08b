"""`dagster-webserver` serves the code location from workspace.yaml with everything in it.

Starts the real webserver as a subprocess on a free loopback port (DAGSTER_HOME, lake and
emulator state in a temp folder) and asks its GraphQL API what it loaded. The expected names
come from the Definitions object, so the test stays true as assets are added.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_pipelines.definitions import defs

REPO = Path(__file__).resolve().parents[2]
LOCATION = "llm_pipelines"
READY_WITHIN_S = 180
"""Generous: a cold start on a loaded CI machine; not a performance assertion."""

WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""

REPOSITORY_QUERY = """
query Repository($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on PythonError { message }
    ... on Repository {
      assetNodes {
        assetKey { path }
        groupName
        kinds
        description
        owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
        assetChecksOrError { ... on AssetChecks { checks { name } } }
      }
      sensors { name }
      schedules { name }
      jobs { name }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def graphql(client: httpx.Client, query: str, variables: dict[str, Any] | None = None) -> Any:
    response = client.post("/graphql", json={"query": query, "variables": variables or {}})
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env.update(
        DAGSTER_HOME=str(home),
        LLM_PIPELINES_LAKE=str(home / "lake"),
        LLM_PIPELINES_EMULATOR_DIR=str(home / "emulator"),
    )
    port = free_port()
    log = (home / "webserver.log").open("wb")
    command = [sys.executable, "-m", "dagster_webserver", "-w", str(REPO / "workspace.yaml")]
    process = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the code server child stops with it
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_until_loaded(client, process, home / "webserver.log")
            yield client
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def wait_until_loaded(client: httpx.Client, process: subprocess.Popen, log: Path) -> None:
    """Poll until the code location has loaded (the webserver is a separate process)."""
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster-webserver exited ({process.returncode}):\n{log.read_text()}")
        try:
            entries = graphql(client, WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
        except httpx.TransportError:
            entries = []
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            location = entry["locationOrLoadError"]
            assert location["__typename"] == "RepositoryLocation", location
            return
        time.sleep(0.5)
    pytest.fail(f"{LOCATION} did not load within {READY_WITHIN_S}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def repository(webserver: httpx.Client) -> dict[str, Any]:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
    data = graphql(webserver, REPOSITORY_QUERY, {"selector": selector})["repositoryOrError"]
    assert data["__typename"] == "Repository", data
    return data


def test_code_location_serves_every_asset_check_sensor_schedule_and_job(repository) -> None:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    served = {"/".join(n["assetKey"]["path"]): n for n in repository["assetNodes"]}
    assert set(served) == {k.to_user_string() for k in graph.get_all_asset_keys()}
    served_checks = {
        (key, check["name"])
        for key, node in served.items()
        for check in node["assetChecksOrError"]["checks"]
    }
    assert served_checks == {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {s["name"] for s in repository["sensors"]} == {s.name for s in repo.sensor_defs}
    assert {s["name"] for s in repository["schedules"]} == {s.name for s in repo.schedule_defs}
    jobs = {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")}
    assert jobs <= {j["name"] for j in repository["jobs"]}
    assert "todays_batch_cycle" in jobs


def test_every_served_asset_reads_well_in_the_ui(repository) -> None:
    for node in repository["assetNodes"]:
        name = "/".join(node["assetKey"]["path"])
        assert node["groupName"] and node["groupName"] != "default", name
        assert node["kinds"], name
        assert node["description"], name
        assert node["owners"], name
