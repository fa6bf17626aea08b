"""Pack requests into provider batches that respect both the count and the byte limit.

Packing is columnar: each chunk of tasks becomes its body entries in one pyarrow call, and
the bytes go straight from arrow buffers into a spooled file, so a 256 MB body is neither
built from Python objects nor held in memory (past :data:`SPOOL_IN_MEMORY` it is on disk).
"""

from __future__ import annotations

import tempfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.providers.base import BatchLimits
from llm_pipelines.streams import prefetched

BODY_PREFIX = b'{"requests":['
BODY_SUFFIX = b"]}"
ENVELOPE_BYTES = len(BODY_PREFIX) + len(BODY_SUFFIX)
SPOOL_IN_MEMORY = 8 * 1024 * 1024
"""A body stays in memory up to this size, then moves to a temporary file."""
SEND_CHUNK = 1024 * 1024
"""Bytes per read when a body is sent."""


def request_entry(custom_id: str, params_json: bytes) -> bytes:
    """One element of the batch body's ``requests`` array, as bytes."""
    return b'{"custom_id":"' + custom_id.encode() + b'","params":' + params_json + b"}"


def request_entries(custom_ids: pa.Array, params: pa.Array) -> pa.Array:
    """:func:`request_entry` of every row at once, each with a leading comma (its separator)."""
    return pc.binary_join_element_wise(
        ',{"custom_id":"', custom_ids, '","params":', params, "}", ""
    )


class BatchBody:
    """A finished batch request body: its size, and its bytes as often as they are wanted.

    Iterating reads the body from the start each time, so the SDK can send it again when
    it retries a 429/5xx. (It deliberately has no ``read``: httpx would read a file-like
    body once and send nothing on a retry.)
    """

    def __init__(self, spool: Any, size: int) -> None:
        self._spool = spool
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        self._spool.seek(0)
        while chunk := self._spool.read(SEND_CHUNK):
            yield chunk

    def getvalue(self) -> bytes:
        """The whole body in memory (small bodies and tests)."""
        return b"".join(self)

    def discard(self) -> None:
        """Free the spooled bytes (the temporary file, if it came to that)."""
        self._spool.close()


@dataclass
class PackedBatch:
    """A batch being filled: its body so far and the rows (ids and metadata) it holds."""

    id_column: str
    parts: list[pa.RecordBatch] = field(default_factory=list)
    count: int = 0
    body_bytes: int = len(BODY_PREFIX)
    _spool: Any = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """Bytes the body will have once closed."""
        return self.body_bytes + len(BODY_SUFFIX)

    @property
    def rows(self) -> pa.Table:
        """The packed rows without their params: ids and whatever metadata came along."""
        return pa.Table.from_batches(self.parts)

    @property
    def custom_ids(self) -> list[str]:
        """The requests' ids, in body order."""
        return self.rows.column(self.id_column).to_pylist()

    def take_rows(
        self, entries: memoryview, offsets: list[int], meta: pa.RecordBatch, start: int, stop: int
    ) -> None:
        """Add rows ``[start, stop)`` of a chunk: their entries are contiguous, so one write."""
        skip = 0 if self.count else 1  # the body's first entry goes without its comma
        self.write(entries[offsets[start] + skip : offsets[stop]])
        self.parts.append(meta.slice(start, stop - start))
        self.count += stop - start
        self.body_bytes += offsets[stop] - offsets[start] - skip

    def write(self, data: memoryview | bytes) -> None:
        """Append serialised entries to the body."""
        if self._spool is None:
            self._spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - owned by BatchBody
                max_size=SPOOL_IN_MEMORY, prefix="llm-batch-"
            )
            self._spool.write(BODY_PREFIX)
        self._spool.write(data)

    def close(self) -> BatchBody:
        """The finished request body."""
        self.write(BODY_SUFFIX)
        return BatchBody(self._spool, self.size)


@dataclass(frozen=True)
class Oversized:
    """A single request too large for any batch: it must be dead-lettered, not dropped."""

    custom_id: str
    row: dict[str, Any]
    size: int


def pack(
    chunks: Iterable[pa.RecordBatch],
    limits: BatchLimits,
    *,
    id_column: str = "custom_id",
    params_column: str = "params",
) -> Iterator[PackedBatch | Oversized]:
    """Greedily fill batches in input order; a batch closes when the next request won't fit.

    ``chunks`` hold an id column, a params column (the request JSON) and any metadata columns,
    which come back as :attr:`PackedBatch.rows`. Only the batch being filled is open, and its
    body is spooled, so memory is bounded by one chunk, not by the batch or the partition.
    """
    current = PackedBatch(id_column)
    # Reading chunks and serialising their entries happen on a second thread (pyarrow does
    # both without the GIL) while this one fills and spools batches.
    for chunk, meta, data, offsets in prefetched(_entries(chunks, id_column, params_column)):
        rows = chunk.num_rows
        start = 0
        while start < rows:
            entry = offsets[start + 1] - offsets[start] - 1
            if ENVELOPE_BYTES + entry > limits.max_bytes:
                yield Oversized(
                    chunk[id_column][start].as_py(),
                    meta.slice(start, 1).to_pylist()[0],
                    ENVELOPE_BYTES + entry,
                )
                start += 1
                continue
            # As many rows as fit the batch's bytes and count; an oversized row never fits.
            budget = limits.max_bytes - current.size + (0 if current.count else 1)
            stop = bisect_right(offsets, offsets[start] + budget, lo=start) - 1
            stop = min(stop, start + limits.max_requests - current.count, rows)
            took = stop > start
            if took:
                current.take_rows(data, offsets, meta, start, stop)
                start = stop
            if start < rows and (not took or not _oversized(offsets, start, limits)):
                # The next request does not fit: this batch is done.
                yield current
                current = PackedBatch(id_column)
    if current.count:
        yield current


def _entries(
    chunks: Iterable[pa.RecordBatch], id_column: str, params_column: str
) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch, memoryview, list[int]]]:
    """Per chunk: its metadata columns, its serialised entries and where each one starts."""
    for chunk in chunks:
        rows = chunk.num_rows
        if not rows:
            continue
        entries = request_entries(chunk[id_column], chunk[params_column])
        _, offset_buffer, data_buffer = entries.buffers()
        # offsets[i] is where row i's entry (with its leading comma) starts in the data.
        offsets = memoryview(offset_buffer).cast("i")[entries.offset :][: rows + 1].tolist()
        yield chunk, chunk.drop_columns([params_column]), memoryview(data_buffer), offsets


def _oversized(offsets: list[int], row: int, limits: BatchLimits) -> bool:
    return ENVELOPE_BYTES + offsets[row + 1] - offsets[row] - 1 > limits.max_bytes
