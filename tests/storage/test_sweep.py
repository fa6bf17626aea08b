"""Leftovers of killed writers: temporary lake files are swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from llm_pipelines.definitions import defs
from llm_pipelines.resources import LakeResource
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import LANDING


def _killed_while(code: str) -> str:
    """Run ``code`` in a fresh interpreter that SIGKILLs itself after it; return its output."""
    script = (
        f"{code}\nimport os, signal, sys\nsys.stdout.flush()\nos.kill(os.getpid(), signal.SIGKILL)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done.stdout.strip()


def _age(path: str, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(path, (then, then))


def test_a_writer_killed_mid_write_leaves_a_temporary_file_that_the_sweep_removes(
    lake: Lake, day: str
) -> None:
    LandingZone(lake).append([{"task_type": "t"}], partition=day)
    [landed] = lake.files(LANDING, day)
    target = lake.path(LANDING, day, "killed.jsonl")
    _killed_while(
        "from llm_pipelines.storage import Lake\n"
        f"writing = Lake({lake.url!r}).open_atomic({target!r})\n"
        "handle = writing.__enter__()\n"
        "handle.write(b'x' * 100_000)\nhandle.flush()"
    )
    [left] = [p for p in lake.fs.find(lake.root) if "/.tmp-" in p]
    assert lake.files(LANDING, day) == [landed]  # readers never saw it
    fresh = f"{left.rsplit('/', 1)[0]}/.tmp-still-being-written"
    lake.write_bytes(lake.path(LANDING, day, "x.json"), b"{}")  # a complete file
    with open(fresh, "wb") as handle:
        handle.write(b"y" * 10)

    assert lake.sweep_abandoned().files == 0  # both are younger than six hours
    _age(left, hours=7)
    stats = lake.sweep_abandoned()
    assert (stats.files, stats.bytes) == (1, 100_000)
    assert not lake.fs.exists(left)
    assert lake.fs.exists(fresh) and lake.exists(landed)
    assert lake.exists(lake.path(LANDING, day, "x.json"))


def test_the_nightly_job_sweeps_and_reports_what_it_freed(tmp_path: Path, lake: Lake) -> None:
    abandoned = Path(lake.root) / "events" / "dt=2026-11-23" / ".tmp-0123"
    abandoned.parent.mkdir(parents=True)
    abandoned.write_bytes(b"z" * 2048)
    _age(str(abandoned), hours=2)
    result = defs.resolve_job_def("sweep_abandoned_files").execute_in_process(
        run_config={"ops": {"sweep_abandoned_files_op": {"config": {"older_than_hours": 1}}}},
        resources={"lake": LakeResource(url=lake.url)},
    )
    assert result.success
    assert result.output_for_node("sweep_abandoned_files_op") == 1
    [materialization] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialization.step_output_data.metadata
    assert metadata["files_removed"].value == 1
    assert metadata["mb_freed"].value == pytest.approx(2048 / 2**20, abs=1e-3)
    assert not abandoned.exists()


def test_the_sweep_is_scheduled_nightly() -> None:
    schedule = defs.resolve_schedule_def("nightly_sweep")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == "sweep_abandoned_files"
    assert len(list(schedule.evaluate_tick(dg.build_schedule_context()).run_requests or [])) == 1


def test_an_object_store_has_nothing_to_sweep(s3_lake: Lake) -> None:
    s3_lake.write_bytes(s3_lake.path(LANDING, "2026-11-23", "a.jsonl"), b"{}\n")
    assert s3_lake.sweep_abandoned(older_than_s=0).files == 0


def test_a_live_writer_is_never_swept_however_quiet(lake: Lake, day: str) -> None:
    target = lake.path(LANDING, day, "slow.jsonl")
    writing = lake.open_atomic(target)
    handle = writing.__enter__()
    handle.write(b'{"task_type": "t"}\n')
    handle.flush()
    [temporary] = [p for p in lake.fs.find(lake.root) if "/.tmp-" in p]
    _age(temporary, hours=24)  # a producer quiet for a day: still holding its file
    assert lake.sweep_abandoned().files == 0
    writing.__exit__(None, None, None)
    assert lake.read_bytes(target) == b'{"task_type": "t"}\n'
