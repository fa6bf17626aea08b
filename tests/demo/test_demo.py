"""The main job: `llm-pipelines demo` end to end on the emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llm_pipelines.cli import main

KEYS = {
    "events",
    "valid",
    "dead_lettered",
    "batched",
    "realtime",
    "succeeded",
    "lost",
    "cost_usd",
    "all_sync_cost_usd",
    "savings_pct",
}


def test_demo_json_summary_accounts_for_every_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "demo",
            "--json",
            "--events",
            "300",
            "--lake",
            str(tmp_path / "lake"),
            "--date",
            "2026-11-20",
            "--batch-latency",
            "0.5",
        ]
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert set(summary) >= KEYS
    assert summary["events"] == 300
    assert summary["lost"] == 0
    assert summary["duplicated"] == 0
    assert summary["batched"] + summary["realtime"] + summary["reused"] == summary["valid"]
    assert summary["succeeded"] + summary["dead_lettered"] >= summary["valid"]
    assert summary["batched"] > summary["realtime"] > 0
    assert 0 < summary["cost_usd"] < summary["all_sync_cost_usd"]
    assert summary["savings_pct"] > 20


def test_console_script_runs_the_demo(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_pipelines.cli",
            "demo",
            "--events",
            "60",
            "--lake",
            str(tmp_path / "lake"),
            "--batch-latency",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "saved" in completed.stdout
    assert "lost 0" in completed.stdout
