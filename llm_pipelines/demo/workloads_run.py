"""``llm-pipelines workloads``: today's batch cycle for the three workloads, to their outputs.

Runs ``todays_batch_cycle`` (sources, tasks, intake, routing, submission), then plays the
daemon — ``batch_completion_sensor`` collects batches as they end, each workload's sensor
builds its outputs, the evaluation's sensor runs the judge round — until every workload
output exists, and summarises them. With ``DAGSTER_HOME`` set, the runs land in that instance,
so ``dagster dev`` / the webserver shows them afterwards.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pyarrow.compute as pc

from llm_pipelines.costs.report import build_report
from llm_pipelines.demo.runner import DayOnEmulator
from llm_pipelines.dispatch.collect import in_flight
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.sensors.daemon import InProcessDaemon
from llm_pipelines.storage.lake import Lake
from llm_pipelines.workloads.common import OUTPUTS, read_table

FINAL_OUTPUTS = {
    "catalog": "catalog_descriptions",
    "support_analytics": "support_daily_insights",
    "offline_eval": "eval_model_scores",
}
"""The last asset of each workload: when it has materialized, the workload is done."""


@dataclass
class WorkloadsOptions(DayOnEmulator):
    """What the workloads run on and how big their day is."""

    products: int = 40
    tickets: int = 60


def _instance() -> dg.DagsterInstance:
    # A DAGSTER_HOME keeps the runs for the UI; otherwise nothing outlives the command.
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _materialized(instance: dg.DagsterInstance, asset: str, day: str) -> bool:
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[day]), limit=1
    )
    return bool(found.records)


def run_workloads(options: WorkloadsOptions) -> dict[str, Any]:
    """Run today's batch cycle to every workload output and summarise the outputs."""
    started = time.monotonic()
    reporter = options.reporter
    instance = _instance()
    daemon = InProcessDaemon.on_emulator(
        lake_url=options.lake_url,
        emulator_dir=options.emulator_dir,
        batch_latency_s=options.batch_latency_s,
        instance=instance,
        log_level=options.log_level,
    )
    lake = daemon.resources["lake"].lake()
    reporter.say(daemon.describe())
    sizes = {
        "ops": {
            "products": {"config": {"count": options.products}},
            "support_tickets": {"config": {"count": options.tickets}},
        }
    }
    with reporter.step("todays_batch_cycle: sources → tasks → intake → routing → submission"):
        daemon.run("todays_batch_cycle", options.day, run_config=sizes)

    deadline = time.monotonic() + options.timeout_s
    done: set[str] = set()
    with reporter.step("workload outputs", total=len(FINAL_OUTPUTS)) as outputs:
        while True:
            daemon.tick()
            for workload, asset in FINAL_OUTPUTS.items():
                if workload not in done and _materialized(instance, asset, options.day):
                    done.add(workload)
                    outputs.advance()
            flying = len(in_flight(lake, options.day))
            collected = len(daemon.launched.get("batch_completion_sensor", []))
            outputs.update(
                description=f"workload outputs ({collected} batches collected, {flying} in flight)"
            )
            if len(done) == len(FINAL_OUTPUTS):
                break
            if time.monotonic() > deadline:
                missing = sorted(set(FINAL_OUTPUTS) - done)
                raise TimeoutError(f"no output for {missing} after {options.timeout_s}s")
            time.sleep(options.poll_interval_s)

    report = build_report(lake, options.day)
    ledger = partition_ledger(lake, options.day)
    return {
        "date": options.day,
        "lake": lake.url,
        **summarise(lake, options.day),
        "batches": len(daemon.launched.get("batch_completion_sensor", [])),
        "lost": ledger.lost,
        "duplicated": ledger.duplicated,
        "cost_usd": round(report.total.cost_usd, 6),
        "all_sync_cost_usd": round(report.total.sync_cost_usd, 6),
        "savings_pct": round(report.total.savings_pct, 2),
        "elapsed_s": round(time.monotonic() - started, 2),
    }


def _statuses(table: Any) -> dict[str, int]:
    return {c["values"]: c["counts"] for c in pc.value_counts(table["status"]).to_pylist()}


def summarise(lake: Lake, day: str) -> dict[str, Any]:
    """The headline of each workload output, read back from the lake."""
    catalog = read_table(lake, OUTPUTS, "catalog_descriptions", day)
    triage = read_table(lake, OUTPUTS, "support_ticket_triage", day)
    insights = read_table(lake, OUTPUTS, "support_daily_insights", day)
    issues = insights.filter(pc.equal(insights["dimension"], "issue"))
    scores = read_table(lake, OUTPUTS, "eval_model_scores", day)
    return {
        "catalog": {"products": catalog.num_rows, **_statuses(catalog)},
        "support_analytics": {
            "tickets": triage.num_rows,
            **_statuses(triage),
            "top_issue": issues["value"][0].as_py() if issues.num_rows else None,
        },
        "offline_eval": {
            row["model"]: {
                "mean_score": row["mean_score"],
                "pass_rate_pct": row["pass_rate_pct"],
                "scored": row["scored"],
                "questions": row["questions"],
            }
            for row in scores.to_pylist()
        },
    }
