"""The lake on a real S3-compatible server (moto's, on loopback), through s3fs."""

from __future__ import annotations

import pyarrow as pa
import pytest

from llm_pipelines.intake import ingest_partition
from llm_pipelines.storage import LandingZone
from llm_pipelines.storage.datasets import EVENTS


def test_atomic_write_publishes_only_complete_files(s3_lake) -> None:
    path = s3_lake.path("results", "2026-11-23", "x.parquet")
    with pytest.raises(RuntimeError), s3_lake.open_atomic(path) as handle:
        handle.write(b"partial")
        raise RuntimeError("crash mid-write")
    assert not s3_lake.exists(path)
    s3_lake.write_table(path, pa.table({"a": [1, 2, 3]}))
    assert s3_lake.parquet_rows(path) == 3
    assert s3_lake.files("results", "2026-11-23", ".parquet") == [path]


def test_landing_and_intake_on_s3(s3_lake) -> None:
    task = {
        "task_type": "ticket_triage",
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "where is my parcel"}],
    }
    LandingZone(s3_lake).append([task, task, "{broken"], partition="2026-11-23")
    stats = ingest_partition(s3_lake, "2026-11-23")
    assert (stats.valid, stats.duplicates, stats.invalid) == (1, 1, 1)
    assert s3_lake.partitions(EVENTS) == ["2026-11-23"]


def test_intake_workers_read_their_pieces_from_s3(s3_lake, monkeypatch) -> None:
    """A worker process gets the lake's filesystem (its endpoint and credentials) with each
    piece and reads its byte range from the object store; the events equal a local parse."""
    import llm_pipelines.intake as intake

    tasks = [
        {
            "task_type": "ticket_triage",
            "model": "claude-haiku-4-5",
            "max_tokens": 20,
            "task_id": f"s3-{n}",
            "messages": [{"role": "user", "content": f"where is parcel {n}"}],
        }
        for n in range(200)
    ]
    LandingZone(s3_lake).append([*tasks, "{broken", tasks[0]], partition="2026-11-24")
    monkeypatch.setattr(intake, "PIECE_BYTES", 2048)  # about 15 pieces
    events = []
    for workers in (1, 0):
        stats = ingest_partition(s3_lake, "2026-11-24", workers=workers)
        assert (stats.valid, stats.duplicates, stats.invalid) == (200, 1, 1)
        events.append(s3_lake.read_table(s3_lake.files(EVENTS, "2026-11-24", ".parquet")))
    assert events[0].equals(events[1])
