"""Fixtures of the dispatch tests: a partition landed and routed, ready to submit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from llm_pipelines.costs import default_price_table
from llm_pipelines.intake import ingest_partition
from llm_pipelines.routing import default_policy
from llm_pipelines.routing.route import route_partition
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import utcnow


@pytest.fixture
def routed_partition(tmp_path: Path, day: str) -> Callable[[Sequence[str]], Lake]:
    """``routed(task_ids)``: a lake where batchable tasks with these ids (the ``i``-th asking
    "grade answer <i>") are landed and routed for the test's day."""

    def routed(task_ids: Sequence[str]) -> Lake:
        lake = Lake(str(tmp_path / "lake"))
        tasks = [
            {
                "task_id": task_id,
                "task_type": "offline_eval",
                "model": "claude-haiku-4-5",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": f"grade answer {i}"}],
            }
            for i, task_id in enumerate(task_ids)
        ]
        LandingZone(lake).append(tasks, partition=day)
        ingest_partition(lake, day)
        route_partition(lake, day, default_policy(), default_price_table(), utcnow())
        return lake

    return routed
