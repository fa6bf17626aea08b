"""benchmarks/cost.py run small: its JSON line has every figure and nothing is lost."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "cost.py"
LEVERS = {"batching", "caching", "downshifting", "reuse", "migration"}


def test_cost_benchmark_runs_small_and_reports_every_figure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("cost_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    assert module.main(["--events", "120"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert {
        "savings_pct",
        "naive_batch_savings_pct",
        "advantage_points",
        "levers_pct",
        "naive_levers_pct",
        "batchable_share_pct",
        "conservation",
        "targets_met",
    } <= set(result)
    assert set(result["levers_pct"]) == LEVERS
    assert sum(result["levers_pct"].values()) == pytest.approx(result["savings_pct"], abs=0.05)
    # The naive variant saves by batching alone.
    naive = result["naive_levers_pct"]
    assert naive["caching"] == naive["downshifting"] == naive["reuse"] == naive["migration"] == 0
    assert naive["batching"] == pytest.approx(result["naive_batch_savings_pct"], abs=0.05)
    for variant in ("cache_aware", "naive_batch"):
        counts = result["conservation"][variant]
        assert counts["valid"] > 0
        assert counts["lost"] == 0 and counts["duplicated"] == 0, variant
