"""The routing policy: each rule, the deadline edge, file errors naming the field, its source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from llm_pipelines.costs import default_price_table
from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.resources import CostPolicyResource
from llm_pipelines.resources.policy import BUDGET_ENV
from llm_pipelines.routing import POLICY_ENV, PolicyError, RoutingPolicy, load_policy
from llm_pipelines.routing.policy import break_even_group_size
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import TASKS, TASKS_FILE, TIMESTAMP

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
POLICY = RoutingPolicy(
    batch_turnaround_hours=6,
    realtime_task_types=["chat_reply"],
    realtime_max_priority=1,
)


def _tasks(*rows: dict[str, Any]) -> pa.RecordBatch:
    defaults = {"task_type": "bulk", "requires_realtime": False, "deadline": None, "priority": 5}
    full = [{**defaults, **row} for row in rows]
    return pa.RecordBatch.from_pylist(
        full,
        schema=pa.schema(
            [
                ("task_type", pa.string()),
                ("requires_realtime", pa.bool_()),
                ("deadline", TIMESTAMP),
                ("priority", pa.int8()),
            ]
        ),
    )


def test_each_rule_decides_and_the_first_match_wins() -> None:
    tasks = _tasks(
        {"requires_realtime": True},  # flagged by the producer
        {"task_type": "chat_reply"},  # interactive by type
        {"deadline": NOW + timedelta(hours=1)},  # due before a batch can be trusted to finish
        {"priority": 0},  # urgent
        {"priority": 1},  # urgent enough (the policy's limit is inclusive)
        {"priority": 2},  # not urgent: batch
        {},  # nothing special: batch
        # Several rules match: the first in order is the one recorded.
        {"task_type": "chat_reply", "requires_realtime": True, "priority": 0},
        {"task_type": "chat_reply", "deadline": NOW + timedelta(minutes=5)},
        {"deadline": NOW + timedelta(minutes=5), "priority": 0},
    )
    route, rule = POLICY.decide(tasks, NOW)
    assert rule.to_pylist() == [
        "requires_realtime",
        "task_type",
        "deadline",
        "priority",
        "priority",
        "default",
        "default",
        "requires_realtime",
        "task_type",
        "deadline",
    ]
    assert route.to_pylist() == ["realtime"] * 5 + ["batch"] * 2 + ["realtime"] * 3


def test_deadline_edge_against_the_batch_turnaround_budget() -> None:
    cutoff = NOW + timedelta(hours=POLICY.batch_turnaround_hours)
    tasks = _tasks(
        {"deadline": cutoff - timedelta(microseconds=1)},  # a hair too soon: real-time
        {"deadline": cutoff},  # exactly the budget: a batch can make it
        {"deadline": cutoff + timedelta(seconds=1)},
        {"deadline": NOW - timedelta(days=1)},  # already overdue: as fast as possible
        {"deadline": None},  # no deadline: batch
    )
    route, rule = POLICY.decide(tasks, NOW)
    assert route.to_pylist() == ["realtime", "batch", "batch", "realtime", "batch"]
    assert rule.to_pylist() == ["deadline", "default", "default", "deadline", "default"]


def test_without_a_priority_rule_priority_never_routes() -> None:
    policy = POLICY.model_copy(update={"realtime_max_priority": None})
    route, rule = policy.decide(_tasks({"priority": 0}), NOW)
    assert (route.to_pylist(), rule.to_pylist()) == (["batch"], ["default"])


def test_break_even_group_sizes_follow_the_price_table() -> None:
    price = default_price_table().price("claude-sonnet-5-5")
    # 1h: write 2x input. n=2 costs 2 + 0.1 = 2.1 inputs > 2; n=3 costs 2.2 < 3.
    assert break_even_group_size(price, "1h") == 3
    # 5m: write 1.25x. n=2 costs 1.35 < 2.
    assert break_even_group_size(price, "5m") == 2


VALID = {"batch_turnaround_hours": 24}


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"batch_turnaround_hours": "soon"}, "batch_turnaround_hours: Input should be a valid"),
        ({}, "batch_turnaround_hours: Field required"),
        ({**VALID, "batch_turnaround_hours": 48}, "batch_turnaround_hours: Input should be less"),
        ({**VALID, "realtime_task_type": ["chat"]}, "realtime_task_type: Extra inputs"),
        ({**VALID, "realtime_max_priority": 12}, "realtime_max_priority: Input should be less"),
        (
            {**VALID, "prompt_caching": {"batch_ttl": "2h"}},
            "prompt_caching.batch_ttl: Input should be '5m' or '1h'",
        ),
        ({**VALID, "prompt_caching": {"min_group_size": 0}}, "prompt_caching.min_group_size"),
        ({**VALID, "reuse": {"lookback_days": -1}}, "reuse.lookback_days"),
        ({**VALID, "reuse": {"exclude": ["x"]}}, "reuse.exclude: Extra inputs"),
        (
            {**VALID, "model_map": {"catalog_description": "gpt-4o"}},
            "model_map.catalog_description: model 'gpt-4o' is not in the price table",
        ),
        (["batch_turnaround_hours"], "policy: Input should be a valid dictionary"),
    ],
)
def test_policy_file_errors_name_the_file_and_field(
    tmp_path: Path, document: object, named: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert str(path) in str(error.value)
    assert named in str(error.value)


def test_unreadable_and_malformed_policy_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing\.yaml: cannot read it"):
        load_policy(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("batch_turnaround_hours: [24\n")
    with pytest.raises(PolicyError, match=r"broken\.yaml: not valid YAML"):
        load_policy(broken)


def test_policy_and_budget_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POLICY_ENV, str(tmp_path / "ours.yaml"))
    monkeypatch.setenv(BUDGET_ENV, "125.5")
    resource = CostPolicyResource()
    assert resource.routing_policy_path == str(tmp_path / "ours.yaml")
    assert resource.daily_budget_usd == 125.5
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="LLM_PIPELINES_DAILY_BUDGET_USD='lots' is not a number"):
        CostPolicyResource()


def _routed(lake: Lake, day: str) -> pa.Table:
    return lake.read_table([lake.path(TASKS, day, TASKS_FILE)])


def test_users_policy_file_through_the_resource_and_a_run_override(
    tmp_path: Path, lake: Lake, day: str, materialize_assets
) -> None:
    LandingZone(lake).append(generate_tasks(day, 60, seed=4), partition=day)
    ours = tmp_path / "ours.yaml"
    ours.write_text(
        yaml.safe_dump(
            {
                "batch_turnaround_hours": 1,
                "realtime_task_types": ["ticket_triage"],
                "model_map": {"offline_eval": "claude-haiku-4-5"},
            }
        )
    )
    with_ours = {"cost_policy": CostPolicyResource(routing_policy_path=str(ours))}
    assets = ["raw_llm_events", "routed_tasks"]
    result = materialize_assets(assets, resources_override=with_ours)
    metadata = result.asset_materializations_for_node("routed_tasks")[0].metadata
    assert metadata["policy"].value == str(ours)
    tasks = _routed(lake, day)
    by_type = {
        (t, r, rule)
        for t, r, rule in zip(
            tasks["task_type"].to_pylist(),
            tasks["route"].to_pylist(),
            tasks["rule"].to_pylist(),
            strict=True,
        )
    }
    # Triage is real-time by our type rule; chat is no longer real-time by type.
    assert ("ticket_triage", "realtime", "task_type") in by_type
    assert not any(t == "chat_reply" and rule == "task_type" for t, _, rule in by_type)
    # Right-sizing from our file; the requested model is kept beside it.
    evals = tasks.filter(pa.compute.equal(tasks["task_type"], "offline_eval"))
    assert set(evals["model"].to_pylist()) == {"claude-haiku-4-5"}
    assert set(evals["requested_model"].to_pylist()) == {"claude-sonnet-5-5"}
    assert all('"model":"claude-haiku-4-5"' in r for r in evals["request"].to_pylist())

    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"batch_turnaround_hours": 24, "model_map": {"x": "gpt"}}))
    with pytest.raises(PolicyError, match=r"model_map\.x: model 'gpt'"):
        materialize_assets(
            assets,
            {"ops": {"routed_tasks": {"config": {"policy_path": str(broken)}}}},
            resources_override=with_ours,
        )


def test_shipped_policy_downshifts_bulk_work_and_keeps_the_requested_model(
    lake: Lake, day: str, materialize_assets
) -> None:
    LandingZone(lake).append(generate_tasks(day, 80, seed=6), partition=day)
    materialize_assets(["raw_llm_events", "routed_tasks"])
    tasks = _routed(lake, day)
    pairs = set(
        zip(
            tasks["task_type"].to_pylist(),
            tasks["requested_model"].to_pylist(),
            tasks["model"].to_pylist(),
            strict=True,
        )
    )
    assert ("ticket_triage", "claude-sonnet-5-5", "claude-haiku-5-5") in pairs
    assert ("offline_eval", "claude-sonnet-5-5", "claude-sonnet-5-5") in pairs
    assert ("chat_reply", "claude-sonnet-5-5", "claude-sonnet-5-5") in pairs


def test_retired_models_are_migrated_and_the_model_rule_says_how_each_was_chosen(
    tmp_path: Path,
) -> None:
    """Right-sizing first, then migration off a retired model (a right-sized target that has
    retired migrates too); the producer's model stays as requested_model and the request
    goes out with the new model."""
    from llm_pipelines.intake import ingest_partition
    from llm_pipelines.routing.route import route_partition

    lake = Lake(str(tmp_path / "lake"))
    day = "2026-11-23"
    base = {"max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}
    LandingZone(lake).append(
        [
            {**base, "task_id": "kept", "task_type": "bulk", "model": "claude-sonnet-5-5"},
            {**base, "task_id": "sized", "task_type": "triage", "model": "claude-sonnet-5-5"},
            {**base, "task_id": "old", "task_type": "bulk", "model": "claude-opus-4-1"},
            {**base, "task_id": "sized-old", "task_type": "legacy", "model": "claude-sonnet-5-5"},
        ],
        partition=day,
    )
    ingest_partition(lake, day)
    policy = POLICY.model_copy(
        update={"model_map": {"triage": "claude-haiku-4-5", "legacy": "claude-opus-4-1"}}
    )
    stats = route_partition(
        lake,
        day,
        policy,
        default_price_table(),
        NOW,
        migrations={"claude-opus-4-1": "claude-opus-4-5"},
    )
    tasks = lake.read_table([lake.path(TASKS, day, TASKS_FILE)]).sort_by("task_id")
    rows = {r["task_id"]: r for r in tasks.to_pylist()}
    expected = {
        "kept": ("claude-sonnet-5-5", "requested"),
        "sized": ("claude-haiku-4-5", "right_sized"),
        "old": ("claude-opus-4-5", "model_migrated"),
        "sized-old": ("claude-opus-4-5", "model_migrated"),
    }
    for task_id, (model, how) in expected.items():
        row = rows[task_id]
        assert (row["model"], row["model_rule"]) == (model, how), row
        assert yaml.safe_load(row["request"])["model"] == model
    assert rows["old"]["requested_model"] == "claude-opus-4-1"
    assert stats.by_model_rule == {"requested": 1, "right_sized": 1, "model_migrated": 2}


def test_the_lifecycle_policy_validates_and_names_the_field() -> None:
    raw = {"batch_turnaround_hours": 6, "model_lifecycle": {"retired": "ignore"}}
    from llm_pipelines.routing.policy import parse_policy

    with pytest.raises(PolicyError, match=r"model_lifecycle\.retired"):
        parse_policy(raw, "test.yaml")
