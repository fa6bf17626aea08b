"""Worker processes: answers in the order sent, errors raised with their cause, nothing left."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from llm_pipelines.intake import parse_range, plan_pieces
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import LANDING
from llm_pipelines.worker_pool import WorkerError, WorkerProcess

TASK = {
    "task_type": "ticket_triage",
    "model": "claude-haiku-4-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "my order is late"}],
}


def _pieces(lake: Lake, day: str) -> list:
    tasks = [{**TASK, "task_id": f"t-{n}"} for n in range(40)]
    LandingZone(lake).append(tasks, partition=day, flush_id="f")
    return plan_pieces(lake, lake.files(LANDING, day, ".jsonl"), len(orjson.dumps(TASK)) * 4)


def test_answers_come_back_in_the_order_sent_and_the_worker_goes_with_the_block(
    lake: Lake, day: str
) -> None:
    pieces = _pieces(lake, day)
    assert len(pieces) > 5
    with WorkerProcess() as worker:
        for piece in pieces:
            worker.send(parse_range, (lake.fs, piece))
        assert worker.pending == len(pieces)
        answers = [worker.receive() for _ in pieces]
        assert worker.pending == 0 and not worker.ready()
        process = worker._process
        assert process is not None
        spool = Path(process.args[-1])
        assert spool.is_dir()
    expected = [parse_range(lake.fs, piece) for piece in pieces]
    for (batch, report), (here, here_report) in zip(answers, expected, strict=True):
        assert batch.equals(here)
        assert report == here_report
    assert [batch["task_id"][0].as_py() for batch, _ in answers if batch.num_rows] == [
        batch["task_id"][0].as_py() for batch, _ in expected if batch.num_rows
    ]
    assert process.returncode == 0
    assert not spool.exists()  # answers were unlinked as they came; the folder went last


def test_a_worker_that_dies_is_an_error_that_says_so(lake: Lake, day: str) -> None:
    [piece, *_] = _pieces(lake, day)
    with pytest.raises(WorkerError, match="ended"), WorkerProcess() as worker:
        assert worker._process is not None
        worker._process.kill()
        worker._process.wait()
        worker.send(parse_range, (lake.fs, piece))
        worker.receive()


def test_an_error_in_the_work_comes_back_with_its_traceback(lake: Lake, day: str) -> None:
    [piece, *_] = _pieces(lake, day)
    with WorkerProcess() as worker:
        worker.send(parse_range, (lake.fs, replace(piece, path=piece.path + ".missing")))
        worker.send(parse_range, (lake.fs, piece))
        with pytest.raises(WorkerError, match=r"(?s)Traceback.*FileNotFoundError"):
            worker.receive()
        batch, _ = worker.receive()  # the worker carries on with what comes next
        assert batch.num_rows > 0


def test_a_worker_is_used_inside_its_block_only() -> None:
    worker = WorkerProcess()
    with pytest.raises(RuntimeError, match="with"):
        worker.send(os.getpid, ())


def _large_answer(size: int) -> tuple:
    import pyarrow as pa

    return pa.record_batch({"n": [size]}), "y" * size


@pytest.mark.parametrize("size", [0, 65_535, 65_536, 1 << 20, 48 << 20])
def test_an_answer_of_any_size_arrives_whole(size: int) -> None:
    """The pipe holds 64 KB: an answer larger than that arrives in many reads."""
    with WorkerProcess() as worker:
        worker.send(_large_answer, (size,))
        worker.send(_large_answer, (7,))
        batch, extra = worker.receive()
        assert batch["n"][0].as_py() == size and extra == "y" * size
        assert worker.receive()[1] == "yyyyyyy"
