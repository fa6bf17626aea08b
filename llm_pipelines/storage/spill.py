"""A bucket spill: an external distribution sort on local disk, for rows too many to hold.

Rows arrive in any order, each with the bucket it belongs to (buckets are ranges of the final
order, so each holds a bounded number of bytes). They are appended to one Arrow IPC stream
file per bucket, uncompressed: writing is a copy into the page cache and reading back is a
memory map, so the spill costs little more than the bytes themselves. Each bucket is then
read alone, sorted in memory and handed on: memory holds one bucket, not the partition.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa


class BucketSpill:
    """Per-bucket Arrow IPC files under a temporary directory; use as a context manager."""

    def __init__(self, schema: pa.Schema, prefix: str = "llm-pipelines-spill-") -> None:
        self.schema = schema
        self.directory = Path(tempfile.mkdtemp(prefix=prefix))
        self._writers: dict[int, tuple[pa.ipc.RecordBatchStreamWriter, pa.NativeFile]] = {}
        self._closed = False
        self.rows = 0

    def __enter__(self) -> BucketSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _path(self, bucket: int) -> Path:
        return self.directory / f"{bucket}.arrows"

    def add(self, batch: pa.RecordBatch, buckets: np.ndarray) -> None:
        """Append each row of ``batch`` to the file of its bucket (``buckets[i]`` for row i)."""
        if batch.num_rows == 0:
            return
        order = np.argsort(buckets, kind="stable")
        ordered = buckets[order]
        batch = batch.take(pa.array(order))
        starts = np.flatnonzero(np.diff(ordered)) + 1
        for start, end in zip([0, *starts.tolist()], [*starts.tolist(), len(ordered)], strict=True):
            bucket = int(ordered[start])
            if bucket not in self._writers:
                # The file is ours to close: closing a stream writer leaves its file open.
                sink = pa.OSFile(str(self._path(bucket)), "wb")
                self._writers[bucket] = (pa.ipc.new_stream(sink, self.schema), sink)
            self._writers[bucket][0].write_batch(batch.slice(start, end - start))
        self.rows += batch.num_rows

    def buckets(self) -> Iterator[tuple[int, pa.Table]]:
        """Every non-empty bucket in ascending order, read back whole (once spilling is done)."""
        self._close_writers()
        for bucket in sorted(self._writers):
            path = self._path(bucket)
            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
            yield bucket, table
            path.unlink()  # the bucket's bytes leave the disk as soon as it is handed on

    def close(self) -> None:
        """Close every file and remove the spill directory."""
        self._close_writers()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _close_writers(self) -> None:
        if not self._closed:
            self._closed = True
            for writer, sink in self._writers.values():
                writer.close()
                sink.close()
