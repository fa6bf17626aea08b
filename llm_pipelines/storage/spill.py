"""A bucket spill: an external distribution sort on local disk, for rows too many to hold.

Rows arrive in any order, each with the bucket it belongs to (buckets are ranges of the final
order, so each holds a bounded number of bytes). They are appended to one Arrow IPC stream
file per bucket, uncompressed: writing is a copy into the page cache and reading back is a
memory map, so the spill costs little more than the bytes themselves. Each bucket is then
read alone, sorted in memory and handed on: memory holds one bucket, not the partition.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from llm_pipelines.storage.lake import exclusive_lock
from llm_pipelines.streams import WriteBehind

OWNER_FILE = ".owner"
"""Locked by the process that spills into the directory, for as long as it lives."""
WRITE_BUFFERS_BYTES = 32 * 1024 * 1024
"""Write buffers of all open bucket files together (a million tasks make about a hundred)."""
WRITE_BUFFER_BYTES = (32 * 1024, 256 * 1024)
"""Smallest and largest write buffer of one bucket file."""
UNOWNED_AFTER_S = 3600
"""A spill directory without an owner file this long was left before it got one."""


def sweep_abandoned_spills(prefix: str) -> int:
    """Remove spill directories whose process died (killed mid-spill); return how many.

    A live spill holds an exclusive lock on its owner file; the kernel drops the lock with
    the process, however it ends, so a lock this process can take has no owner left.
    """
    removed = 0
    for directory in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            with exclusive_lock(str(directory / OWNER_FILE), wait=False):
                pass  # taken: its owner is gone
        except BlockingIOError:
            continue  # in use
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - directory.stat().st_mtime < UNOWNED_AFTER_S:
                    continue  # being created right now
        except OSError:
            continue
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
    return removed


class BucketSpill:
    """Per-bucket Arrow IPC files under a temporary directory; use as a context manager.

    Spills that a killed process left behind (gigabytes, for a large partition) are removed
    when the next one starts (:func:`sweep_abandoned_spills`).
    """

    def __init__(
        self, schema: pa.Schema, prefix: str = "llm-pipelines-spill-", buckets: int = 128
    ) -> None:
        """``buckets``: about how many buckets there will be (it sizes the write buffers)."""
        self.schema = schema
        smallest, largest = WRITE_BUFFER_BYTES
        self._buffer_bytes = max(smallest, min(largest, WRITE_BUFFERS_BYTES // max(buckets, 1)))
        sweep_abandoned_spills(prefix)
        self.directory = Path(tempfile.mkdtemp(prefix=prefix))
        # Locked before it gets its name: a sweep never sees an owner file not yet locked.
        claim = self.directory / f"{OWNER_FILE}.new"
        self._owner = open(claim, "wb")  # noqa: SIM115 (held open for the spill's life)
        fcntl.flock(self._owner, fcntl.LOCK_EX)
        claim.rename(self.directory / OWNER_FILE)
        self._writers: dict[int, tuple[pa.ipc.RecordBatchStreamWriter, pa.NativeFile]] = {}
        self._behind = WriteBehind("spill-writer")
        self._closed = False
        self.rows = 0

    def __enter__(self) -> BucketSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _path(self, bucket: int) -> Path:
        return self.directory / f"{bucket}.arrows"

    def add(self, batch: pa.RecordBatch, buckets: np.ndarray) -> None:
        """Append each row of ``batch`` to the file of its bucket (``buckets[i]`` for row i).

        The rows are grouped and written on a second thread (arrow and the system calls
        release the GIL), in the order they were added; a failure there is raised by a later
        call, :meth:`buckets` or leaving the ``with`` block. ``buckets`` is copied: the
        caller may reuse it at once.
        """
        if batch.num_rows == 0:
            return
        self.rows += batch.num_rows
        self._behind.submit(self._write, batch, buckets.copy())

    def _write(self, batch: pa.RecordBatch, buckets: np.ndarray) -> None:
        order = np.argsort(buckets, kind="stable")
        ordered = buckets[order]
        batch = batch.take(pa.array(order))
        starts = np.flatnonzero(np.diff(ordered)) + 1
        for start, end in zip([0, *starts.tolist()], [*starts.tolist(), len(ordered)], strict=True):
            bucket = int(ordered[start])
            if bucket not in self._writers:
                # The file is ours to close: closing a stream writer leaves its file open.
                # Buffered: a chunk adds a few rows to each of many buckets, and unbuffered
                # every column buffer of every such slice was a system call of its own.
                sink = pa.BufferedOutputStream(
                    pa.OSFile(str(self._path(bucket)), "wb"), self._buffer_bytes
                )
                self._writers[bucket] = (pa.ipc.new_stream(sink, self.schema), sink)
            self._writers[bucket][0].write_batch(batch.slice(start, end - start))

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
        """Close every file and remove the spill directory (even if a write failed)."""
        try:
            self._close_writers()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._owner.close()

    def _close_writers(self) -> None:
        """Finish the queued writes and close every file; raise the first failure after."""
        if self._closed:
            return
        self._closed = True
        try:
            self._behind.drain()  # the last queued writes may still open files
        finally:
            with contextlib.ExitStack() as files:  # each one closed even if another fails
                for writer, sink in self._writers.values():
                    files.callback(sink.close)
                    files.callback(writer.close)  # callbacks run last in, first out
