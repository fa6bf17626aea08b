"""Routing a day again after it was dispatched never answers a task twice, nor drops a late one.

A second routing pass can decide differently (a new "now" moves deadlines inside the batch
turnaround; an operator switches policy). Dispatch must go by what was already done, not by
the route the task carries today.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pyarrow.compute as pc
import yaml

from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import RESULTS, RESULTS_SCHEMA

CYCLE = ["raw_llm_events", "routed_tasks", "realtime_results", "batch_submissions"]


def _all_realtime_policy(tmp_path: Path) -> str:
    types = ["catalog_description", "ticket_triage", "offline_eval", "chat_reply", "agent_assist"]
    path = tmp_path / "all-realtime.yaml"
    path.write_text(yaml.safe_dump({"batch_turnaround_hours": 24, "realtime_task_types": types}))
    return str(path)


def _answer_counts(lake: Lake, day: str) -> collections.Counter[str]:
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), ["task_id"], RESULTS_SCHEMA)
    return collections.Counter(results["task_id"].to_pylist())


def test_rerouting_a_dispatched_day_answers_nothing_twice(
    tmp_path: Path, lake: Lake, day: str, materialize_assets, tick_sensor
) -> None:
    LandingZone(lake).append(generate_tasks(day, 120, seed=11), partition=day, flush_id="first")
    first = materialize_assets(CYCLE)
    submitted = first.asset_materializations_for_node("batch_submissions")[0].metadata
    assert submitted["requests"].value > 0

    # Everything is real-time now, including the tasks already sitting in batches.
    policy = {"ops": {"routed_tasks": {"config": {"policy_path": _all_realtime_policy(tmp_path)}}}}
    again = materialize_assets(CYCLE, policy)
    rerun = again.asset_materializations_for_node("realtime_results")[0].metadata
    assert rerun["tasks"].value == 0, "nothing new to answer: every task was dispatched"
    assert rerun["already_answered"].value > submitted["requests"].value

    # A late task for the same day is answered, not lost in a chunk already marked done.
    late = {
        "task_id": "late-chat-1",
        "task_type": "chat_reply",
        "model": "claude-sonnet-5-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Is my order on its way?"}],
    }
    LandingZone(lake).append([late], partition=day, flush_id="late")
    third = materialize_assets(CYCLE, policy)
    assert third.asset_materializations_for_node("realtime_results")[0].metadata["tasks"].value == 1

    for request in tick_sensor().run_requests:
        materialize_assets(["batch_results"], request.run_config)
    answers = _answer_counts(lake, day)
    assert answers["late-chat-1"] == 1
    assert max(answers.values()) == 1, "no task answered twice"
    ledger = partition_ledger(lake, day)
    assert ledger.lost == 0 and ledger.duplicated == 0 and ledger.open == 0, ledger
    routes = lake.read_table(lake.files(RESULTS, day, ".parquet"), ["route"], RESULTS_SCHEMA)
    assert pc.sum(pc.equal(routes["route"], "batch")).as_py() == submitted["requests"].value
