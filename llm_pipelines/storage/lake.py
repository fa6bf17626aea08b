"""The lake: one root URL (a local folder or ``s3://bucket/prefix``) reached through fsspec.

Every file is written atomically under a deterministic name, so a re-run replaces a file
instead of adding a second copy, and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any

import fsspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

READ_BATCH_ROWS = 16_384
"""Rows per record batch when streaming a dataset: bounded memory, big enough to be fast."""


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

    # -- atomic writes -----------------------------------------------------------------------

    @contextlib.contextmanager
    def open_atomic(self, path: str) -> Iterator[IO[bytes]]:
        """Open ``path`` for writing; it appears complete on success and not at all on error."""
        parent = path.rsplit("/", 1)[0]
        if self._is_local:
            self.fs.makedirs(parent, exist_ok=True)
            temporary = f"{parent}/.tmp-{uuid.uuid4().hex}"
            try:
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
    def parquet_writer(self, path: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """A streaming parquet writer whose file appears only once it is complete."""
        with self.open_atomic(path) as handle:
            writer = pq.ParquetWriter(handle, schema, compression="zstd")
            try:
                yield writer
            finally:
                writer.close()

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
        """Stream record batches from parquet files, a bounded number of rows at a time."""
        for path in paths:
            with self.fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                yield from parquet.iter_batches(batch_size=batch_size, columns=columns)

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
