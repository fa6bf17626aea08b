"""The lake: one root URL (a local folder or ``s3://bucket/prefix``) reached through fsspec.

Every file is written atomically under a deterministic name, so a re-run replaces a file
instead of adding a second copy, and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llm_pipelines.streams import WriteBehind, prefetched

READ_BATCH_ROWS = 4_096
"""Rows per record batch when streaming a dataset: bounded memory (a few thousand requests of
a few kB each), big enough to be fast."""

PLAIN_ENCODING = {b"encoding": b"plain"}
"""Field metadata for text columns that are (nearly) unique per row, such as a whole request:
dictionary-encoding them only costs time and memory, so they are written plain, and with LZ4,
which (de)compresses them several times faster than zstd for about twice the bytes: they are
the bulk of every pass over a partition. Other columns are small and get zstd."""

WRITES_IN_FLIGHT = 2
WRITE_BUFFER_BYTES = 8 * 1024 * 1024
"""Chunks a parquet writer may hold while its thread encodes and compresses them."""


class BackgroundParquetWriter:
    """A ``pq.ParquetWriter`` whose encoding and compression run on a second thread.

    pyarrow releases the GIL while it writes, so the caller can build the next chunk in Python
    while this one is compressed. At most :data:`WRITES_IN_FLIGHT` chunks wait, which bounds
    the memory held; an error in the thread is raised by a later call (see
    :class:`~llm_pipelines.streams.WriteBehind`).
    """

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self._writer = writer
        self._behind = WriteBehind("parquet-writer", WRITES_IN_FLIGHT)

    @property
    def schema(self) -> pa.Schema:
        """The file's arrow schema."""
        return self._writer.schema_arrow

    def write_table(self, table: pa.Table | pa.RecordBatch) -> None:
        """Queue a chunk; blocks only while enough chunks are already waiting."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self._behind.submit(self._writer.write_table, table)

    def drain(self) -> None:
        """Wait until every queued chunk is written; re-raise the first failure."""
        self._behind.drain()

    def close(self) -> None:
        """Write what is queued, then the footer."""
        try:
            self.drain()
        finally:
            self._writer.close()


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: all but those marked :data:`PLAIN_ENCODING`."""
    return [f.name for f in schema if (f.metadata or {}).get(b"encoding") != b"plain"]


@contextlib.contextmanager
def exclusive_lock(path: str, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on a local file (``wait=False``: BlockingIOError if taken).

    The kernel releases it when the process ends, however it ends: a temporary file whose
    lock can be taken has no writer left.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        yield
    finally:
        os.close(descriptor)


ABANDONED_AFTER_S = 6 * 3600
"""A temporary file is swept once it is unlocked (its writer is gone) and this old."""


@dataclass
class SweepStats:
    """What :meth:`Lake.sweep_abandoned` removed."""

    files: int = 0
    bytes: int = 0


class Lake:
    """A root URL plus the file operations every dataset needs."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = self.root.rstrip("/")
        # Object stores publish an object only when its upload completes, so a direct write is
        # already atomic; local files get a temporary name and a rename.
        self._is_local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )
        if self._is_local:
            self.fs.makedirs(self.root, exist_ok=True)

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    # -- paths -------------------------------------------------------------------------------

    def partition_dir(self, dataset: str, partition: str) -> str:
        """``<root>/<dataset>/dt=<partition>``."""
        return f"{self.root}/{dataset}/dt={partition}"

    def path(self, dataset: str, partition: str, name: str) -> str:
        """A file inside one dataset partition."""
        return f"{self.partition_dir(dataset, partition)}/{name}"

    def files(self, dataset: str, partition: str, suffix: str = "") -> list[str]:
        """The files of one dataset partition ending in ``suffix``, sorted by name."""
        directory = self.partition_dir(dataset, partition)
        try:
            names = self.fs.ls(directory, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(
            n for n in names if n.endswith(suffix) and "/.tmp-" not in n and "/_" not in n
        )

    def partitions(self, dataset: str) -> list[str]:
        """The partition keys present in a dataset, oldest first."""
        try:
            names = self.fs.ls(f"{self.root}/{dataset}", detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(n.rsplit("dt=", 1)[1] for n in names if "/dt=" in n)

    def exists(self, path: str) -> bool:
        """Whether a file exists (never served from a stale listing cache)."""
        self.fs.invalidate_cache(path.rsplit("/", 1)[0])
        return self.fs.exists(path)

    def size(self, path: str) -> int:
        """Bytes in a file."""
        return int(self.fs.size(path))

    def delete(self, path: str) -> None:
        """Remove a file if it is there."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def sweep_abandoned(self, older_than_s: float = ABANDONED_AFTER_S) -> SweepStats:
        """Remove temporary files that writers left behind when they were killed.

        A local write goes to ``.tmp-*`` beside its file until it completes, holding a lock on
        it; a process killed mid-write leaves the file (readers ignore it; the disk holds it)
        and the kernel drops the lock. Files unlocked and untouched for ``older_than_s`` are
        removed; a live writer's file is never, however long it has been quiet. Object stores
        have nothing to sweep: an unfinished upload is never an object.
        """
        stats = SweepStats()
        if not self._is_local:
            return stats
        cutoff = time.time() - older_than_s
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return stats
        for path, info in found.items():
            if not path.rsplit("/", 1)[-1].startswith(".tmp-") or info.get("mtime", 0) >= cutoff:
                continue
            try:
                with exclusive_lock(path, wait=False):
                    os.unlink(path)
            except (BlockingIOError, FileNotFoundError):
                continue  # still being written, or another sweep took it
            stats.files += 1
            stats.bytes += int(info.get("size") or 0)
        return stats

    # -- atomic writes -----------------------------------------------------------------------

    @contextlib.contextmanager
    def open_atomic(self, path: str) -> Iterator[IO[bytes]]:
        """Open ``path`` for writing; it appears complete on success and not at all on error."""
        parent = path.rsplit("/", 1)[0]
        if self._is_local:
            self.fs.makedirs(parent, exist_ok=True)
            temporary = f"{parent}/.tmp-{uuid.uuid4().hex}"
            try:
                with open(temporary, "xb"):
                    pass  # created first, so it is locked before a byte is written
                with exclusive_lock(temporary):  # until it has its name: sweeps leave it alone
                    with self.fs.open(temporary, "wb") as handle:
                        yield handle
                    self.fs.mv(temporary, path)
            except BaseException:
                self.delete(temporary)
                raise
            return
        handle = self.fs.open(path, "wb")
        try:
            yield handle
        except BaseException:
            # Abort the upload instead of publishing what was written so far.
            discard = getattr(handle, "discard", None)
            if discard is not None:
                discard()
                handle.closed = True  # discarded: nothing left to flush when collected
            raise
        handle.close()

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file atomically."""
        with self.open_atomic(path) as handle:
            handle.write(data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Write a small file only if nothing is at ``path``; True if this call created it.

        The primitive behind leases: of many writers racing for one name, exactly one wins.
        Local files: a complete temporary file hard-linked into place (``link`` fails if the
        name exists). Object stores: a conditional PUT (``If-None-Match: *``, S3 since 2024).
        """
        parent = path.rsplit("/", 1)[0]
        if not self._is_local:
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            return True
        self.fs.makedirs(parent, exist_ok=True)
        temporary = f"{parent}/.tmp-{uuid.uuid4().hex}"
        with open(temporary, "wb") as handle:
            handle.write(data)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
        return True

    def read_bytes(self, path: str) -> bytes:
        """A whole (small) file."""
        with self.fs.open(path, "rb") as handle:
            return handle.read()

    def write_json(self, path: str, value: Any) -> None:
        """Write a JSON document atomically."""
        self.write_bytes(path, orjson.dumps(value, option=orjson.OPT_INDENT_2))

    def read_json(self, path: str) -> Any:
        """Read a JSON document."""
        return orjson.loads(self.read_bytes(path))

    # -- parquet -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def parquet_writer(self, path: str, schema: pa.Schema) -> Iterator[BackgroundParquetWriter]:
        """A streaming parquet writer whose file appears only once it is complete.

        Chunks are compressed on a background thread (see :class:`BackgroundParquetWriter`);
        columns marked :data:`PLAIN_ENCODING` skip dictionary encoding.
        """
        dictionary = dictionary_columns(schema)
        with self.open_atomic(path) as handle:
            # An arrow-side buffer before the Python file object: the writer thread then needs
            # the GIL once per buffer instead of once per page, and does not stall behind the
            # caller's Python code.
            sink = pa.output_stream(handle, buffer_size=WRITE_BUFFER_BYTES)
            writer = BackgroundParquetWriter(
                pq.ParquetWriter(
                    sink,
                    schema,
                    compression={
                        name: "zstd" if name in dictionary else "lz4" for name in schema.names
                    },
                    use_dictionary=dictionary,
                    write_statistics=dictionary,
                )
            )
            try:
                yield writer
            except BaseException:
                # Let the thread finish with the file before the upload is discarded. The
                # buffer is not flushed: closing it would close, hence publish, an S3 upload.
                with contextlib.suppress(Exception):
                    writer.close()
                raise
            writer.close()
            sink.flush()

    def write_table(self, path: str, table: pa.Table) -> None:
        """Write a (bounded) table as one parquet file."""
        with self.parquet_writer(path, table.schema) as writer:
            writer.write_table(table)

    def iter_batches(
        self,
        paths: Iterable[str],
        columns: list[str] | None = None,
        batch_size: int = READ_BATCH_ROWS,
    ) -> Iterator[pa.RecordBatch]:
        """Stream record batches from parquet files, a bounded number of rows at a time.

        The next batches are read and decompressed on a second thread while the caller works
        on this one (see :func:`prefetched`).
        """
        yield from prefetched(self._read_batches(list(paths), columns, batch_size))

    def _read_batches(
        self, paths: list[str], columns: list[str] | None, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        for path in paths:
            with self.fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                # Row group by row group: one reader over the whole file holds on to decoded
                # data (hundreds of MB for a partition of long requests); this one does not.
                for group in range(parquet.num_row_groups):
                    yield from parquet.iter_batches(
                        batch_size=batch_size, columns=columns, row_groups=[group]
                    )

    def select_rows(
        self,
        path: str,
        by: list[str],
        keep: Callable[[pa.Table], pa.Array],
        columns: list[str],
    ) -> Iterator[pa.RecordBatch]:
        """Rows of one parquet file that ``keep`` selects, with ``columns``, in file order.

        ``keep`` is called once, on the narrow ``by`` columns of the whole file (ids, say:
        tens of MB for a million rows), and returns a boolean mask; the other (wide) columns
        are read only from row groups where it keeps a row, so finding a few rows, or none,
        does not decompress the whole file. Row groups are read ahead on a second thread.
        """
        yield from prefetched(self._select_rows(path, by, keep, columns))

    def _select_rows(
        self, path: str, by: list[str], keep: Callable[[pa.Table], pa.Array], columns: list[str]
    ) -> Iterator[pa.RecordBatch]:
        wide = [name for name in columns if name not in by]
        with self.fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            narrow = parquet.read(columns=by)
            mask = keep(narrow)
            narrow = narrow.select([name for name in by if name in columns])
            if not wide:  # all that is wanted is read already
                yield from narrow.filter(mask).select(columns).to_batches(READ_BATCH_ROWS)
                return
            start = 0
            for group in range(parquet.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                if not pc.any(mask.slice(start, rows)).as_py():
                    start += rows
                    continue
                for part in _row_group_parts(parquet, group, wide):
                    table = narrow.slice(start, part.num_rows)
                    for field in part.schema:
                        table = table.append_column(field, part[field.name])
                    kept = table.filter(mask.slice(start, part.num_rows)).select(columns)
                    start += part.num_rows
                    yield from kept.to_batches()

    def read_table(
        self,
        paths: Iterable[str],
        columns: list[str] | None = None,
        schema: pa.Schema | None = None,
    ) -> pa.Table:
        """Read parquet files into one table (for narrow column selections only)."""
        batches = list(self.iter_batches(paths, columns))
        if batches:
            return pa.Table.from_batches(batches)
        if schema is None:
            raise ValueError("no files to read and no schema to build an empty table from")
        fields = [schema.field(c) for c in columns] if columns else list(schema)
        return pa.schema(fields).empty_table()

    def parquet_rows(self, path: str) -> int:
        """Row count from a parquet footer, without reading the data."""
        with self.fs.open(path, "rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows


def row_group_bounds(parquet: pq.ParquetFile) -> np.ndarray:
    """Where each row group of an open parquet file starts among its rows (and, last, where
    the last one ends): row group ``g`` is rows ``bounds[g]:bounds[g + 1]``."""
    bounds = np.zeros(parquet.num_row_groups + 1, dtype=np.int64)
    rows = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
    np.cumsum(rows, out=bounds[1:])
    return bounds


def read_row_groups(
    parquet: pq.ParquetFile, groups: Iterable[int], columns: list[str]
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``(first_row, part)``: the given row groups of an open parquet file, in the order
    given, each in parts of a few MB, with where each part starts among the file's rows;
    read ahead on a second thread (which alone uses the file until the iterator ends)."""
    bounds = row_group_bounds(parquet)

    def parts() -> Iterator[tuple[int, pa.RecordBatch]]:
        for group in groups:
            first_row = int(bounds[group])
            for part in _row_group_parts(parquet, group, columns):
                yield first_row, part
                first_row += part.num_rows

    yield from prefetched(parts())


def _row_group_parts(
    parquet: pq.ParquetFile, group: int, columns: list[str]
) -> Iterator[pa.RecordBatch]:
    """One row group in parts of :data:`READ_BATCH_ROWS` rows: a row group of long requests
    is tens of MB."""
    yield from parquet.iter_batches(READ_BATCH_ROWS, row_groups=[group], columns=columns)
