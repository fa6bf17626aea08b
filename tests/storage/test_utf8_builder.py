"""Building a string column from many short byte strings without holding them."""

from __future__ import annotations

import tracemalloc

import orjson
import pyarrow as pa

from llm_pipelines.storage.datasets import Utf8Builder


def test_the_column_holds_the_values_in_order_and_the_builder_starts_again() -> None:
    values = ["", "plain", "é👩‍👧 \x00", '{"a": [1, 2]}']
    builder = Utf8Builder()
    for value in values:
        builder.append(value.encode())
    assert len(builder) == 4
    column = builder.finish()
    assert column.equals(pa.array(values, pa.string()))
    column.validate(full=True)
    assert len(builder) == 0
    builder.append(b"next")
    assert builder.finish().to_pylist() == ["next"]
    assert column.to_pylist() == values  # the first column is not touched by reuse


def test_appended_documents_cost_their_bytes_not_the_encoders_buffers() -> None:
    """orjson hands back each document in a buffer of ~32 kB; the builder keeps only bytes."""
    document = {"messages": [{"role": "user", "content": "x" * 3_000}], "model": "m"}
    builder = Utf8Builder()
    tracemalloc.start()
    try:
        for _ in range(1_000):
            builder.append(orjson.dumps(document))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(builder.finish()) == 1_000
    # 1,000 documents of ~3 kB: about 3 MB (a list of the documents would hold ~32 MB).
    assert held < 6 * 2**20, held
