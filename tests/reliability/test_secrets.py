"""The API key never reaches the lake, the emulator's state, logs, or Dagster's storage.

A recognisable key is planted the way production sets it (``ANTHROPIC_API_KEY`` read through
``dg.EnvVar``), pointed at the emulator over real HTTP, and a faulty day is run through
Dagster: SDK retries, errors stored as dead letters, a run that fails on an API error. Then
every byte written anywhere is searched for it, parquet decoded first.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._serdes import serialize_value

from llm_pipelines.definitions import build_definitions, default_resources
from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.emulator import EmulatorConfig, FaultPlan, serving
from llm_pipelines.sensors.daemon import InProcessDaemon, disk_instance
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import DEAD_LETTER, DEAD_LETTER_SCHEMA


def _texts(root: Path):
    """Every file under ``root`` as bytes; parquet files also as their decoded rows."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield path, data
        if data[:4] == b"PAR1":
            yield path, str(pq.read_table(path).to_pylist()).encode()


def _leaks(root: Path, secret: str) -> set[Path]:
    return {path for path, data in _texts(root) if secret.encode() in data}


def test_the_scanner_finds_a_planted_key(tmp_path: Path) -> None:
    secret = "sk-ant-canary-" + uuid.uuid4().hex
    lake = Lake(str(tmp_path))
    lake.write_table(
        lake.path("results", "2026-11-23", "a.parquet"), pa.table({"x": ["a", f"... {secret}"]})
    )
    lake.write_json(lake.path("batches", "2026-11-23", "b.json"), {"note": secret})
    (tmp_path / "log.txt").write_text("nothing here")
    assert len(_leaks(tmp_path, secret)) == 2


def test_api_key_is_never_written_logged_or_recorded(
    tmp_path: Path,
    day: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = "sk-ant-canary-" + uuid.uuid4().hex
    plan = FaultPlan(
        seed=8,
        retry_after_ms=1,
        errored_rate=0.2,
        truncated_results_rate=0.3,
        endpoint_error_rates={
            "batches_create": 0.3,
            "batches_retrieve": 0.3,
            "messages": 1.0,  # every real-time call fails: SDK errors become dead letters
            "batches_cancel": 1.0,  # and a run fails on an API error
        },
    )
    emulator_dir, lake_dir, home = (tmp_path / n for n in ("emulator", "lake", "dagster"))
    caplog.set_level(logging.DEBUG)
    with serving(EmulatorConfig(state_dir=str(emulator_dir), faults=plan)) as url:
        monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("LLM_PIPELINES_LAKE", str(lake_dir))
        resources = default_resources()
        assert resources["anthropic"].mode == "anthropic-api"
        defs = build_definitions(resources)
        lake = resources["lake"].lake()
        LandingZone(lake).append(generate_tasks(day, 40, seed=6), partition=day)
        with disk_instance(str(home)) as instance:
            cycle = defs.resolve_job_def("daily_batch_cycle").execute_in_process(
                partition_key=day, instance=instance
            )
            assert cycle.success
            cancel = defs.resolve_job_def("cancel_batches").execute_in_process(
                partition_key=day, instance=instance, raise_on_error=False
            )
            assert not cancel.success, "the cancel call failed with an API error"
            ledger = InProcessDaemon(defs, instance, resources).drive(day)
            assert ledger.holds and ledger.open == 0
            logs = [instance.all_logs(run.run_id) for run in instance.get_runs()]
            events = [serialize_value(entry) for entries in logs for entry in entries]
            runs = [serialize_value(run) for run in instance.get_runs()]

    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    realtime = [
        r
        for s, r in zip(dead["stage"].to_pylist(), dead["reason"].to_pylist(), strict=True)
        if s == "realtime"
    ]
    assert realtime and all("emulated fault on messages" in r for r in realtime)
    assert any("emulated fault on batches_cancel" in e for e in events), "API error recorded"
    # The scan covered real work: the cycle, the failed cancel and the sensor's collection
    # runs, each with its full event log. (How many collection runs the sensor launches
    # depends on when batches end, so a fixed total of events would be timing-dependent.)
    assert len(runs) >= 3 and min(len(entries) for entries in logs) >= 5
    assert len(events) >= 20 * len(runs)

    assert _leaks(lake_dir, secret) == set()
    assert _leaks(emulator_dir, secret) == set()
    assert _leaks(home, secret) == set()
    assert not [e for e in events if secret in e]
    assert not [r for r in runs if secret in r]
    captured = capfd.readouterr()
    assert secret not in caplog.text
    assert secret not in captured.out and secret not in captured.err
