"""Batch splitting exactly at the provider's limits: 100,000 requests and 256 MB."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_pipelines.dispatch.packing import (
    ENTRY_OVERHEAD_BYTES,
    ENVELOPE_BYTES,
    Oversized,
    PackedBatch,
    assign_batches,
    pack,
    pack_assigned,
    request_entry,
)
from llm_pipelines.providers import ANTHROPIC_LIMITS, BatchLimits

TINY = b'{"model":"claude-haiku-4-5","max_tokens":1,"messages":[{"role":"user","content":"x"}]}'


def _chunks(items: list[tuple[str, bytes, int]], rows: int = 4_096) -> Iterator[pa.RecordBatch]:
    """(custom_id, params, meta) rows as the record batches pack() reads, a few at a time."""
    for start in range(0, len(items), rows):
        part = items[start : start + rows]
        yield pa.RecordBatch.from_pydict(
            {
                "custom_id": [i for i, _, _ in part],
                "params": pa.array([p for _, p, _ in part], pa.binary()).cast(pa.string()),
                "meta": [m for _, _, m in part],
            }
        )


def _requests(count: int, params: bytes = TINY) -> Iterator[pa.RecordBatch]:
    return _chunks([(f"t{i}", params, i) for i in range(count)])


def test_exactly_100000_requests_fit_one_batch() -> None:
    batches = list(pack(_requests(100_000), ANTHROPIC_LIMITS))
    assert [len(b.custom_ids) for b in batches] == [100_000]


def test_request_100001_starts_a_second_batch() -> None:
    batches = list(pack(_requests(100_001), ANTHROPIC_LIMITS))
    assert [len(b.custom_ids) for b in batches] == [100_000, 1]
    assert batches[1].custom_ids == ["t100000"]


def _params_of_entry_size(custom_id: str, size: int) -> bytes:
    base = len(request_entry(custom_id, b'{"p":""}'))
    return b'{"p":"' + b"a" * (size - base) + b'"}'


def test_body_of_exactly_256_mb_fits_and_one_byte_more_splits() -> None:
    limit = ANTHROPIC_LIMITS.max_bytes
    assert limit == 256 * 1024 * 1024
    count = 64
    # 64 entries + 63 commas + envelope == the limit, to the byte.
    entry_size = (limit - ENVELOPE_BYTES - (count - 1)) // count
    remainder = limit - ENVELOPE_BYTES - (count - 1) - entry_size * count
    sizes = [entry_size] * (count - 1) + [entry_size + remainder]
    items = [
        (f"r{i:02d}", _params_of_entry_size(f"r{i:02d}", size), i) for i, size in enumerate(sizes)
    ]

    # Spread over several chunks: a batch is assembled across chunk boundaries.
    [exact] = list(pack(_chunks(items, rows=10), ANTHROPIC_LIMITS))
    assert isinstance(exact, PackedBatch)
    body = exact.close()
    assert len(body) == limit == exact.size
    data = body.getvalue()
    assert len(data) == limit
    assert [r["custom_id"] for r in orjson.loads(data)["requests"]] == [i for i, _, _ in items]
    assert body.getvalue() == data, "a body can be read again (an SDK retry sends it twice)"
    body.discard()

    last_id, _, meta = items[-1]
    items[-1] = (last_id, _params_of_entry_size(last_id, sizes[-1] + 1), meta)
    split = list(pack(_chunks(items, rows=10), ANTHROPIC_LIMITS))
    assert [len(b.custom_ids) for b in split] == [count - 1, 1]
    assert all(b.size <= limit for b in split)


def test_request_larger_than_any_batch_is_reported_not_dropped() -> None:
    limits = BatchLimits(max_requests=10, max_bytes=200)
    items = [("ok1", TINY, 1), ("huge", b'{"p":"' + b"a" * 500 + b'"}', 2), ("ok2", TINY, 3)]
    out = list(pack(_chunks(items), limits))
    oversized = [o for o in out if isinstance(o, Oversized)]
    packed = [o for o in out if isinstance(o, PackedBatch)]
    assert [(o.custom_id, o.row["meta"]) for o in oversized] == [("huge", 2)]
    assert sorted(i for b in packed for i in b.custom_ids) == ["ok1", "ok2"]
    bodies = [orjson.loads(b.close().getvalue())["requests"] for b in packed]
    assert [r["custom_id"] for body in bodies for r in body] == ["ok1", "ok2"]


def test_every_request_is_packed_once_in_order() -> None:
    limits = BatchLimits(max_requests=7, max_bytes=1_000)
    params = [orjson.dumps({"n": i, "text": "é" * (i % 13)}) for i in range(50)]
    items = [(f"t{i}", params[i], i) for i in range(50)]
    batches = list(pack(_chunks(items, rows=9), limits))
    ids = [i for b in batches for i in b.custom_ids]
    assert ids == [f"t{i}" for i in range(50)]
    assert [m for b in batches for m in b.rows["meta"].to_pylist()] == list(range(50))
    for batch in batches:
        body = batch.close()
        decoded = orjson.loads(body.getvalue())["requests"]
        assert [r["custom_id"] for r in decoded] == batch.custom_ids
        assert [orjson.dumps(r["params"]) for r in decoded] == [
            params[int(i[1:])] for i in batch.custom_ids
        ]
        assert len(body) == len(body.getvalue()) <= limits.max_bytes


def test_an_oversized_request_does_not_close_the_batch_around_it() -> None:
    limits = BatchLimits(max_requests=10, max_bytes=400)
    items = [("ok1", TINY, 1), ("huge", b'{"p":"' + b"a" * 500 + b'"}', 2), ("ok2", TINY, 3)]
    out = list(pack(_chunks(items), limits))
    assert [type(o).__name__ for o in out] == ["Oversized", "PackedBatch"]
    assert out[1].custom_ids == ["ok1", "ok2"]


def _reference_pack(sizes: list[int], limits: BatchLimits) -> list[list[int] | int]:
    """The packing rule written plainly, one request at a time: batches of row numbers, and
    the row number of each request too large for any batch, in the order they are decided."""
    out: list[list[int] | int] = []
    batch: list[int] = []
    size = ENVELOPE_BYTES
    for row, entry in enumerate(sizes):
        if ENVELOPE_BYTES + entry > limits.max_bytes:
            out.append(row)
            continue
        separator = 1 if batch else 0
        if len(batch) >= limits.max_requests or size + separator + entry > limits.max_bytes:
            out.append(batch)
            batch, size, separator = [], ENVELOPE_BYTES, 0
        batch.append(row)
        size += separator + entry
    if batch:
        out.append(batch)
    return out


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=60),
    max_requests=st.integers(min_value=1, max_value=12),
    max_bytes=st.integers(min_value=60, max_value=1_500),
    chunk_rows=st.integers(min_value=1, max_value=25),
)
def test_columnar_packing_matches_the_plain_rule(
    lengths: list[int], max_requests: int, max_bytes: int, chunk_rows: int
) -> None:
    limits = BatchLimits(max_requests=max_requests, max_bytes=max_bytes)
    items = [(f"r{i}", b'{"p":"' + b"x" * n + b'"}', i) for i, n in enumerate(lengths)]
    sizes = [len(request_entry(i, p)) for i, p, _ in items]
    expected = _reference_pack(sizes, limits)
    got: list[list[int] | int] = []
    for item in pack(_chunks(items, rows=chunk_rows), limits):
        if isinstance(item, Oversized):
            got.append(item.row["meta"])
            continue
        _check_body(item, max_bytes)
        got.append(item.rows["meta"].to_pylist())
    assert got == expected


def _check_body(item: PackedBatch, max_bytes: int) -> None:
    """The closed body is as big as the batch said, within the limit, its ids in order."""
    body = item.close()
    data = body.getvalue()
    assert len(data) == len(body) == item.size <= max_bytes
    assert [r["custom_id"] for r in orjson.loads(data)["requests"]] == item.custom_ids


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    lengths=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=60),
    max_requests=st.integers(min_value=1, max_value=12),
    max_bytes=st.integers(min_value=60, max_value=1_500),
    chunk_rows=st.integers(min_value=1, max_value=25),
)
def test_batches_assigned_in_dispatch_order_match_the_plain_rule_from_any_storage_order(
    data: st.DataObject, lengths: list[int], max_requests: int, max_bytes: int, chunk_rows: int
) -> None:
    limits = BatchLimits(max_requests=max_requests, max_bytes=max_bytes)
    # Row i is the i-th in dispatch order; the file holds the rows in another order.
    items = [(f"r{i}", b'{"p":"' + b"x" * n + b'"}', i) for i, n in enumerate(lengths)]
    stored = data.draw(st.permutations(range(len(items))))
    sizes = [len(request_entry(i, p)) for i, p, _ in items]
    # What the packer knows before reading a request: its id's and its params' lengths.
    with_commas = [ENTRY_OVERHEAD_BYTES + len(i) + len(p) for i, p, _ in items]
    assert with_commas == [size + 1 for size in sizes]
    numbers = assign_batches(np.array(with_commas), limits)

    chunks = [
        (batch, numbers[[items[row][2] for row in stored[start : start + chunk_rows]]])
        for start, batch in zip(
            range(0, len(stored), chunk_rows),
            _chunks([items[row] for row in stored], rows=chunk_rows),
            strict=True,
        )
    ]
    counts = np.bincount(numbers[numbers >= 0])
    set_aside: list[int] = []
    batches: list[list[int]] = []
    for item in pack_assigned(chunks, limits, counts):
        if isinstance(item, Oversized):
            set_aside.append(item.row["meta"])
            continue
        _check_body(item, max_bytes)
        rows = item.rows["meta"].to_pylist()
        assert rows == sorted(rows, key=stored.index), "a body holds its rows in file order"
        batches.append(sorted(rows))
    expected = _reference_pack(sizes, limits)
    # The batches in dispatch order, each the plain rule's batch; every other request set aside.
    assert batches == [o for o in expected if isinstance(o, list)]
    assert sorted(set_aside) == [o for o in expected if isinstance(o, int)]


def test_sizes_that_disagree_with_the_requests_fail_instead_of_overfilling() -> None:
    limits = BatchLimits(max_requests=10, max_bytes=len(TINY) * 3)
    items = [(f"t{i}", TINY, i) for i in range(6)]
    understated = np.full(6, 10)  # the real entries are several times larger
    numbers = assign_batches(understated, limits)
    assert set(numbers.tolist()) == {0}
    with pytest.raises(RuntimeError, match="over the provider's limits"):
        list(pack_assigned([(next(_chunks(items)), numbers)], limits, np.array([6])))


def test_a_batch_short_of_rows_is_never_handed_on() -> None:
    """Rows lost between assigning and reading (the file rewritten meanwhile, say) stop the
    pass at that batch: a batch missing a task would otherwise be sent without it."""
    limits = BatchLimits(max_requests=2, max_bytes=10_000)
    items = [(f"t{i}", TINY, i) for i in range(6)]
    numbers = np.array([0, 0, 1, 1, 2, 2])
    rows = next(_chunks(items))
    # Batch 1 loses a row: batch 0 goes, nothing from batch 1 on.
    partial = [(rows.slice(0, 3), numbers[:3]), (rows.slice(4, 2), numbers[4:])]
    handed_on = []
    with pytest.raises(RuntimeError, match="batch 1 got 1 of its 2 requests"):
        for item in pack_assigned(partial, limits, np.array([2, 2, 2])):
            handed_on.append(item.custom_ids)
    assert handed_on == [["t0", "t1"]]


def test_each_batch_is_handed_on_as_soon_as_it_is_whole() -> None:
    """Rows read in batch order keep few bodies open: batch 0 goes long before the last
    chunk is read (only the read-ahead of a couple of chunks is ahead of it)."""
    limits = BatchLimits(max_requests=2, max_bytes=10_000)
    batches = 12
    items = [(f"t{i}", TINY, i) for i in range(2 * batches)]
    numbers = np.repeat(np.arange(batches), 2)
    read: list[int] = []

    def chunks() -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        for start in range(0, len(items), 2):
            read.append(start)
            yield next(_chunks(items[start : start + 2])), numbers[start : start + 2]

    handed_on = [
        (item.custom_ids, len(read))
        for item in pack_assigned(chunks(), limits, np.full(batches, 2))
    ]
    assert [ids for ids, _ in handed_on] == [[f"t{2 * b}", f"t{2 * b + 1}"] for b in range(batches)]
    assert handed_on[0][1] <= 6 < batches
