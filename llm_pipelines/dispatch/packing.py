"""Pack requests into provider batches that respect both the count and the byte limit.

One rule decides which requests share a batch (:class:`_Filler`): batches fill in a given
order, and a batch closes when the next request does not fit. It is applied two ways:

* :func:`pack` streams requests that arrive in that order (retries);
* :func:`assign_batches` applies it to entry sizes alone, so that requests stored in another
  order (routed tasks, with their ``dispatch_position``) are assigned to batches first; then
  :func:`pack_assigned` fills those batches from the requests in the order they are stored.

Packing is columnar: each chunk of tasks becomes its body entries in one pyarrow call, and
the bytes go straight from arrow buffers into a spooled file, so a 256 MB body is neither
built from Python objects nor held in memory (past :data:`SPOOL_IN_MEMORY` it is on disk).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.providers.base import BatchLimits
from llm_pipelines.streams import prefetched, runs

BODY_PREFIX = b'{"requests":['
BODY_SUFFIX = b"]}"
ENVELOPE_BYTES = len(BODY_PREFIX) + len(BODY_SUFFIX)
SPOOL_IN_MEMORY = 8 * 1024 * 1024
"""A body stays in memory up to this size, then moves to a temporary file."""
SEND_CHUNK = 1024 * 1024
"""Bytes per read when a body is sent."""
OVERSIZED = -1
"""The batch number of a request too large for any batch."""
ENTRY_OVERHEAD_BYTES = len(b',{"custom_id":"","params":}')
"""Bytes of a body entry besides its id and params (its leading comma included)."""


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
        self, entries: memoryview, offsets: np.ndarray, meta: pa.RecordBatch, start: int, stop: int
    ) -> None:
        """Add rows ``[start, stop)`` of a chunk: their entries are contiguous, so one write."""
        skip = 0 if self.count else 1  # the body's first entry goes without its comma
        begin, end = int(offsets[start]), int(offsets[stop])
        self.write(entries[begin + skip : end])
        self.parts.append(meta.slice(start, stop - start))
        self.count += stop - start
        self.body_bytes += end - begin - skip

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

    def discard(self) -> None:
        """Free what was spooled of a batch that will not be sent."""
        if self._spool is not None:
            self._spool.close()


@dataclass(frozen=True)
class Oversized:
    """A single request too large for any batch: it must be dead-lettered, not dropped."""

    custom_id: str
    row: dict[str, Any]
    size: int


@dataclass
class _Filler:
    """The packing rule, on entry sizes alone: batches fill in input order; a batch closes
    when the next request does not fit; a request too large for any batch is set aside
    (:data:`OVERSIZED`) without closing the batch being filled.
    """

    limits: BatchLimits
    batch: int = 0
    count: int = 0
    size: int = ENVELOPE_BYTES
    """Bytes the current batch's body will have once closed."""

    def spans(self, offsets: np.ndarray) -> Iterator[tuple[int, int, int]]:
        """``(start, stop, batch)`` for runs of consecutive entries, in order.

        ``offsets[i]`` is where entry ``i`` (with its leading comma) starts; the last offset
        is where the last one ends. Stateful: the next call goes on filling the same batch.
        """
        max_bytes, max_requests = self.limits.max_bytes, self.limits.max_requests
        rows = len(offsets) - 1
        start = 0
        while start < rows:
            if ENVELOPE_BYTES + int(offsets[start + 1] - offsets[start]) - 1 > max_bytes:
                yield start, start + 1, OVERSIZED
                start += 1
                continue
            # As many entries as fit the batch's bytes and count; an oversized one never fits.
            skip = 0 if self.count else 1  # the body's first entry goes without its comma
            budget = max_bytes - self.size + skip
            stop = int(np.searchsorted(offsets, offsets[start] + budget, side="right")) - 1
            stop = min(stop, start + max_requests - self.count, rows)
            took = stop > start
            if took:
                yield start, stop, self.batch
                self.count += stop - start
                self.size += int(offsets[stop] - offsets[start]) - skip
                start = stop
            if start < rows and (not took or not _oversized(offsets, start, max_bytes)):
                # The next request does not fit: this batch is done.
                self.batch, self.count, self.size = self.batch + 1, 0, ENVELOPE_BYTES


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
    filler = _Filler(limits)
    current, number = PackedBatch(id_column), 0
    # Reading chunks and serialising their entries happen on a second thread (pyarrow does
    # both without the GIL) while this one fills and spools batches.
    for chunk, meta, data, offsets in prefetched(_entries(chunks, id_column, params_column)):
        for start, stop, batch in filler.spans(offsets):
            if batch == OVERSIZED:
                yield _set_aside(chunk, meta, id_column, offsets, start)
                continue
            if batch != number:
                yield current
                current, number = PackedBatch(id_column), batch
            current.take_rows(data, offsets, meta, start, stop)
    if current.count:
        yield current


def assign_batches(entry_bytes: np.ndarray, limits: BatchLimits) -> np.ndarray:
    """The batch number of each entry, filled in the order given (:data:`OVERSIZED`: none).

    ``entry_bytes`` are the sizes of body entries with their leading comma
    (:data:`ENTRY_OVERHEAD_BYTES` plus the id's and the params' bytes).
    """
    offsets = np.zeros(len(entry_bytes) + 1, dtype=np.int64)
    np.cumsum(entry_bytes, out=offsets[1:])
    numbers = np.empty(len(entry_bytes), dtype=np.int64)
    for start, stop, batch in _Filler(limits).spans(offsets):
        numbers[start:stop] = batch
    return numbers


def pack_assigned(
    chunks: Iterable[tuple[pa.RecordBatch, np.ndarray]],
    limits: BatchLimits,
    counts: np.ndarray,
    *,
    id_column: str = "custom_id",
    params_column: str = "params",
) -> Iterator[PackedBatch | Oversized]:
    """Fill the batches that :func:`assign_batches` numbered, from rows in any order.

    ``chunks`` pairs each record batch with its rows' batch numbers; batch ``n`` has
    ``counts[n]`` rows. Each body holds its rows in the order they come (spooled, so an open
    batch costs local disk, not memory). Batches are handed on in ascending number, each as
    soon as it and every batch before it hold all their rows: rows that come roughly in batch
    order keep only a batch or two open. Requests numbered :data:`OVERSIZED` are set aside
    as they come.

    Raises if a batch grows past ``limits`` or its count (sizes or numbers that disagree
    with the rows would otherwise overfill it, and the provider would refuse it whole), or if
    the chunks end with a batch short of rows: nothing is sent that is not whole.
    """
    batches: dict[int, PackedBatch] = {}
    next_batch = 0
    try:
        # Rows are grouped by batch and serialised on a second thread (pyarrow, no GIL).
        for (chunk, meta, data, offsets), numbers in prefetched(
            _grouped_by_batch(chunks, id_column, params_column)
        ):
            for start, stop, number in runs(numbers):
                if number == OVERSIZED:
                    for row in range(start, stop):
                        yield _set_aside(chunk, meta, id_column, offsets, row)
                    continue
                packed = batches.setdefault(number, PackedBatch(id_column))
                packed.take_rows(data, offsets, meta, start, stop)
                if (
                    packed.size > limits.max_bytes
                    or packed.count > limits.max_requests
                    or packed.count > counts[number]
                ):
                    raise RuntimeError(
                        f"batch {number} came to {packed.count:,} requests and "
                        f"{packed.size:,} bytes, over the provider's limits or the "
                        f"{int(counts[number]):,} requests it was assigned: the sizes or "
                        "numbers it was assigned by disagree with its requests"
                    )
            while next_batch < len(counts) and (
                next_batch in batches and batches[next_batch].count == counts[next_batch]
            ):
                yield batches.pop(next_batch)
                next_batch += 1
        if next_batch < len(counts):
            held = batches[next_batch].count if next_batch in batches else 0
            raise RuntimeError(
                f"batch {next_batch} got {held:,} of its {int(counts[next_batch]):,} requests: "
                "rows went missing between assigning and reading them (was the file rewritten "
                "meanwhile?); nothing after it was sent"
            )
    finally:
        for packed in batches.values():  # not handed on: an error, or the caller stopped
            packed.discard()


def _grouped_by_batch(
    chunks: Iterable[tuple[pa.RecordBatch, np.ndarray]], id_column: str, params_column: str
) -> Iterator[tuple[tuple[pa.RecordBatch, pa.RecordBatch, memoryview, np.ndarray], np.ndarray]]:
    """Each chunk's rows stably sorted by batch number (so each batch's rows are one run),
    serialised, with the numbers in that order."""
    for chunk, numbers in chunks:
        if not chunk.num_rows:
            continue
        if np.any(np.diff(numbers) < 0):
            order = np.argsort(numbers, kind="stable")
            chunk, numbers = chunk.take(pa.array(order)), numbers[order]
        yield _serialised(chunk, id_column, params_column), numbers


def _set_aside(
    chunk: pa.RecordBatch, meta: pa.RecordBatch, id_column: str, offsets: np.ndarray, row: int
) -> Oversized:
    return Oversized(
        chunk[id_column][row].as_py(),
        meta.slice(row, 1).to_pylist()[0],
        ENVELOPE_BYTES + int(offsets[row + 1] - offsets[row]) - 1,
    )


def _entries(
    chunks: Iterable[pa.RecordBatch], id_column: str, params_column: str
) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch, memoryview, np.ndarray]]:
    """:func:`_serialised` of each chunk."""
    for chunk in chunks:
        if chunk.num_rows:
            yield _serialised(chunk, id_column, params_column)


def _serialised(
    chunk: pa.RecordBatch, id_column: str, params_column: str
) -> tuple[pa.RecordBatch, pa.RecordBatch, memoryview, np.ndarray]:
    """A chunk, its metadata columns, its serialised entries and where each one starts."""
    rows = chunk.num_rows
    entries = request_entries(chunk[id_column], chunk[params_column])
    _, offset_buffer, data_buffer = entries.buffers()
    # offsets[i] is where row i's entry (with its leading comma) starts in the data.
    offsets = np.frombuffer(offset_buffer, dtype=np.int32)[entries.offset :][: rows + 1]
    meta = chunk.drop_columns([params_column])
    return chunk, meta, memoryview(data_buffer), offsets.astype(np.int64)


def _oversized(offsets: np.ndarray, row: int, max_bytes: int) -> bool:
    return ENVELOPE_BYTES + int(offsets[row + 1] - offsets[row]) - 1 > max_bytes
