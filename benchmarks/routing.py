"""Routing benchmark: time and peak memory of routing one partition of the reference workload.

Run: ``uv run python benchmarks/routing.py [--events N]``. Lands and validates the day in a
child process, then routes it here (both passes, the cache and reuse decisions, the tasks
file written by stretch of dispatch order), so the peak resident memory printed is routing's
own. Last line JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime

from llm_pipelines.costs import default_price_table
from llm_pipelines.demo.workload import (
    REFERENCE_EVAL_DOCUMENTS,
    REFERENCE_REREQUEST_SHARE,
    generate_tasks,
)
from llm_pipelines.intake import ingest_partition
from llm_pipelines.routing import default_policy
from llm_pipelines.routing.route import route_partition
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import EVENTS

DAY = "2026-11-23"


def prepare(lake_url: str, events: int) -> None:
    """Land and validate the day (in a child process, so its memory is not counted)."""
    lake = Lake(lake_url)
    LandingZone(lake).append(
        generate_tasks(
            DAY,
            events,
            rerequest_share=REFERENCE_REREQUEST_SHARE,
            eval_documents=REFERENCE_EVAL_DOCUMENTS,
        ),
        partition=DAY,
    )
    ingest_partition(lake, DAY)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    """Route one day and print the figures; last line JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="items landed (default 50000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llm-pipelines-route-bench-") as folder:
        child = multiprocessing.get_context("spawn").Process(
            target=prepare, args=(folder, args.events)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"preparing the day failed (exit code {child.exitcode})")
        lake = Lake(folder)
        events_bytes = sum(lake.size(p) for p in lake.files(EVENTS, DAY))
        before = peak_rss_mb()
        started = time.monotonic()
        stats = route_partition(
            lake, DAY, default_policy(), default_price_table(), datetime.now(UTC)
        )
        elapsed = time.monotonic() - started
    result = {
        "events": args.events,
        "tasks": stats.tasks,
        "batch": stats.batch,
        "realtime": stats.realtime,
        "reuse": stats.reused,
        "cache_marked": stats.cache_marked,
        "events_parquet_mb": round(events_bytes / 2**20, 1),
        "route_s": round(elapsed, 2),
        "tasks_per_s": round(stats.tasks / elapsed, 1) if elapsed else None,
        "peak_rss_mb_before_routing": before,
        "peak_rss_mb": peak_rss_mb(),
    }
    for key, value in result.items():
        print(f"{key:<28} {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
