"""The bucket spill: every row comes back once, in its bucket, buckets in order."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest

from llm_pipelines.storage.spill import BucketSpill

SCHEMA = pa.schema([("row", pa.int64()), ("text", pa.string())])


def test_rows_come_back_once_each_in_their_bucket_and_the_files_go() -> None:
    rng = np.random.default_rng(3)
    rows = 10_000
    open_files = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    bucket_of = rng.integers(0, 37, rows) * 3  # sparse bucket numbers: some never used
    with BucketSpill(SCHEMA) as spill:
        for start in range(0, rows, 777):  # chunks of odd size, buckets scattered in each
            stop = min(start + 777, rows)
            ids = np.arange(start, stop)
            batch = pa.record_batch(
                [pa.array(ids), pa.array([f"row {i}" for i in ids])], schema=SCHEMA
            )
            spill.add(batch, bucket_of[start:stop])
        directory = spill.directory
        seen = []
        numbers = []
        for bucket, table in spill.buckets():
            if open_files is not None:  # every bucket file is closed once spilling is done
                assert len(os.listdir("/proc/self/fd")) <= open_files + 1
            numbers.append(bucket)
            got = table["row"].to_numpy()
            assert (bucket_of[got] == bucket).all()
            # rows keep their arrival order inside a bucket
            assert (np.diff(got) > 0).all()
            assert table["text"].to_pylist() == [f"row {i}" for i in got]
            seen.append(got)
    assert numbers == sorted(set(bucket_of.tolist()))
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(rows))
    assert spill.rows == rows
    assert not directory.exists()


def test_an_error_while_spilling_leaves_no_files() -> None:
    spill = BucketSpill(SCHEMA)
    directory = spill.directory
    try:
        with spill:
            spill.add(
                pa.record_batch([pa.array([1]), pa.array(["a"])], schema=SCHEMA), np.array([0])
            )
            raise RuntimeError("routing failed")
    except RuntimeError:
        pass
    assert not directory.exists()


def test_a_write_failing_on_the_spill_thread_is_raised_and_leaves_no_files() -> None:
    """A full disk, say: the error reaches the caller, and the spill still cleans up."""
    spill = BucketSpill(SCHEMA)
    directory = spill.directory
    wrong = pa.record_batch([pa.array(["not a number"])], names=["id"])  # not SCHEMA
    with pytest.raises(pa.ArrowInvalid), spill:
        spill.add(pa.record_batch([pa.array([1]), pa.array(["a"])], schema=SCHEMA), np.array([0]))
        spill.add(wrong, np.array([1]))
        list(spill.buckets())
    assert not directory.exists()
    assert spill._owner.closed


def test_a_bucket_first_written_by_the_last_queued_write_comes_back_whole(monkeypatch) -> None:
    """The writes are queued on a thread: reading back waits for all of them first."""
    real_write = BucketSpill._write

    def slow_write(self: BucketSpill, batch: pa.RecordBatch, buckets: np.ndarray) -> None:
        time.sleep(0.05)
        real_write(self, batch, buckets)

    monkeypatch.setattr(BucketSpill, "_write", slow_write)
    with BucketSpill(SCHEMA) as spill:
        for bucket in range(4):  # each write opens a bucket file no earlier write opened
            batch = pa.record_batch([pa.array([bucket]), pa.array(["x" * 100_000])], schema=SCHEMA)
            spill.add(batch, np.array([bucket]))
        back = {bucket: table["row"].to_pylist() for bucket, table in spill.buckets()}
    assert back == {0: [0], 1: [1], 2: [2], 3: [3]}
