"""Run workloads the way the daemon would: jobs, then every sensor ticked until all is quiet."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from llm_pipelines.sensors.daemon import InProcessDaemon


@pytest.fixture
def daemon_for(instance: dg.DagsterInstance):
    """Make a daemon over the project's Definitions bound to the given resources."""

    def make(resources: dict[str, Any]) -> InProcessDaemon:
        return InProcessDaemon.for_resources(resources, instance)

    return make


@pytest.fixture
def daemon(daemon_for, resources: dict[str, Any]) -> InProcessDaemon:
    """The project's Definitions on the test resources, and a daemon to drive them."""
    return daemon_for(resources)
