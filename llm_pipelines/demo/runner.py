"""The demo: one realistic day through the whole flow, in process, on the emulator."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg

from llm_pipelines.assets.partitions import DAILY
from llm_pipelines.costs.report import LEVERS, build_report
from llm_pipelines.demo.daemon import QUIET_LOGS, InProcessDaemon
from llm_pipelines.demo.progress import QuietReporter, Reporter
from llm_pipelines.demo.workload import (
    REFERENCE_EVAL_DOCUMENTS,
    REFERENCE_REREQUEST_SHARE,
    generate_tasks,
)
from llm_pipelines.dispatch.collect import in_flight
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import DEAD_LETTER, DEAD_LETTER_SCHEMA, TASKS
from llm_pipelines.storage.landing import LandingZone


@dataclass
class DayOnEmulator:
    """Where a command runs one day: the lake, the emulator, how it waits and reports."""

    lake_url: str
    emulator_dir: str
    day: str
    batch_latency_s: float = 2.0
    poll_interval_s: float = 0.5
    timeout_s: float = 300.0
    policy_path: str | None = None
    """Routing policy file; None: the deployment's (environment) or the shipped one."""
    reporter: Reporter = field(default_factory=QuietReporter)
    """Messages and progress bars (stderr); quiet unless the CLI passes its own."""
    log_level: str | None = QUIET_LOGS
    """Dagster's console log level for the runs: warnings and errors, not the DEBUG stream."""


@dataclass
class DemoOptions(DayOnEmulator):
    """What the demo runs on: a mixed day of ``events`` tasks."""

    events: int = 2_000
    seed: int = 7
    rerequest_share: float = REFERENCE_REREQUEST_SHARE
    eval_documents: int = REFERENCE_EVAL_DOCUMENTS


def default_day() -> str:
    """The newest complete partition: yesterday (UTC), what the nightly schedule would run."""
    return DAILY.get_last_partition_key() or str(date.today())


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Land a day of tasks, run the daily cycle, let the sensor collect, and summarise."""
    started = time.monotonic()
    reporter = options.reporter
    daemon = InProcessDaemon.on_emulator(
        lake_url=options.lake_url,
        emulator_dir=options.emulator_dir,
        batch_latency_s=options.batch_latency_s,
        instance=dg.DagsterInstance.ephemeral(),
        log_level=options.log_level,
        policy_path=options.policy_path,
    )
    lake = daemon.resources["lake"].lake()
    reporter.say(daemon.describe())
    LandingZone(lake).append(
        reporter.track(
            generate_tasks(
                options.day,
                options.events,
                seed=options.seed,
                rerequest_share=options.rerequest_share,
                eval_documents=options.eval_documents,
            ),
            f"landing events for {options.day}",
            total=options.events,
        ),
        partition=options.day,
        flush_id=f"demo-seed{options.seed}",
    )

    with reporter.step("daily_batch_cycle: intake → routing → real-time + batch submission"):
        daemon.run("daily_batch_cycle", options.day)

    # The sensor decides what to collect; the daemon launches one run per ended batch.
    deadline = time.monotonic() + options.timeout_s
    submitted = len(in_flight(lake, options.day))
    with reporter.step("collecting batches as they end", total=submitted) as collecting:
        while True:
            collecting.advance(len(daemon.tick(["batch_completion_sensor"])))
            flying = len(in_flight(lake, options.day))
            if not flying:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{flying} batches still in flight after {options.timeout_s}s")
            time.sleep(options.poll_interval_s)
    collected = daemon.launched.get("batch_completion_sensor", [])
    if not collected:
        # Every task went real-time: the report still needs one refresh.
        daemon.run("collect_batch_results", options.day)

    tasks_path = lake.path(TASKS, options.day, TASKS_FILE)
    routed = lake.read_table([tasks_path], ["task_id", "route"])
    ledger = partition_ledger(lake, options.day, routed["task_id"].combine_chunks())
    report = build_report(lake, options.day)
    dead_rows = lake.read_table(
        lake.files(DEAD_LETTER, options.day, ".parquet"), ["stage"], schema=DEAD_LETTER_SCHEMA
    ).num_rows
    routes = Counter(routed["route"].to_pylist())
    levers = report.metadata()
    return {
        "date": options.day,
        "lake": lake.url,
        "events": options.events,
        "valid": ledger.valid,
        "dead_lettered": dead_rows,
        "batched": routes["batch"],
        "realtime": routes["realtime"],
        "reused": routes["reuse"],
        "batches": len(collected),
        "succeeded": ledger.succeeded,
        "lost": ledger.lost + ledger.pending,
        "duplicated": ledger.duplicated,
        "cost_usd": round(report.total.cost_usd, 6),
        "all_sync_cost_usd": round(report.total.sync_cost_usd, 6),
        "savings_pct": round(report.total.savings_pct, 2),
        **{f"savings_pct_{lever}": levers[f"savings_pct_{lever}"] for lever in LEVERS},
        "cache_read_share_pct": levers["cache_read_share_pct"],
        "elapsed_s": round(time.monotonic() - started, 2),
        "report_markdown": report.markdown(),
    }
