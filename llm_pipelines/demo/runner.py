"""The demo: one realistic day through the whole flow, in process, on the emulator."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import dagster as dg

from llm_pipelines.assets.partitions import DAILY
from llm_pipelines.costs.report import LEVERS, build_report
from llm_pipelines.definitions import build_definitions
from llm_pipelines.demo.workload import (
    REFERENCE_EVAL_DOCUMENTS,
    REFERENCE_REREQUEST_SHARE,
    generate_tasks,
)
from llm_pipelines.dispatch.collect import in_flight
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.sensors import batch_completion_sensor
from llm_pipelines.storage.datasets import DEAD_LETTER, DEAD_LETTER_SCHEMA, TASKS
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
    poll_interval_s: float = 0.5
    timeout_s: float = 300.0
    policy_path: str | None = None
    """Routing policy file; None: the deployment's (environment) or the shipped one."""
    rerequest_share: float = REFERENCE_REREQUEST_SHARE
    eval_documents: int = REFERENCE_EVAL_DOCUMENTS
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
            emulator_dir=options.emulator_dir, emulator_batch_latency_s=options.batch_latency_s
        ),
        "cost_policy": CostPolicyResource(
            **({"routing_policy_path": options.policy_path} if options.policy_path else {})
        ),
    }
    defs = build_definitions(resources)
    lake = resources["lake"].lake()
    instance = dg.DagsterInstance.ephemeral()

    say(f"landing {options.events:,} events for {options.day} in {lake.url}")
    LandingZone(lake).append(
        generate_tasks(
            options.day,
            options.events,
            seed=options.seed,
            rerequest_share=options.rerequest_share,
            eval_documents=options.eval_documents,
        ),
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
    cursor: str | None = None
    used_run_keys: set[str] = set()
    deadline = time.monotonic() + options.timeout_s
    while True:
        # The sensor decides what to collect; the demo plays the daemon that launches runs.
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        tick = batch_completion_sensor(context)
        cursor = tick.cursor
        for request in tick.run_requests or []:
            if request.run_key in used_run_keys:
                continue
            used_run_keys.add(request.run_key)
            say(f"collecting {request.tags['llm_pipelines/batch_id']}")
            run = collect.execute_in_process(
                partition_key=request.partition_key,
                run_config=request.run_config,
                instance=instance,
                tags={**request.tags, "dagster/run_key": request.run_key},
            )
            if not run.success:
                raise RuntimeError(f"collection run {request.run_key} failed")
        flying = len(in_flight(lake, options.day))
        if not flying:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{flying} batches still in flight after {options.timeout_s}s")
        say(f"waiting for {flying} batch(es) to end")
        time.sleep(options.poll_interval_s)
    if not used_run_keys:
        # Every task went real-time: the report still needs one refresh.
        collect.execute_in_process(partition_key=options.day, instance=instance)

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
        "batches": len(used_run_keys),
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
