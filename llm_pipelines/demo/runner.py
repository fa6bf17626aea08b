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
from llm_pipelines.demo.progress import QuietReporter, Reporter
from llm_pipelines.demo.workload import (
    REFERENCE_EVAL_DOCUMENTS,
    REFERENCE_REREQUEST_SHARE,
    generate_tasks,
)
from llm_pipelines.dispatch.collect import in_flight
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.emulator import EmulatorConfig, EmulatorStore
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.sensors.daemon import QUIET_LOGS, InProcessDaemon
from llm_pipelines.storage.datasets import TASKS
from llm_pipelines.storage.landing import LandingZone


@dataclass
class DayOnEmulator:
    """Where a command runs one day: the lake, the emulator, how it waits and reports."""

    lake_url: str
    emulator_dir: str
    day: str
    batch_latency_s: float = 2.0
    faults: str = ""
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
        faults=options.faults,
    )
    daemon.tolerate_failed_runs = bool(options.faults)
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

    # The sensor decides what to collect or resubmit; the daemon launches one run per key.
    deadline = time.monotonic() + options.timeout_s
    # A batch running this long past its latency has stalled (``--faults chaos``): an
    # operator would cancel it, and its requests are retried in a new batch.
    stall_after_s = max(30.0, 10 * options.batch_latency_s)
    quiet_since = time.monotonic()
    submitted = len(in_flight(lake, options.day))
    with reporter.step("collecting batches as they end", total=submitted) as collecting:
        while True:
            launched = daemon.tick(["batch_completion_sensor"])
            collecting.advance(sum(key.startswith("collect-") for key in launched))
            # Retries go out in new batches: the total is what was collected plus what flies.
            collecting.update(total=collecting.completed + len(in_flight(lake, options.day)))
            waiting = partition_ledger(lake, options.day).open
            if not waiting:
                break
            if launched:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > stall_after_s:
                reporter.say("batches have stalled: cancelling them; their requests are retried")
                daemon.run("cancel_batches", options.day)
                quiet_since = time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{waiting} tasks still open after {options.timeout_s}s")
            time.sleep(options.poll_interval_s)
    launched_keys = daemon.launched.get("batch_completion_sensor", [])
    collected = [key for key in launched_keys if key.startswith("collect-")]
    if not collected:
        # Every task went real-time: the report still needs one refresh.
        daemon.run("collect_batch_results", options.day)

    tasks_path = lake.path(TASKS, options.day, TASKS_FILE)
    routed = lake.read_table([tasks_path], ["task_id", "route"])
    ledger = partition_ledger(lake, options.day, routed["task_id"].combine_chunks())
    report = build_report(lake, options.day)
    routes = Counter(routed["route"].to_pylist())
    levers = report.metadata()
    return {
        "date": options.day,
        "lake": lake.url,
        "events": options.events,
        "valid": ledger.valid,
        "dead_lettered": ledger.dead_lettered + ledger.intake_rejected,
        "rejected_at_intake": ledger.intake_rejected,
        "duplicates_dropped": options.events - ledger.valid - ledger.intake_rejected,
        "batched": routes["batch"],
        "realtime": routes["realtime"],
        "reused": routes["reuse"],
        "batches": len(collected),
        "retrying": ledger.retrying,
        "faults_injected": sum(
            EmulatorStore(EmulatorConfig(state_dir=options.emulator_dir)).fault_totals().values()
        ),
        "succeeded": ledger.succeeded,
        "lost": ledger.lost + ledger.pending,
        "duplicated": ledger.duplicated + ledger.conflicted,
        "cost_usd": round(report.total.cost_usd, 6),
        "all_sync_cost_usd": round(report.total.sync_cost_usd, 6),
        "savings_pct": round(report.total.savings_pct, 2),
        **{f"savings_pct_{lever}": levers[f"savings_pct_{lever}"] for lever in LEVERS},
        "cache_read_share_pct": levers["cache_read_share_pct"],
        "elapsed_s": round(time.monotonic() - started, 2),
        "report_markdown": report.markdown(),
    }
