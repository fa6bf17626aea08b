"""`llm-pipelines workloads`: today's batch cycle for the three workloads, to their outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_pipelines.cli import main
from llm_pipelines.workloads.offline_eval import CANDIDATE_MODELS


def test_workloads_command_runs_every_workload_to_its_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    args = ["workloads", "--json", "--lake", str(tmp_path / "lake"), "--batch-latency", "0"]
    code = main([*args, "--products", "7", "--tickets", "9", "--date", "2026-11-20"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 0
    assert summary["date"] == "2026-11-20"
    assert summary["lost"] == 0 and summary["duplicated"] == 0
    assert summary["catalog"]["products"] == 7
    assert summary["catalog"].get("succeeded", 0) + summary["catalog"].get("truncated", 0) == 7
    assert summary["support_analytics"] == {
        "tickets": 9,
        "succeeded": 9,
        "top_issue": summary["support_analytics"]["top_issue"],
    }
    assert set(summary["offline_eval"]) == set(CANDIDATE_MODELS)
    assert all(s["scored"] == s["questions"] for s in summary["offline_eval"].values())
    assert summary["batches"] == 2, "answers, then the judge round"
    assert 0 < summary["cost_usd"] < summary["all_sync_cost_usd"]
    # Progress goes to stderr as plain lines when not on a terminal; no Dagster DEBUG stream.
    assert "workload outputs: 3/3" in captured.err
    assert " - DEBUG - " not in captured.err
