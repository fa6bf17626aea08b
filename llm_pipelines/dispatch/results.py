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
    usage = message.get("usage") or {}
    split = usage.get("cache_creation") or {}
    created = usage.get("cache_creation_input_tokens") or 0
    write_1h = split.get("ephemeral_1h_input_tokens") or 0
    # Without a TTL split the API's default TTL (5 minutes) applies.
    write_5m = split.get("ephemeral_5m_input_tokens", created - write_1h) or 0
    text = "".join(
        b.get("text", "") for b in message.get("content") or () if b.get("type") == "text"
    )
    return {
        "task_id": task_id,
        "task_type": task_type,
        "route": route,
        "batch_id": batch_id,
        "attempt": attempt,
        "model": message.get("model"),
        "requested_model": requested_model or message.get("model"),
        "stop_reason": message.get("stop_reason"),
        "output_text": text,
        "input_tokens": usage.get("input_tokens") or 0,
        "output_tokens": usage.get("output_tokens") or 0,
        "cache_write_5m_tokens": write_5m,
        "cache_write_1h_tokens": write_1h,
        "cache_read_tokens": usage.get("cache_read_input_tokens") or 0,
        "collected_at": collected_at,
    }


@dataclass
class ResultTotals:
    """Running totals of what a results file holds."""

    rows: int = 0
    cost_usd: float = 0.0
    sync_cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


class ResultsWriter:
    """Buffers result rows column by column, prices each chunk and streams it to parquet."""

    def __init__(self, writer: Any, prices: PriceTable) -> None:
        self._writer = writer
        self._prices = prices
        # One list per column: arrow builds arrays from lists far faster than from row dicts.
        self._columns: dict[str, list[Any]] = {name: [] for name in _UNCOSTED.names}
        self._appends = [(name, values.append) for name, values in self._columns.items()]
        self._buffered = 0
        self.totals = ResultTotals()

    def add(self, row: dict[str, Any]) -> None:
        """Queue one result row."""
        for name, append in self._appends:
            append(row[name])
        self._buffered += 1
        if self._buffered >= RESULT_CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        """Price and write what is buffered."""
        if not self._buffered:
            return
        chunk = pa.Table.from_arrays(
            [pa.array(self._columns[f.name], f.type) for f in _UNCOSTED], schema=_UNCOSTED
        )
        table = self._prices.with_cost_columns(chunk)
        self._writer.write_table(table.select(RESULTS_SCHEMA.names).cast(RESULTS_SCHEMA))
        self.totals.rows += table.num_rows
        self.totals.cost_usd += pc.sum(table["cost_usd"]).as_py() or 0.0
        self.totals.sync_cost_usd += pc.sum(table["sync_cost_usd"]).as_py() or 0.0
        self.totals.input_tokens += pc.sum(table["input_tokens"]).as_py() or 0
        self.totals.output_tokens += pc.sum(table["output_tokens"]).as_py() or 0
        for values in self._columns.values():
            values.clear()
        self._buffered = 0


@contextlib.contextmanager
def write_results(lake: Lake, path: str, prices: PriceTable) -> Iterator[ResultsWriter]:
    """Stream priced result rows into ``path``; the file exists even when it has no rows,
    because its presence is what marks a batch collected."""
    with lake.parquet_writer(path, RESULTS_SCHEMA) as writer:
        results = ResultsWriter(writer, prices)
        yield results
        results.flush()
