"""The three workloads end to end through Dagster: producers → shared pipeline → consumers,
driven by the jobs, the sensors and the emulator through the real SDK."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pytest

from llm_pipelines import workloads
from llm_pipelines.emulator import EmulatorConfig, EmulatorStore, FaultPlan, serving
from llm_pipelines.resources import AnthropicResource, LakeResource
from llm_pipelines.storage import Lake
from llm_pipelines.storage.datasets import LANDING
from llm_pipelines.workloads.common import OUTPUTS, SOURCES, read_table
from llm_pipelines.workloads.offline_eval import CANDIDATE_MODELS

NUMERIC = (dg.IntMetadataValue, dg.FloatMetadataValue)


def output(lake: Lake, name: str, day: str):
    return read_table(lake, OUTPUTS, name, day)


def latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict[str, Any]:
    [record] = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
    return record.asset_materialization.metadata


def test_todays_batch_cycle_runs_every_workload_to_its_output(
    daemon, lake: Lake, day: str, instance: dg.DagsterInstance
) -> None:
    # The launchpad job with its defaults: no run config at all.
    daemon.run("todays_batch_cycle", day)
    daemon.settle()

    products = read_table(lake, SOURCES, "products", day)
    catalog = output(lake, "catalog_descriptions", day)
    assert catalog.num_rows == products.num_rows == 40
    assert catalog["product_id"].to_pylist() == products["product_id"].to_pylist()
    assert set(catalog["status"].to_pylist()) <= {"succeeded", "truncated"}
    assert all(
        d == "answer reached max_tokens before it ended"
        for d in catalog.filter(pc.equal(catalog["status"], "truncated"))["detail"].to_pylist()
    )
    described = catalog.filter(pc.equal(catalog["status"], "succeeded"))
    assert described.num_rows > 30
    assert all(text for text in described["description"].to_pylist())
    assert set(catalog["route"].to_pylist()) == {"batch"}
    assert set(catalog["model"].to_pylist()) == {"claude-haiku-5-5"}
    # The style guide is one shared prefix: every request after the first reads it cached.
    assert pc.sum(pc.greater(catalog["cache_read_tokens"], 0)).as_py() >= catalog.num_rows - 1

    triage = output(lake, "support_ticket_triage", day)
    assert triage.num_rows == 60
    parsed = triage.filter(pc.equal(triage["status"], "succeeded"))
    assert parsed.num_rows == 60, "the emulator honours the JSON schema in the prompt"
    assert set(parsed["category"].to_pylist()) <= {
        "billing",
        "shipping",
        "product",
        "account",
        "other",
    }
    insights = output(lake, "support_daily_insights", day)
    for dimension in ("category", "issue", "sentiment", "urgency"):
        rows = insights.filter(pc.equal(insights["dimension"], dimension))
        assert pc.sum(rows["tickets"]).as_py() == parsed.num_rows, dimension
        assert rows["rank"].to_pylist() == list(range(1, rows.num_rows + 1))

    judgements = output(lake, "eval_judgements", day)
    assert judgements.num_rows == 24 * len(CANDIDATE_MODELS)
    assert set(judgements["judge_status"].to_pylist()) == {"succeeded"}
    assert pc.min(judgements["score"]).as_py() >= 1 and pc.max(judgements["score"]).as_py() <= 10
    scores = output(lake, "eval_model_scores", day)
    assert sorted(scores["model"].to_pylist()) == sorted(CANDIDATE_MODELS)
    assert scores["rank"].to_pylist() == [1, 2]
    assert scores["mean_score"].to_pylist() == sorted(scores["mean_score"].to_pylist())[::-1]
    for row in scores.to_pylist():
        mine = judgements.filter(pc.equal(judgements["model"], row["model"]))
        assert row["mean_score"] == pytest.approx(pc.mean(mine["score"]).as_py(), abs=1e-3)
        assert 0 < row["answer_cost_usd"] < row["answer_all_sync_cost_usd"]

    # The evaluation took two rounds through the same pipeline, each step launched once.
    steps = [key.rsplit("-2026", 1)[0] for key in daemon.launched["offline_eval_sensor"]]
    assert steps == ["eval_judge_tasks", "eval_judge_cycle", "eval_judgements"]

    # Every materialization of every asset carries numbers the UI can plot.
    for key in daemon.defs.resolve_asset_graph().get_all_asset_keys():
        if key == dg.AssetKey("model_catalog"):
            continue  # refreshed by its own schedule (tests/providers/test_catalog.py)
        metadata = latest_metadata(instance, key.to_user_string())
        assert any(isinstance(v, NUMERIC) for v in metadata.values()), key
    for asset in ("catalog_descriptions", "support_ticket_triage", "eval_model_scores"):
        metadata = latest_metadata(instance, asset)
        assert metadata.get("saved_usd", metadata.get("answer_saved_usd")).value > 0, asset
    # Nothing lost across both rounds; every workload check passes.
    assert daemon.latest_checks("llm_cost_report")["conservation"].passed
    for asset in ("catalog_descriptions", "support_ticket_triage", "eval_judgements"):
        results = daemon.latest_checks(asset)
        assert results and all(r.passed for r in results.values() if r.severity.value == "ERROR")
    # Descriptions cut short by max_tokens are not publishable: the warning says so.
    truncated = catalog.filter(pc.equal(catalog["status"], "truncated")).num_rows
    described_check = daemon.latest_checks("catalog_descriptions")["every_product_described"]
    assert described_check.passed == (truncated == 0)
    assert described_check.metadata["truncated"].value == truncated


PRODUCTS = 40


def test_failed_and_missing_answers_are_reported_with_their_reason(
    tmp_path: Path, lake: Lake, day: str, instance: dg.DagsterInstance, daemon_for
) -> None:
    # A quarter of the answers fail, drawn at random per batch: with 40 products the chance
    # that none (or all) fail is about 1e-5; with 16 it was 1% (a flaky run in CI).
    emulator = EmulatorConfig(
        state_dir=str(tmp_path / "http-emulator"),
        batch_latency_s=3_600,
        faults=FaultPlan(seed=3, errored_rate=0.25, non_retryable_error_share=1.0),
    )
    with serving(emulator) as url:
        resources = {
            "lake": LakeResource(url=lake.url),
            "anthropic": AnthropicResource(base_url=url, max_retries=0),
        }
        daemon = daemon_for(resources)
        daemon.run("catalog_produce", day, run_config=products(PRODUCTS))
        daemon.run("daily_batch_cycle", day)

        # Batches still running: the sensor waits rather than building a half-empty table...
        assert daemon.tick() == []
        assert "catalog_sensor" not in {k for k, v in daemon.launched.items() if v}
        # ...and a consumer run by hand reports every row as missing, saying where it is.
        daemon.run("catalog_consume", day)
        early = output(lake, "catalog_descriptions", day)
        assert early.num_rows == PRODUCTS
        assert set(early["status"].to_pylist()) == {"missing"}
        assert all(
            d.startswith("in flight in batch msgbatch_") for d in early["detail"].to_pylist()
        )

        EmulatorStore(emulator).advance_clock(3_601)
        daemon.settle()

    [key] = daemon.launched["catalog_sensor"]
    catalog = output(lake, "catalog_descriptions", day)
    assert catalog.num_rows == PRODUCTS, "failed rows stay in the output"
    failed = catalog.filter(pc.equal(catalog["status"], "failed"))
    assert 0 < failed.num_rows < PRODUCTS
    assert all("invalid_request_error" in d for d in failed["detail"].to_pylist())
    assert pc.all(pc.is_null(failed["description"])).as_py()
    assert f"failed{failed.num_rows}" in key
    metadata = latest_metadata(instance, "catalog_descriptions")
    assert metadata["failed"].value == failed.num_rows
    assert metadata["missing"].value == 0
    assert "invalid_request_error" in metadata["not_described"].value
    checks = daemon.latest_checks("catalog_descriptions")
    assert checks["every_product_has_a_row"].passed
    assert not checks["every_product_described"].passed
    assert checks["every_product_described"].severity == dg.AssetCheckSeverity.WARN


def test_refused_descriptions_are_told_apart_from_truncated_ones(
    tmp_path: Path, lake: Lake, day: str, instance: dg.DagsterInstance, daemon_for
) -> None:
    """A refusal is no cut-short answer: a retry gets the same, so the product needs a
    person. It gets its own status, with the refusal's category in the detail."""
    plan = tmp_path / "refusals.yaml"
    plan.write_text("seed: 5\nstop_reason_rates:\n  refusal: 0.3\n  pause_turn: 0.1\n")
    daemon = daemon_for(
        {
            "lake": LakeResource(url=lake.url),
            "anthropic": AnthropicResource(
                emulator_dir=str(tmp_path / "emulator"), emulator_faults=str(plan)
            ),
        }
    )
    daemon.run("catalog_produce", day, run_config=products(PRODUCTS))
    daemon.run("daily_batch_cycle", day)
    daemon.settle()

    catalog = output(lake, "catalog_descriptions", day)
    assert catalog.num_rows == PRODUCTS
    refused = catalog.filter(pc.equal(catalog["status"], "refused"))
    assert 0 < refused.num_rows < PRODUCTS
    assert set(refused["stop_reason"].to_pylist()) == {"refusal"}
    assert all(d.startswith("the model refused: {") for d in refused["detail"].to_pylist())
    truncated = catalog.filter(pc.equal(catalog["status"], "truncated"))
    assert "refusal" not in truncated["stop_reason"].to_pylist()
    assert "pause_turn" in truncated["stop_reason"].to_pylist()
    metadata = latest_metadata(instance, "catalog_descriptions")
    assert metadata["refused"].value == refused.num_rows
    assert metadata["truncated"].value == truncated.num_rows


def test_answers_that_are_not_valid_json_are_kept_as_unparsed(daemon, lake: Lake, day: str) -> None:
    # Too small an output budget: the JSON is cut off mid-object, as a real model's would be.
    config = {
        "ops": {
            "support_tickets": {"config": {"count": 12}},
            "support_ticket_tasks": {"config": {"max_tokens": 12}},
        }
    }
    daemon.run("support_analytics_produce", day, run_config=config)
    daemon.run("daily_batch_cycle", day)
    daemon.settle()
    triage = output(lake, "support_ticket_triage", day)
    assert triage.num_rows == 12
    unparsed = triage.filter(pc.equal(triage["status"], "unparsed"))
    assert unparsed.num_rows == 12
    assert all(a.startswith("{") for a in unparsed["unparsed_answer"].to_pylist())
    assert all(d for d in unparsed["detail"].to_pylist())
    assert pc.all(pc.is_null(unparsed["category"])).as_py()
    insights = output(lake, "support_daily_insights", day)
    status = insights.filter(pc.equal(insights["dimension"], "status")).to_pylist()
    assert status == [
        {"dimension": "status", "value": "unparsed", "tickets": 12, "share_pct": 100.0, "rank": 1}
    ]


def test_tasks_rejected_at_intake_are_reported_with_the_reason(
    daemon, lake: Lake, day: str
) -> None:
    # A typo in the producer's model: intake rejects every task before it has an id.
    config = {"ops": {**products(5)["ops"], "catalog_description_tasks": {"config": {}}}}
    config["ops"]["catalog_description_tasks"]["config"]["model"] = "claude-haiku-9"
    daemon.run("catalog_produce", day, run_config=config)
    daemon.run("daily_batch_cycle", day)
    daemon.settle()
    assert daemon.launched["catalog_sensor"], "all tasks settled (as failures): consumer ran"
    catalog = output(lake, "catalog_descriptions", day)
    assert catalog.num_rows == 5
    assert set(catalog["status"].to_pylist()) == {"failed"}
    assert all(
        d.startswith(
            "intake: model: 'claude-haiku-9' is not a model the pipeline can serve and price"
        )
        for d in catalog["detail"].to_pylist()
    )


def test_rerunning_a_producer_replaces_its_landing_files(daemon, lake: Lake, day: str) -> None:
    daemon.run("catalog_produce", day, run_config=products(10))
    first = lake.files(LANDING, day, ".jsonl")
    daemon.run("catalog_produce", day, run_config=products(10))
    assert lake.files(LANDING, day, ".jsonl") == first
    result = daemon.run("daily_batch_cycle", day)
    intake = result.asset_materializations_for_node("raw_llm_events")[0].metadata
    assert intake["valid"].value == 10 and intake["duplicates"].value == 0


def products(count: int) -> dict[str, Any]:
    return {"ops": {"products": {"config": {"count": count}}}}


def test_every_workload_has_its_group_schedule_sensor_and_lineage() -> None:
    from llm_pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    repo = defs.get_repository_def()
    for module in workloads.MODULES:
        name = module.WORKLOAD
        assert f"{name}_nightly" in {s.name for s in repo.schedule_defs}
        assert f"{name}_sensor" in {s.name for s in repo.sensor_defs}
        keys = [a.key for a in module.ASSETS]
        assert {graph.get(k).group_name for k in keys} == {name}
        output_key = keys[-1]
        upstream = {k.to_user_string() for k in graph.get_ancestor_asset_keys(output_key)}
        # source → tasks → batches → results → workload output
        assert {
            keys[0].to_user_string(),
            keys[1].to_user_string(),
            "raw_llm_events",
            "routed_tasks",
            "batch_submissions",
            "batch_results",
        } <= upstream, name
    for spec in defs.resolve_all_asset_specs():
        assert spec.owners, spec.key


@pytest.mark.parametrize("workload", [m.WORKLOAD for m in workloads.MODULES])
def test_nightly_schedule_lands_the_day_that_just_ended_before_the_batch_cycle(
    workload: str,
) -> None:
    from llm_pipelines.definitions import defs

    schedule = defs.resolve_schedule_def(f"{workload}_nightly")
    assert schedule.job_name == f"{workload}_produce"
    hour, minute = (int(x) for x in schedule.cron_schedule.split()[1::-1])
    assert (hour, minute) < (2, 0), "lands before nightly_batch_cycle sends at 02:00"
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 24, hour, minute, tzinfo=UTC)
    )
    [request] = list(schedule.evaluate_tick(context).run_requests or [])
    assert request.partition_key == "2026-11-23"


def test_intake_waits_for_every_first_round_producer() -> None:
    from llm_pipelines.assets.landing import LANDING_PRODUCERS
    from llm_pipelines.definitions import defs

    assert set(LANDING_PRODUCERS) == {p.key for p in workloads.PRODUCERS}
    # Execution order, not only a drawn edge: the launchpad job runs producers before intake.
    job = defs.resolve_job_def("todays_batch_cycle")
    upstream = job.graph.dependency_structure.all_upstream_outputs_from_node("raw_llm_events")
    assert {o.node.name for o in upstream} == {p.key.to_user_string() for p in workloads.PRODUCERS}
