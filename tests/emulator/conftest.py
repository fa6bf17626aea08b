"""Fixtures of the emulator tests: the official SDK in process and over a loopback socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from llm_pipelines.emulator import EmulatorConfig, in_process_client, serving


@pytest.fixture
def config(tmp_path: Path) -> EmulatorConfig:
    return EmulatorConfig(state_dir=str(tmp_path / "emulator"))


@pytest.fixture(params=["in-process", "http"])
def client(request: pytest.FixtureRequest, config: EmulatorConfig) -> Iterator[anthropic.Anthropic]:
    """The same SDK calls, answered in process and over a real loopback socket."""
    if request.param == "in-process":
        yield in_process_client(config, max_retries=0)
        return
    with serving(config) as url:
        yield anthropic.Anthropic(api_key="any-key", base_url=url, max_retries=0)
