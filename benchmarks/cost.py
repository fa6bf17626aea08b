"""Cost benchmark: the reference workload through the whole pipeline on the emulator, twice.

Run: ``uv run python benchmarks/cost.py [--events N] [--seed S]``. Prints figures, then one
JSON line (the last line) with ``savings_pct``, ``naive_batch_savings_pct`` and the split by
lever. Both variants run in this process, through Dagster (the daily cycle job, the batch
completion sensor, the collection job), on the in-process emulator, each with its own lake.

Reference workload (:func:`llm_pipelines.demo.workload.generate_tasks` with the reference
options, the same day the demo lands):

=====================  =====  =================  ==========  ==================================
task type              share  requested model    max tokens  prompt
=====================  =====  =================  ==========  ==================================
catalog_description    35%    claude-haiku-5-5   300         ~4.5k-token style guide (shared)
ticket_triage          30%    claude-sonnet-5-5  200         ~1.5k-token triage prompt (shared)
offline_eval           20%    claude-sonnet-5-5  400         ~1.5k-token judge prompt (shared)
                                                             + one of 24 ~2k-token documents
chat_reply             10%    claude-sonnet-5-5  500         no system prompt (real-time type)
agent_assist            5%    claude-sonnet-5-5  300         deadline within hours (real-time)
=====================  =====  =================  ==========  ==================================

Every task adds a 50-750-token user turn of its own. About 85% of the work is batchable
(the first three types). 4% of landed items ask again for a request already made under a
new task id (reuse candidates), 2% repeat a task id (an at-least-once producer; dropped at
intake) and 1% are invalid (dead-lettered at intake).

Variants:

- ``cache_aware``: the shipped routing policy: batching, right-sizing (catalog and triage on
  Haiku), prompt caching (1-hour TTL in batches, breakpoints only on prefixes that enough
  tasks share) and reuse of identical requests.
- ``naive_batch``: batch everything batchable and nothing else: the same routing rules with
  ``model_map`` empty, ``prompt_caching.enabled: false`` and ``reuse.enabled: false``.

Each variant's savings are against its own all-sync counterfactual (every answered request
priced on its requested model, synchronously, at list price, without caching). The emulated
answers' lengths depend on the exact request, so the two counterfactuals differ slightly;
both are printed. The emulator works through a batch's requests in order, so every request
after the first of a prefix group reads the cache: the real Batches API runs requests
concurrently and in no set order, so real cache hit rates inside batches are lower.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from llm_pipelines.costs.report import LEVERS
from llm_pipelines.demo.runner import DemoOptions, run_demo
from llm_pipelines.routing import default_policy

DAY = "2026-11-23"
TARGET_SAVINGS_PCT = 60.0
TARGET_ADVANTAGE_POINTS = 10.0


def naive_policy_file(folder: Path) -> str:
    """The shipped policy with every lever but batching switched off, as a YAML file."""
    policy = default_policy().model_copy(deep=True)
    policy.model_map = {}
    policy.prompt_caching.enabled = False
    policy.reuse.enabled = False
    path = folder / "naive_batch_policy.yaml"
    path.write_text(yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False))
    return str(path)


def run_variant(
    name: str, folder: Path, events: int, seed: int, policy_path: str | None
) -> dict[str, Any]:
    """One day of the reference workload through the pipeline with ``policy_path``."""
    started = time.monotonic()
    summary = run_demo(
        DemoOptions(
            lake_url=str(folder / name / "lake"),
            emulator_dir=str(folder / name / "emulator"),
            day=DAY,
            events=events,
            seed=seed,
            batch_latency_s=0.0,
            poll_interval_s=0.05,
            policy_path=policy_path,
        )
    )
    summary.pop("report_markdown")
    summary["variant"] = name
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run both variants and print the comparison; last line JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4_000, help="items landed (default 4000)")
    parser.add_argument("--seed", type=int, default=7, help="workload seed")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="llm-pipelines-cost-bench-") as tmp:
        folder = Path(tmp)
        aware = run_variant("cache_aware", folder, args.events, args.seed, None)
        naive = run_variant(
            "naive_batch", folder, args.events, args.seed, naive_policy_file(folder)
        )

    rows = [("", "cache-aware", "naive batch")]
    for label, key in (
        ("valid tasks", "valid"),
        ("batched", "batched"),
        ("real-time", "realtime"),
        ("reused", "reused"),
        ("batches", "batches"),
        ("actual cost (USD)", "cost_usd"),
        ("all-sync cost (USD)", "all_sync_cost_usd"),
        ("saved vs all-sync (%)", "savings_pct"),
        *((f"  by {lever} (%)", f"savings_pct_{lever}") for lever in LEVERS),
        ("prompt tokens from cache (%)", "cache_read_share_pct"),
        ("lost / duplicated", None),
        ("elapsed (s)", "elapsed_s"),
    ):
        if key is None:
            values = [f"{s['lost']} / {s['duplicated']}" for s in (aware, naive)]
        else:
            values = [f"{s[key]:,}" for s in (aware, naive)]
        rows.append((label, *values))
    for label, left, right in rows:
        print(f"{label:<30} {left:>14} {right:>14}")

    advantage = round(aware["savings_pct"] - naive["savings_pct"], 2)
    # Batchable: what the naive variant (which reuses nothing) sends to the Batches API.
    batchable_pct = round(100.0 * naive["batched"] / naive["valid"], 2) if naive["valid"] else 0.0
    result = {
        "events": args.events,
        "valid": aware["valid"],
        "batchable_share_pct": batchable_pct,
        "savings_pct": aware["savings_pct"],
        "naive_batch_savings_pct": naive["savings_pct"],
        "advantage_points": advantage,
        "levers_pct": {lever: aware[f"savings_pct_{lever}"] for lever in LEVERS},
        "naive_levers_pct": {lever: naive[f"savings_pct_{lever}"] for lever in LEVERS},
        "cost_usd": aware["cost_usd"],
        "all_sync_cost_usd": aware["all_sync_cost_usd"],
        "naive_cost_usd": naive["cost_usd"],
        "naive_all_sync_cost_usd": naive["all_sync_cost_usd"],
        "cache_read_share_pct": aware["cache_read_share_pct"],
        "reused": aware["reused"],
        "targets_met": {
            "savings_pct_ge_60": aware["savings_pct"] >= TARGET_SAVINGS_PCT,
            "advantage_ge_10_points": advantage >= TARGET_ADVANTAGE_POINTS,
        },
        "conservation": {
            s["variant"]: {"valid": s["valid"], "lost": s["lost"], "duplicated": s["duplicated"]}
            for s in (aware, naive)
        },
        "elapsed_s": round(aware["elapsed_s"] + naive["elapsed_s"], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
