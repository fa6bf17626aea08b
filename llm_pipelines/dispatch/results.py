"""Result rows: one per answered task, the same shape for the batch and real-time routes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.costs import PriceTable
from llm_pipelines.dispatch.structured import structured_columns
from llm_pipelines.providers.anthropic import message_columns
from llm_pipelines.storage.datasets import RESULTS_SCHEMA
from llm_pipelines.storage.lake import Lake

RESULT_CHUNK_ROWS = 8_192
COMPLETE_STOP_REASONS = frozenset({"end_turn", "stop_sequence", "tool_use"})
"""Stop reasons of an answer the model finished: its turn ended, naturally, at a stop sequence
the request gave, or to call a tool the request offered (the call is the answer)."""
INCOMPLETE_STOP_REASONS = frozenset(
    {"max_tokens", "model_context_window_exceeded", "pause_turn", "refusal"}
)
"""Stop reasons of an answer kept as a result but marked ``complete = false``: cut short by
``max_tokens`` or by the context window, paused by the API in a long server-tool turn (send
the content back to continue it), or refused (``stop_details`` says why). Each was answered
and billed, and asking the same request again would not change it, so none is retried and
none is a dead letter: the row keeps what the model said, and what it cost."""
_DERIVED = ("complete", "cost_usd", "sync_cost_usd")
_GIVEN = pa.schema([f for f in RESULTS_SCHEMA if f.name not in _DERIVED])
"""The columns of a result row its writer is given; it derives the others."""


def success_row(
    *,
    task_id: str,
    task_type: str | None,
    route: str,
    batch_id: str | None,
    attempt: int,
    requested_model: str | None,
    message: dict[str, Any],
    request: str | None,
    collected_at: datetime,
) -> dict[str, Any]:
    """A result row from a Messages API response to ``request`` (costs and ``complete`` are
    added per chunk, vectorised)."""
    columns = message_columns([message])
    columns["structured_output"], columns["structured_output_error"] = structured_columns(
        columns["output_text"], columns["stop_reason"], [request]
    )
    row: dict[str, Any] = {
        name: values[0].as_py() if isinstance(values, pa.Array) else values[0]
        for name, values in columns.items()
    }
    row.update(
        task_id=task_id,
        task_type=task_type,
        route=route,
        batch_id=batch_id,
        attempt=attempt,
        requested_model=requested_model or row["model"],
        collected_at=collected_at,
    )
    return row


@dataclass
class ResultTotals:
    """Running totals of what a results file holds."""

    rows: int = 0
    cost_usd: float = 0.0
    sync_cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


class ResultsWriter:
    """Buffers result rows (or whole columnar chunks), prices each chunk, streams it to parquet."""

    def __init__(self, writer: Any, prices: PriceTable) -> None:
        self._writer = writer
        self._prices = prices
        # Rows added one by one, a list per column: arrow builds arrays from lists far faster
        # than from row dicts.
        self._columns: dict[str, list[Any]] = {name: [] for name in _GIVEN.names}
        self._tables: list[pa.Table] = []
        self._buffered = 0
        self.totals = ResultTotals()

    def add(self, row: dict[str, Any]) -> None:
        """Queue one result row."""
        for name, values in self._columns.items():
            values.append(row[name])
        self._counted(1)

    def add_table(self, table: pa.Table) -> None:
        """Queue a chunk of rows with the columns of a result row (derived ones excepted)."""
        self._rows_to_table()
        self._tables.append(table.select(_GIVEN.names).cast(_GIVEN))
        self._counted(table.num_rows)

    def _rows_to_table(self) -> None:
        if self._columns["task_id"]:
            self._tables.append(
                pa.Table.from_arrays(
                    [pa.array(self._columns[f.name], f.type) for f in _GIVEN], schema=_GIVEN
                )
            )
            for values in self._columns.values():
                values.clear()

    def _counted(self, rows: int) -> None:
        self._buffered += rows
        if self._buffered >= RESULT_CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        """Price and write what is buffered."""
        self._rows_to_table()
        if not self._tables:
            return
        table = pa.concat_tables(self._tables)
        table = table.append_column("complete", completed(table["stop_reason"]))
        table = self._prices.with_cost_columns(table)
        self._writer.write_table(table.select(RESULTS_SCHEMA.names).cast(RESULTS_SCHEMA))
        self.totals.rows += table.num_rows
        self.totals.cost_usd += pc.sum(table["cost_usd"]).as_py() or 0.0
        self.totals.sync_cost_usd += pc.sum(table["sync_cost_usd"]).as_py() or 0.0
        self.totals.input_tokens += pc.sum(table["input_tokens"]).as_py() or 0
        self.totals.output_tokens += pc.sum(table["output_tokens"]).as_py() or 0
        self._tables.clear()
        self._buffered = 0


def completed(stop_reason: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """``complete`` of result rows: whether each stop reason is a finished answer."""
    finished = pa.array(sorted(COMPLETE_STOP_REASONS), pa.string())
    return pc.fill_null(pc.is_in(stop_reason, value_set=finished), False)


@contextlib.contextmanager
def write_results(lake: Lake, path: str, prices: PriceTable) -> Iterator[ResultsWriter]:
    """Stream priced result rows into ``path``; the file exists even when it has no rows,
    because its presence is what marks a batch collected."""
    with lake.parquet_writer(path, RESULTS_SCHEMA) as writer:
        results = ResultsWriter(writer, prices)
        yield results
        results.flush()
