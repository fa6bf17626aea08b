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
from llm_pipelines.providers.anthropic import message_columns
from llm_pipelines.storage.datasets import RESULTS_SCHEMA
from llm_pipelines.storage.lake import Lake

RESULT_CHUNK_ROWS = 8_192
_UNCOSTED = pa.schema([f for f in RESULTS_SCHEMA if f.name not in ("cost_usd", "sync_cost_usd")])


def success_row(
    *,
    task_id: str,
    task_type: str | None,
    route: str,
    batch_id: str | None,
    attempt: int,
    requested_model: str | None,
    message: dict[str, Any],
    collected_at: datetime,
) -> dict[str, Any]:
    """A result row from a Messages API response (costs are added per chunk, vectorised)."""
    row: dict[str, Any] = {name: values[0] for name, values in message_columns([message]).items()}
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
        self._columns: dict[str, list[Any]] = {name: [] for name in _UNCOSTED.names}
        self._tables: list[pa.Table] = []
        self._buffered = 0
        self.totals = ResultTotals()

    def add(self, row: dict[str, Any]) -> None:
        """Queue one result row."""
        for name, values in self._columns.items():
            values.append(row[name])
        self._counted(1)

    def add_table(self, table: pa.Table) -> None:
        """Queue a chunk of rows with the columns of a result row (costs excepted)."""
        self._rows_to_table()
        self._tables.append(table.select(_UNCOSTED.names).cast(_UNCOSTED))
        self._counted(table.num_rows)

    def _rows_to_table(self) -> None:
        if self._columns["task_id"]:
            self._tables.append(
                pa.Table.from_arrays(
                    [pa.array(self._columns[f.name], f.type) for f in _UNCOSTED], schema=_UNCOSTED
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
        table = self._prices.with_cost_columns(pa.concat_tables(self._tables))
        self._writer.write_table(table.select(RESULTS_SCHEMA.names).cast(RESULTS_SCHEMA))
        self.totals.rows += table.num_rows
        self.totals.cost_usd += pc.sum(table["cost_usd"]).as_py() or 0.0
        self.totals.sync_cost_usd += pc.sum(table["sync_cost_usd"]).as_py() or 0.0
        self.totals.input_tokens += pc.sum(table["input_tokens"]).as_py() or 0
        self.totals.output_tokens += pc.sum(table["output_tokens"]).as_py() or 0
        self._tables.clear()
        self._buffered = 0


@contextlib.contextmanager
def write_results(lake: Lake, path: str, prices: PriceTable) -> Iterator[ResultsWriter]:
    """Stream priced result rows into ``path``; the file exists even when it has no rows,
    because its presence is what marks a batch collected."""
    with lake.parquet_writer(path, RESULTS_SCHEMA) as writer:
        results = ResultsWriter(writer, prices)
        yield results
        results.flush()
