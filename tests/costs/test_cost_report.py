"""llm_cost_report and its daily_budget check, through Dagster on the emulator."""

from __future__ import annotations

import dagster as dg
import pyarrow.compute as pc
import pytest

from llm_pipelines.costs.report import LEVERS
from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.resources import CostPolicyResource
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import RESULTS, RESULTS_SCHEMA

CYCLE = [
    "raw_llm_events",
    "routed_tasks",
    "realtime_results",
    "reused_results",
    "batch_submissions",
]
COLLECT = ["batch_results", "reused_results", "llm_cost_report"]


def run_and_report(materialize_assets, tick_sensor) -> dict[str, object]:
    """The landed day run to the end (cycle, then collection); its cost report's metadata."""
    materialize_assets(CYCLE)
    report = None
    for request in tick_sensor().run_requests:
        report = materialize_assets(COLLECT, request.run_config)
    assert report is not None
    metadata = report.asset_materializations_for_node("llm_cost_report")[0].metadata
    return {key: value.value for key, value in metadata.items()}


@pytest.fixture
def reported_day(lake: Lake, day: str, materialize_assets, tick_sensor) -> dict[str, object]:
    """A reference-workload day run to the end; the metadata of its cost report."""
    LandingZone(lake).append(
        generate_tasks(day, 150, seed=11, rerequest_share=0.1, eval_documents=4), partition=day
    )
    return run_and_report(materialize_assets, tick_sensor)


def test_report_totals_levers_and_slices_match_the_result_rows(
    lake: Lake, day: str, reported_day: dict[str, object]
) -> None:
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    meta = reported_day
    assert meta["results"] == results.num_rows
    assert meta["cost_usd"] == pytest.approx(pc.sum(results["cost_usd"]).as_py(), abs=1e-5)
    sync = pc.sum(results["sync_cost_usd"]).as_py()
    assert meta["all_sync_cost_usd"] == pytest.approx(sync, abs=1e-5)
    saved = sum(meta[f"saved_usd_{lever}"] for lever in LEVERS)
    assert saved == pytest.approx(meta["saved_usd"], abs=1e-5), "the levers add up"
    assert meta["savings_pct"] == pytest.approx(100 * meta["saved_usd"] / sync, abs=0.01)

    def route_sum(route: str, column: str) -> float:
        rows = results.filter(pc.equal(results["route"], route))
        return pc.sum(rows[column]).as_py() or 0.0

    # With a 50% discount, batching saved exactly what the batch route still cost.
    assert meta["saved_usd_batching"] == pytest.approx(route_sum("batch", "cost_usd"), abs=1e-5)
    # Reuse saved the whole all-sync cost of the reused rows, which cost nothing.
    assert meta["saved_usd_reuse"] == pytest.approx(route_sum("reuse", "sync_cost_usd"), abs=1e-5)
    assert meta["cost_usd_route_reuse"] == 0
    assert meta["saved_usd_reuse"] > 0 and meta["saved_usd_caching"] > 0
    assert meta["saved_usd_downshifting"] > 0
    assert meta["cost_usd_route_realtime"] == pytest.approx(
        route_sum("realtime", "cost_usd"), abs=1e-5
    )
    for key in ("cost_usd_model_claude-haiku-5-5", "cost_usd_task_type_ticket_triage"):
        assert isinstance(meta[key], float)
    assert 0 < meta["cache_read_share_pct"] < 100
    markdown = str(meta["report"])
    assert "| lever | saved (USD) | % of all-sync |" in markdown
    for lever in LEVERS:
        assert f"| {lever} |" in markdown
    assert "| route: batch |" in markdown and "| task type: offline_eval |" in markdown


def _budget_check(materialize_assets, budget: float | None) -> dg.AssetCheckEvaluation:
    override = {"cost_policy": CostPolicyResource(daily_budget_usd=budget)}
    result = materialize_assets(["llm_cost_report"], resources_override=override)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    return checks["daily_budget"]


def test_daily_budget_check_passes_within_and_fails_over_budget(
    reported_day: dict[str, object], materialize_assets
) -> None:
    spent = float(reported_day["cost_usd"])
    within = _budget_check(materialize_assets, spent * 2)
    assert within.passed
    assert within.metadata["budget_used_pct"].value == pytest.approx(50, abs=0.1)
    over = _budget_check(materialize_assets, spent / 2)
    assert not over.passed
    assert over.severity == dg.AssetCheckSeverity.ERROR
    assert "over by" in (over.description or "")
    assert over.metadata["cost_usd"].value == pytest.approx(spent, abs=1e-5)
    unset = _budget_check(materialize_assets, None)
    assert unset.passed and unset.description == "no daily budget configured"


def test_migration_off_a_retired_model_is_its_own_lever(
    lake: Lake, day: str, materialize_assets, tick_sensor
) -> None:
    """Work for a retired model is moved to its successor (the shipped policy migrates): the
    price change is the migration lever's, not counted as right-sizing, and the five levers
    still add up to the saving."""
    from llm_pipelines.costs import default_price_table
    from llm_pipelines.costs.report import migrated_task_ids

    retired = {
        "task_type": "legacy_summary",
        "model": "claude-sonnet-4-5",  # retired 2026-11-30; its successor is Sonnet 5.5
        "max_tokens": 200,
    }
    LandingZone(lake).append(
        [
            *generate_tasks(day, 60, seed=3),
            *(
                {
                    **retired,
                    "task_id": f"legacy-{n}",
                    "messages": [{"role": "user", "content": f"Summarise policy {n}. " * 20}],
                }
                for n in range(6)
            ),
        ],
        partition=day,
    )
    meta = run_and_report(materialize_assets, tick_sensor)

    migrated = migrated_task_ids(lake, day)
    assert sorted(migrated.to_pylist()) == [f"legacy-{n}" for n in range(6)]
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    rows = results.filter(pc.is_in(results["task_id"], value_set=migrated)).to_pylist()
    assert len(rows) == 6 and {row["model"] for row in rows} == {"claude-sonnet-5-5"}
    assert {row["route"] for row in rows} == {"batch"}  # distinct prompts: none reused
    # S - D by hand: the all-sync counterfactual on the retired model, against the same
    # tokens, all as plain input, on the successor at list price.
    successor = default_price_table().price("claude-sonnet-5-5")
    expected = 0.0
    for row in rows:
        prompt = sum(
            row[name] or 0
            for name in (
                "input_tokens",
                "cache_read_tokens",
                "cache_write_5m_tokens",
                "cache_write_1h_tokens",
            )
        )
        rates = successor.rates(prompt)
        expected += (
            row["sync_cost_usd"]
            - (prompt * rates.input + row["output_tokens"] * rates.output) / 1e6
        )
    assert meta["saved_usd_migration"] == pytest.approx(expected, abs=1e-6)
    assert meta["saved_usd_migration"] != 0
    saved = sum(meta[f"saved_usd_{lever}"] for lever in LEVERS)
    assert saved == pytest.approx(meta["saved_usd"], abs=1e-5), "the levers add up"
