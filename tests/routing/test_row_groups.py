"""Routed rows wait per stretch; the chunks they keep alive stay within the budget."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from llm_pipelines.routing import route
from llm_pipelines.routing.policy import BATCH, REALTIME, ROUTES

STRETCHES = 48
ROWS = 96  # per chunk
REQUEST = "x" * 2_000


class _Groups:
    """A RowWriter that keeps what each row group held (ids), not its bytes."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []

    def add_batch(self, table: pa.Table) -> None:
        self.groups.append(table["task_id"].to_pylist())


def _chunk(number: int, burst: int) -> tuple[pa.RecordBatch, np.ndarray]:
    """Most rows to the ``burst`` stretch, one stray row to every sixth other stretch (a
    different sixth each chunk): producers that land one kind of task at a time, with a few
    others mixed in, so each stretch gets rows of many chunks, a few at a time."""
    strays = [s for s in range(STRETCHES) if (s + number) % 6 == 0 and s != burst]
    stretch = np.sort(np.array([*strays, *[burst] * (ROWS - len(strays))]))
    ids = [f"c{number}-s{s}-r{row}" for row, s in enumerate(stretch.tolist())]
    rows = pa.RecordBatch.from_pydict(
        {
            "task_id": ids,
            "request": [REQUEST] * ROWS,
            "request_bytes": [len(REQUEST)] * ROWS,
            "dispatch_position": list(range(number * ROWS, (number + 1) * ROWS)),
        }
    )
    return rows, stretch


def test_chunks_held_for_waiting_rows_stay_within_the_budget_and_every_row_is_written_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one_chunk = _chunk(0, 0)[0].nbytes
    monkeypatch.setattr(route, "PENDING_BYTES", 10 * one_chunk)
    monkeypatch.setattr(route, "ROW_GROUP_BYTES", 1 << 40)  # only the budget writes
    out = _Groups()
    routes = np.full(STRETCHES, ROUTES.index(BATCH))
    routes[-1] = ROUTES.index(REALTIME)
    stretches = route._RowGroupsByStretch(out, routes)  # type: ignore[arg-type]
    baseline = pa.total_allocated_bytes()
    chunks = 200
    peak = 0
    for number in range(chunks):
        # Each burst stretch for 4 chunks: a stray row of every chunk waits elsewhere.
        rows, stretch = _chunk(number, (number // 4) % STRETCHES)
        stretches.add(rows, stretch)
        del rows
        peak = max(peak, pa.total_allocated_bytes() - baseline)
    stretches.flush()
    # Held: the budget, plus the chunk that took it over until its stretches were written.
    # Charged by rows instead, the stray rows would keep nearly every chunk; written after
    # rows of 8 chunks, each stretch would keep some 48.
    assert peak <= 11 * one_chunk
    written = [task_id for group in out.groups for task_id in group]
    assert len(written) == len(set(written)) == chunks * ROWS
    for group in out.groups:  # one stretch a row group
        assert len({task_id.split("-")[1] for task_id in group}) == 1


def test_rows_must_come_grouped_by_stretch() -> None:
    stretches = route._RowGroupsByStretch(_Groups(), np.zeros(3, dtype=np.int64))  # type: ignore[arg-type]
    rows, _ = _chunk(0, 0)
    with pytest.raises(ValueError, match="grouped by stretch"):
        stretches.add(rows.slice(0, 3), np.array([1, 0, 2]))
