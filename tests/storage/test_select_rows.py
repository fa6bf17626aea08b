"""Selecting rows: decided on narrow columns, wide ones read only where a row is kept."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from llm_pipelines.storage import Lake


@pytest.fixture
def three_groups(lake: Lake) -> str:
    path = lake.path("tasks", "2026-11-23", "t.parquet")
    with lake.parquet_writer(path, pa.schema([("id", pa.string()), ("body", pa.string())])) as out:
        for group in range(3):  # one row group per call
            ids = [f"g{group}-{row}" for row in range(4)]
            out.write_table(pa.table({"id": ids, "body": [f"long text of {i}" for i in ids]}))
    return path


def test_rows_come_back_in_file_order_with_the_wide_columns(lake: Lake, three_groups: str) -> None:
    wanted = pa.array(["g2-1", "g0-3", "g2-0"])
    rows = lake.select_rows(
        three_groups, ["id"], lambda t: pc.is_in(t["id"], value_set=wanted), ["body", "id"]
    )
    table = pa.Table.from_batches(list(rows))
    assert table.column_names == ["body", "id"]
    assert table["id"].to_pylist() == ["g0-3", "g2-0", "g2-1"]
    assert table["body"].to_pylist() == [f"long text of {i}" for i in ("g0-3", "g2-0", "g2-1")]
    only_ids = lake.select_rows(
        three_groups, ["id"], lambda t: pc.is_in(t["id"], value_set=wanted), ["id"]
    )
    assert pa.Table.from_batches(list(only_ids))["id"].to_pylist() == ["g0-3", "g2-0", "g2-1"]


def test_wide_columns_are_read_only_from_row_groups_that_keep_a_row(
    lake: Lake, three_groups: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[list[int] | None, list[str]]] = []
    read, iter_batches = pq.ParquetFile.read, pq.ParquetFile.iter_batches

    def spy_read(self: pq.ParquetFile, columns: list[str], **kwargs: Any) -> pa.Table:
        reads.append((None, list(columns)))
        return read(self, columns=columns, **kwargs)

    def spy_iter(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Any:
        reads.append((kwargs["row_groups"], list(kwargs["columns"])))
        return iter_batches(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read", spy_read)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy_iter)
    seen: list[list[str]] = []

    def keep(narrow: pa.Table) -> pa.Array:
        seen.append(narrow.column_names)
        return pc.starts_with(narrow["id"], "g1-")

    table = pa.Table.from_batches(
        list(lake.select_rows(three_groups, ["id"], keep, ["id", "body"]))
    )
    assert table["id"].to_pylist() == [f"g1-{row}" for row in range(4)]
    assert seen == [["id"]]  # one call, on the narrow columns only
    assert [groups for groups, columns in reads if "body" in columns] == [[1]]

    reads.clear()
    nothing = list(
        lake.select_rows(three_groups, ["id"], lambda t: pc.equal(t["id"], "x"), ["body"])
    )
    assert nothing == [] and not any("body" in columns for _, columns in reads)


def test_row_groups_read_in_pieces_stay_aligned_with_the_mask(
    lake: Lake, three_groups: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llm_pipelines.storage.lake as lake_module

    # Pieces of 3 rows in row groups of 4: the kept rows straddle pieces, after a skipped group.
    monkeypatch.setattr(lake_module, "READ_BATCH_ROWS", 3)
    wanted = pa.chunked_array([["g1-2", "g1-3"], ["g2-0", "g2-3"]])
    rows = lake.select_rows(
        three_groups,
        ["id"],
        lambda t: pc.is_in(t["id"], value_set=wanted.combine_chunks()),
        ["id", "body"],
    )
    table = pa.Table.from_batches(list(rows))
    assert table["id"].to_pylist() == ["g1-2", "g1-3", "g2-0", "g2-3"]
    assert table["body"].to_pylist() == [f"long text of {i}" for i in table["id"].to_pylist()]
