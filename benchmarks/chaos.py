"""Chaos benchmark: simulated days of work under API faults and process kills.

Each simulated day lands a day of tasks and runs it the way production does: the daily
cycle, then ``batch_completion_sensor`` launching collections and resubmissions, against
the in-process emulator with a fault plan (HTTP 429/500/529 on every endpoint, errored,
expired and canceled requests, stalled batches, result streams cut mid-body). Every run and
every sensor tick runs in a forked child process that may be killed (``os._exit``) at one of
the pipeline's crash points; the harness then does what Dagster would: marks the dead run
failed, retries the daily cycle, keeps ticking the sensor. Batches still running after a
tick with nothing else to do are stalled: the cancel job cancels them. Once a day has
settled, its rejected requests are replayed once.

Then it checks the lake and the emulator against each other and prints, last line JSON:
``faults_injected``, ``crashes``, ``tasks``, ``lost``, ``duplicate_results``,
``duplicate_batches``, ``duplicate_requests`` (sends beyond one per recorded attempt),
``orphans_adopted`` / ``orphans_canceled``, ``dead_lettered`` (and more detail).

    uv run python benchmarks/chaos.py --days 6 --seed 1
    uv run python benchmarks/chaos.py --days 1 --tasks-per-day 300 --batch-size 60 --seed 3
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc

import llm_pipelines.intake as intake
from llm_pipelines.crashpoints import paused_at, run_in_child
from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.dispatch import realtime
from llm_pipelines.dispatch.ledger import Ledger, partition_ledger
from llm_pipelines.dispatch.state import PartitionState
from llm_pipelines.emulator import EmulatorConfig, EmulatorStore
from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.sensors.daemon import InProcessDaemon, disk_instance
from llm_pipelines.storage import Lake, LandingZone, read_manifests
from llm_pipelines.storage.datasets import LANDING, ORPHANS, RESULTS, RESULTS_SCHEMA, RETRIES
from llm_pipelines.storage.scratch import scratch_dir

CRASH_POINTS: dict[str, list[str]] = {
    "daily_batch_cycle": [
        "submit.after_intent",
        "submit.after_create",
        "realtime.after_calls",
        "realtime.after_chunk",
    ],
    "resubmit_batch_retries": ["submit.after_intent", "submit.after_create"],
    "collect_batch_results": ["collect.after_read", "collect.after_results"],
    "cancel_batches": ["cancel.after_cancel"],
    "replay_dead_letters": ["replay.before_write"],
    "sensor_tick": ["sensor.mid_tick"],
}
"""Where each kind of child may be killed."""


@dataclass
class Chaos:
    """The harness: resources, the daemon on its instance, and what it has counted so far."""

    resources: dict[str, Any]
    daemon: InProcessDaemon
    """Dagster's daemon, played here: it ticks the sensor and launches runs (in children)."""
    rng: random.Random
    crash_rate: float
    max_ticks: int
    verbose: bool = False
    crashes: collections.Counter[str] = field(default_factory=collections.Counter)
    runs: collections.Counter[str] = field(default_factory=collections.Counter)
    failed_runs: int = 0
    cancels: int = 0
    overlaps: collections.Counter[str] = field(default_factory=collections.Counter)
    """Runs of a day started while another run of it was held mid-way, by where it was."""

    @property
    def lake(self) -> Lake:
        """The lake under test."""
        return self.resources["lake"].lake()

    def child(self, kind: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in a child that may be killed at one of ``kind``'s crash points."""
        armed = None
        if self.rng.random() < self.crash_rate:
            armed = f"{self.rng.choice(CRASH_POINTS[kind])}:{self.rng.randint(1, 2)}"
        outcome = run_in_child(fn, crash_at=armed, quiet=not self.verbose)
        if outcome.crashed:
            assert armed is not None
            self.crashes[armed.rsplit(":", 1)[0]] += 1
            self.daemon.fail_dead_runs(f"worker killed at {armed}")
            return None
        if outcome.exitcode != 0:
            raise RuntimeError(f"{kind} child failed unexpectedly (exit {outcome.exitcode})")
        return outcome.value

    def job(self, name: str, partition: str, run_config: dict[str, Any] | None = None) -> bool:
        """Execute a job for a partition in a child; whether it succeeded."""
        ok = bool(self.child(name, self._execution(name, partition, run_config)))
        self.failed_runs += not ok
        return ok

    def _execution(
        self, name: str, partition: str, run_config: dict[str, Any] | None = None
    ) -> Callable[[], bool]:
        self.runs[name] += 1

        def execute() -> bool:
            return self.daemon.run(name, partition, run_config, raise_on_error=False).success

        return execute

    def overlapping_cycles(self, day: str, gate: Path) -> None:
        """Two runs of a day's cycle at once, as a manual launch beside the schedule makes:
        the first is held mid-way (after real-time calls, or after a batch intent), while a
        second runs (and may be killed); then the first goes on. Each provider call must
        still be made once: the leases let one run do each part, the other fails and is
        retried as Dagster would."""
        point = self.rng.choice(["realtime.after_calls", "submit.after_intent"])
        first = self._execution("daily_batch_cycle", day)
        try:
            with paused_at(first, point, gate, quiet=not self.verbose) as held:
                self.overlaps[point] += 1
                self.job("daily_batch_cycle", day)
            ok = bool(held.wait().value)
        except RuntimeError:  # the first run never got there (nothing of that kind to do)
            return
        self.failed_runs += not ok
        self.daemon.fail_dead_runs("a run of the overlap ended without its status")

    def tick(self, cursor: str | None) -> tuple[str | None, list[dg.RunRequest] | None]:
        """One sensor evaluation in a child: the new cursor and the runs to launch.

        ``None`` for the runs if the tick was killed: the next tick starts from ``cursor``.
        """

        def evaluate() -> tuple[str | None, list[dg.RunRequest]]:
            result = self.daemon.evaluate(cursor=cursor)
            return result.cursor, self.daemon.new_run_requests(result)

        answer = self.child("sensor_tick", evaluate)
        return answer if answer is not None else (cursor, None)

    def launch(self, request: dg.RunRequest) -> None:
        """Launch one run request in a child, as the daemon would."""
        name = request.job_name or "collect_batch_results"
        self.runs[name] += 1

        def execute() -> bool:
            return self.daemon.launch(request).success

        self.failed_runs += not bool(self.child(name, execute))

    def settle(self, day: str) -> Ledger:
        """Tick and launch until the day has no open work; cancel what stalls."""
        cursor: str | None = None
        ledger = partition_ledger(self.lake, day)
        for _ in range(self.max_ticks):
            cursor, requests = self.tick(cursor)
            for request in requests or []:
                self.launch(request)
            ledger = partition_ledger(self.lake, day)
            if not ledger.open:
                return ledger
            if requests == [] and ledger.in_flight and not ledger.retrying:
                # Batch latency is zero: anything still running has stalled.
                self.cancels += 1
                self.job("cancel_batches", day)
        return ledger

    def run_day(self, day: str, tasks: int, seed: int, gate: Path) -> Ledger:
        """Land a day, run it through faults, kills and overlapping runs until it settles;
        replay once."""
        landing = LandingZone(self.lake)
        landing.append(
            generate_tasks(day, tasks, seed=seed, invalid_share=0.01, duplicate_share=0.02),
            partition=day,
            flush_id=f"chaos-{seed}",
        )
        landing.append(large_bad_lines(seed), partition=day, flush_id=f"chaos-bad-{seed}")
        self.overlapping_cycles(day, gate)
        for _ in range(10):  # run retries of the daily cycle, as Dagster's would
            if self.job("daily_batch_cycle", day):
                break
        self.settle(day)
        replay = {"stages": ["collect"], "reason_contains": "invalid_request_error"}
        for _ in range(5):
            if self.job(
                "replay_dead_letters", day, {"ops": {"replay_dead_letters_op": {"config": replay}}}
            ):
                break
        return self.settle(day)


LARGE_BAD_LINES = 12
"""Invalid landing lines of about 100 KB each per day: past the intake worker's pipe buffer
(64 KB), so its answers arrive in many reads (a crash once, see issue 20)."""


def large_bad_lines(seed: int) -> list[dict[str, Any]]:
    """Large invalid tasks: a 2025 producer still sending temperature, with a long prompt."""
    return [
        {
            "task_id": f"bad-{seed}-{n}",
            "task_type": "ticket_triage",
            "model": "claude-haiku-5-5",
            "max_tokens": 100,
            "temperature": 0.2,
            "messages": [{"role": "user", "content": "ticket text " * 8_500}],
        }
        for n in range(LARGE_BAD_LINES)
    ]


def duplicate_results(lake: Lake, day: str) -> int:
    """Tasks with more than one result row in the day's results files."""
    ids = lake.read_table(lake.files(RESULTS, day, ".parquet"), ["task_id"], RESULTS_SCHEMA)
    if not ids.num_rows:
        return 0
    counts = pc.value_counts(ids["task_id"])
    return int(pc.sum(pc.greater(counts.field("counts"), 1)).as_py() or 0)


def duplicate_sends(lake: Lake, emulator: EmulatorStore, days: list[str]) -> dict[str, int]:
    """Tasks the provider was sent more often than the lake's manifests say, and how much more.

    The manifests record one send per attempt; a batch no manifest names (an orphan that was
    canceled rather than adopted) is a send too many for each of its tasks.
    """
    sent = collections.Counter(
        task for batch in emulator.list_batch_ids() for task in emulator.request_ids(batch)
    )
    for day in days:
        lake_state = PartitionState.load(lake, day)
        sent.subtract(lake_state.submitted_pairs(lake)["task_id"].to_pylist())
    return {task: extra for task, extra in sent.items() if extra > 0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tasks-per-day", type=int, default=6_000)
    parser.add_argument("--batch-size", type=int, default=600, help="requests per batch")
    parser.add_argument("--crash-rate", type=float, default=0.3, help="share of children armed")
    parser.add_argument("--faults", default="chaos", help="fault preset or YAML plan")
    parser.add_argument("--max-ticks", type=int, default=80, help="sensor ticks per day at most")
    parser.add_argument("--workdir", help="where the lake, emulator and instance live")
    parser.add_argument("--start", default="2026-03-01", help="first simulated day")
    parser.add_argument("--verbose", action="store_true", help="show the runs' Dagster logs")
    parser.add_argument(
        "--piece-bytes",
        type=int,
        default=16 * 1024,
        help="intake's piece size: small, so a small day is parsed beside the intake worker "
        "process (forced on) as a large day is",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print progress and the summary (last line JSON); return it."""
    args = parse_args(argv)
    started = time.monotonic()
    intake.PIECE_BYTES = args.piece_bytes  # the runs are forked children: they inherit it
    intake.PARSE_HERE = False  # every piece through the worker, as much of a large day's are
    os.environ[intake.WORKERS_VARIABLE] = "1"
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="llm-pipelines-chaos-"))
    emulator_dir = workdir / "emulator"
    resources = {
        "lake": LakeResource(url=str(workdir / "lake")),
        "cost_policy": CostPolicyResource(),
        "anthropic": AnthropicResource(
            emulator_dir=str(emulator_dir),
            emulator_faults=args.faults,
            max_batch_requests=args.batch_size,
            max_retries=8,
        ),
    }
    days = [str(date.fromisoformat(args.start) + timedelta(days=i)) for i in range(args.days)]
    ledgers: dict[str, Ledger] = {}
    with (
        scratch_dir("chaos-dagster-") as home,
        disk_instance(home) as instance,
    ):
        gate = Path(home) / "overlap.gate"
        chaos = Chaos(
            resources=resources,
            daemon=InProcessDaemon.for_resources(resources, instance),
            rng=random.Random(args.seed),
            crash_rate=args.crash_rate,
            max_ticks=args.max_ticks,
            verbose=args.verbose,
        )
        for number, day in enumerate(days):
            ledgers[day] = chaos.run_day(day, args.tasks_per_day, args.seed * 1_000 + number, gate)
            ledger = ledgers[day]
            print(
                f"{day}: {ledger.valid:,} tasks, {ledger.succeeded:,} answered, "
                f"{ledger.dead_lettered:,} dead-lettered (+{ledger.intake_rejected:,} lines "
                f"rejected at intake), open {ledger.open}, lost {ledger.lost};"
                f" crashes so far {sum(chaos.crashes.values())}",
                file=sys.stderr,
            )
        runs_recorded = instance.get_runs_count()

    lake = chaos.lake
    emulator = EmulatorStore(EmulatorConfig(state_dir=str(emulator_dir)))
    manifests = {day: read_manifests(lake, day) for day in days}
    named = {m.provider_batch_id for day in days for m in manifests[day]}
    provider_batches = set(emulator.list_batch_ids())
    orphan_records = [lake.read_json(p) for day in days for p in lake.files(ORPHANS, day)]
    adopted = [r for r in orphan_records if r["action"] == "adopted"]
    # An adopted orphan is named by the manifest its intent became; any other recorded one
    # must be named by none.
    by_key = {m.key: m.provider_batch_id for day in days for m in manifests[day]}
    well_attributed = {
        r["provider_batch_id"]
        for r in orphan_records
        if (by_key.get(r["intent_key"]) == r["provider_batch_id"]) == (r["action"] == "adopted")
    }
    extra_sends = duplicate_sends(lake, emulator, days)
    answered = emulator.answered_messages()
    faults = emulator.fault_totals()
    summary: dict[str, Any] = {
        "days": args.days,
        "seed": args.seed,
        "faults_injected": sum(faults.values()),
        "crashes": sum(chaos.crashes.values()),
        "tasks": sum(ledger.valid for ledger in ledgers.values()),
        "lost": sum(ledger.lost for ledger in ledgers.values()),
        "unsettled": sum(ledger.open for ledger in ledgers.values()),
        "duplicate_results": sum(duplicate_results(lake, day) for day in days),
        "duplicate_batches": len(provider_batches - named),
        # Requests the provider was sent beyond one per attempt the lake records.
        "duplicate_requests": sum(extra_sends.values()),
        "tasks_sent_twice": len(extra_sends),
        # Real-time calls answered (so paid) more than once for the same request: beyond the
        # documented repeat (a run killed after a chunk's calls, before its results file),
        # none. SDK retries of a 429/5xx are not answered calls.
        "realtime_calls": sum(answered.values()),
        "realtime_requests_answered_twice": sum(1 for n in answered.values() if n > 1),
        "realtime_repeats_allowed": chaos.crashes["realtime.after_calls"] * realtime.REALTIME_CHUNK,
        "overlapping_runs": sum(chaos.overlaps.values()),
        "overlaps_by_point": dict(sorted(chaos.overlaps.items())),
        "intake_pieces_per_day": len(
            intake.plan_pieces(lake, lake.files(LANDING, days[0], ".jsonl"))
        ),
        "dead_lettered": sum(
            ledger.dead_lettered + ledger.intake_rejected for ledger in ledgers.values()
        ),
        "succeeded": sum(ledger.succeeded for ledger in ledgers.values()),
        "conservation_holds": all(ledger.holds for ledger in ledgers.values()),
        "orphans_found": len(orphan_records),
        "orphans_adopted": len(adopted),
        "orphans_canceled": sum(r["action"] == "canceled" for r in orphan_records),
        # Adopted but not named by its intent's manifest, or recorded (not adopted) but named
        # by a manifest, or recorded twice: a false match.
        "orphans_misattributed": len(orphan_records) - len(well_attributed),
        "orphans_missed": len(
            provider_batches - named - {r["provider_batch_id"] for r in orphan_records}
        ),
        "retry_rows": sum(
            lake.parquet_rows(p) for day in days for p in lake.files(RETRIES, day, ".parquet")
        ),
        "provider_batches": len(provider_batches),
        "runs": runs_recorded,
        "failed_runs": chaos.failed_runs,
        "cancel_jobs": chaos.cancels,
        "crashes_by_point": dict(sorted(chaos.crashes.items())),
        "faults_by_kind": dict(sorted(faults.items())),
        "elapsed_s": round(time.monotonic() - started, 1),
        "workdir": str(workdir),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    result = main()
    healthy = (
        result["lost"] == 0
        and result["unsettled"] == 0
        and result["duplicate_results"] == 0
        and result["duplicate_batches"] <= result["crashes"]
    )
    raise SystemExit(0 if healthy else 1)
