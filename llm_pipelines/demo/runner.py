"""The demo: one realistic day through the whole flow, in process, on the emulator."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg

from llm_pipelines.assets.partitions import DAILY
from llm_pipelines.costs.report import build_report
from llm_pipelines.definitions import build_definitions
from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.dispatch.collect import in_flight
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.emulator import EmulatorConfig, EmulatorStore
from llm_pipelines.resources import AnthropicResource, LakeResource
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.sensors import daemon
from llm_pipelines.storage.datasets import TASKS
from llm_pipelines.storage.landing import LandingZone


@dataclass
class DemoOptions:
    """What the demo runs on."""

    lake_url: str
    emulator_dir: str
    day: str
    events: int = 2_000
    seed: int = 7
    batch_latency_s: float = 2.0
    faults: str = ""
    poll_interval_s: float = 0.5
    timeout_s: float = 300.0
    progress: Callable[[str], None] = field(default=lambda _message: None)


def default_day() -> str:
    """The newest complete partition: yesterday (UTC), what the nightly schedule would run."""
    return DAILY.get_last_partition_key() or str(date.today())


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Land a day of tasks, run the daily cycle, let the sensor collect, and summarise."""
    started = time.monotonic()
    say = options.progress
    resources = {
        "lake": LakeResource(url=options.lake_url),
        "anthropic": AnthropicResource(
            emulator_dir=options.emulator_dir,
            emulator_batch_latency_s=options.batch_latency_s,
            emulator_faults=options.faults,
        ),
    }
    defs = build_definitions(resources)
    lake = resources["lake"].lake()
    instance = dg.DagsterInstance.ephemeral()

    say(f"landing {options.events:,} events for {options.day} in {lake.url}")
    LandingZone(lake).append(
        generate_tasks(options.day, options.events, seed=options.seed),
        partition=options.day,
        flush_id=f"demo-seed{options.seed}",
    )

    say("running daily_batch_cycle: intake → routing → real-time answers + batch submission")
    cycle = defs.resolve_job_def("daily_batch_cycle").execute_in_process(
        partition_key=options.day, instance=instance
    )
    if not cycle.success:
        raise RuntimeError("daily_batch_cycle failed; see the log above")

    collect = defs.resolve_job_def("collect_batch_results")
    collected = 0
    cursor: str | None = None
    deadline = time.monotonic() + options.timeout_s
    # A batch running this long past its latency has stalled (``--faults chaos``): an
    # operator would cancel it, and its requests are retried in a new batch.
    stall_after_s = max(30.0, 10 * options.batch_latency_s)
    quiet_since = time.monotonic()
    while True:
        # The sensor decides what to collect or resubmit; the demo plays the daemon.
        result = daemon.tick(instance, resources, cursor)
        cursor = result.cursor
        requests = daemon.new_run_requests(instance, result)
        if requests:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > stall_after_s:
            say("batches have stalled: running cancel_batches; their requests will be retried")
            defs.resolve_job_def("cancel_batches").execute_in_process(
                partition_key=options.day, instance=instance
            )
            quiet_since = time.monotonic()
        for request in requests:
            if request.job_name == collect.name:
                collected += 1
                say(f"collecting {request.tags['llm_pipelines/batch_id']}")
            else:
                say(f"resubmitting retries of {request.partition_key}")
            if not daemon.launch(defs, instance, request).success:
                # Like the daemon: the sensor asks again under a fresh run key.
                say(f"run {request.run_key} failed; the sensor will ask again")
        flying = len(in_flight(lake, options.day))
        waiting = partition_ledger(lake, options.day).open
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting} tasks still open after {options.timeout_s}s")
        say(f"waiting for {flying} batch(es) to end and {waiting} task(s) to settle")
        time.sleep(options.poll_interval_s)
    if not collected:
        # Every task went real-time: the report still needs one refresh.
        collect.execute_in_process(partition_key=options.day, instance=instance)

    tasks_path = lake.path(TASKS, options.day, TASKS_FILE)
    routed = lake.read_table([tasks_path], ["task_id", "route"])
    ledger = partition_ledger(lake, options.day, routed["task_id"].combine_chunks())
    report = build_report(lake, options.day)
    batched = sum(1 for r in routed["route"].to_pylist() if r == "batch")
    return {
        "date": options.day,
        "lake": lake.url,
        "events": options.events,
        "valid": ledger.valid,
        "dead_lettered": ledger.dead_lettered + ledger.intake_rejected,
        "batched": batched,
        "realtime": routed.num_rows - batched,
        "batches": collected,
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
        "elapsed_s": round(time.monotonic() - started, 2),
        "report_markdown": report.markdown(),
    }
