"""The daily cost report: what a partition actually cost against the all-synchronous path."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.storage.datasets import RESULTS, RESULTS_SCHEMA
from llm_pipelines.storage.lake import Lake

REPORT_COLUMNS = [
    "route",
    "model",
    "task_type",
    "cost_usd",
    "sync_cost_usd",
    "input_tokens",
    "output_tokens",
]


@dataclass(frozen=True)
class CostLine:
    """Cost of one slice of the partition (a route, a model, a task type, or the total)."""

    key: str
    results: int
    cost_usd: float
    sync_cost_usd: float

    @property
    def saved_usd(self) -> float:
        """What this slice did not spend compared with the synchronous path."""
        return self.sync_cost_usd - self.cost_usd

    @property
    def savings_pct(self) -> float:
        """Saved as a percentage of the all-synchronous cost (0 when nothing was spent)."""
        return 100.0 * self.saved_usd / self.sync_cost_usd if self.sync_cost_usd else 0.0


@dataclass(frozen=True)
class CostReport:
    """Totals and breakdowns of a partition's results."""

    partition: str
    total: CostLine
    by_route: list[CostLine]
    by_model: list[CostLine]
    by_task_type: list[CostLine]

    def markdown(self) -> str:
        """A readable table for the Dagster UI."""
        lines = [
            f"**{self.partition}**: ${self.total.cost_usd:,.4f} actual vs "
            f"${self.total.sync_cost_usd:,.4f} all-sync, saved {self.total.savings_pct:.1f}%",
            "",
            "| slice | results | cost (USD) | all-sync (USD) | saved (USD) | saved % |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for title, group in (
            ("route", self.by_route),
            ("model", self.by_model),
            ("task type", self.by_task_type),
        ):
            for line in group:
                lines.append(
                    f"| {title}: {line.key} | {line.results:,} | {line.cost_usd:,.4f} | "
                    f"{line.sync_cost_usd:,.4f} | {line.saved_usd:,.4f} | {line.savings_pct:.1f} |"
                )
        return "\n".join(lines)


def _grouped(table: pa.Table, column: str) -> list[CostLine]:
    if table.num_rows == 0:
        return []
    grouped = table.group_by(column).aggregate(
        [("cost_usd", "sum"), ("sync_cost_usd", "sum"), ("cost_usd", "count")]
    )
    return sorted(
        (
            CostLine(str(key), count, cost, sync)
            for key, cost, sync, count in zip(
                grouped[column].to_pylist(),
                grouped["cost_usd_sum"].to_pylist(),
                grouped["sync_cost_usd_sum"].to_pylist(),
                grouped["cost_usd_count"].to_pylist(),
                strict=True,
            )
        ),
        key=lambda line: -line.sync_cost_usd,
    )


def build_report(lake: Lake, partition: str) -> CostReport:
    """Read the partition's results (cost columns only) and total them."""
    table = lake.read_table(
        lake.files(RESULTS, partition, ".parquet"), REPORT_COLUMNS, schema=RESULTS_SCHEMA
    )
    total = CostLine(
        "total",
        table.num_rows,
        pc.sum(table["cost_usd"]).as_py() or 0.0,
        pc.sum(table["sync_cost_usd"]).as_py() or 0.0,
    )
    return CostReport(
        partition=partition,
        total=total,
        by_route=_grouped(table, "route"),
        by_model=_grouped(table, "model"),
        by_task_type=_grouped(table, "task_type"),
    )
