"""The daily cost report: what a partition actually cost against the all-synchronous path.

Built from the partition's result rows, streamed in bounded chunks. Every row carries its
actual cost (``cost_usd``) and its all-sync counterfactual (``sync_cost_usd``: the same
request sent on its own, synchronously, at list price, on the requested model, without
caching). The difference is split by lever (batching, caching, downshifting, reuse, and the
migration of work off retired models) as
defined in :meth:`llm_pipelines.costs.PriceTable.lever_savings`: a waterfall whose parts
add up to the saving exactly, per row and so per slice and per day.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.costs.prices import REUSE_ROUTE, PriceTable, default_price_table
from llm_pipelines.storage.datasets import MODEL_MIGRATED, RESULTS, TASKS
from llm_pipelines.storage.lake import Lake

LEVERS = ("batching", "caching", "downshifting", "reuse", "migration")
"""The ways the pipeline saves, in the order the report lists them."""
SLICE_COLUMNS = ("route", "model", "task_type")
USAGE_COLUMNS = [
    "task_id",
    "route",
    "model",
    "requested_model",
    "task_type",
    "cost_usd",
    "sync_cost_usd",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
]
_SUMMED = [
    "results",
    "cost_usd",
    "sync_cost_usd",
    *(f"saved_{lever}_usd" for lever in LEVERS),
    "prompt_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
]


@dataclass(frozen=True)
class CostLine:
    """Cost of one slice of the partition (a route, a model, a task type, or the total)."""

    key: str
    results: int
    cost_usd: float
    sync_cost_usd: float
    saved_by: dict[str, float] = field(default_factory=dict)
    """USD saved per lever; the values add up to :attr:`saved_usd`."""

    @property
    def saved_usd(self) -> float:
        """What this slice did not spend compared with the synchronous path."""
        return self.sync_cost_usd - self.cost_usd

    @property
    def savings_pct(self) -> float:
        """Saved as a percentage of the all-synchronous cost (0 when nothing was spent)."""
        return self.pct_of_sync(self.saved_usd)

    def pct_of_sync(self, usd: float) -> float:
        """``usd`` as a percentage of this slice's all-synchronous cost."""
        return 100.0 * usd / self.sync_cost_usd if self.sync_cost_usd else 0.0


@dataclass(frozen=True)
class CostReport:
    """Totals and breakdowns of a partition's results."""

    partition: str
    total: CostLine
    by_route: list[CostLine]
    by_model: list[CostLine]
    by_task_type: list[CostLine]
    prompt_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def cache_read_share_pct(self) -> float:
        """Prompt tokens read from the prompt cache, as a share of every prompt token sent."""
        return 100.0 * self.cache_read_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def metadata(self) -> dict[str, float | int]:
        """Numbers for Dagster metadata: flat keys, so the UI plots each across days."""
        total = self.total
        values: dict[str, float | int] = {
            "results": total.results,
            "cost_usd": round(total.cost_usd, 6),
            "all_sync_cost_usd": round(total.sync_cost_usd, 6),
            "saved_usd": round(total.saved_usd, 6),
            "savings_pct": round(total.savings_pct, 2),
            "cache_read_share_pct": round(self.cache_read_share_pct, 2),
        }
        for lever in LEVERS:
            saved = total.saved_by.get(lever, 0.0)
            values[f"saved_usd_{lever}"] = round(saved, 6)
            values[f"savings_pct_{lever}"] = round(total.pct_of_sync(saved), 2)
        for title, group in self.slices():
            prefix = title.replace(" ", "_")
            for line in group:
                values[f"cost_usd_{prefix}_{line.key}"] = round(line.cost_usd, 6)
                values[f"all_sync_cost_usd_{prefix}_{line.key}"] = round(line.sync_cost_usd, 6)
        return values

    def slices(self) -> list[tuple[str, list[CostLine]]]:
        """The breakdowns with their titles."""
        return [
            ("route", self.by_route),
            ("model", self.by_model),
            ("task type", self.by_task_type),
        ]

    def markdown(self) -> str:
        """A readable report for the Dagster UI: the levers, then every slice."""
        total = self.total
        lines = [
            f"**{self.partition}**: ${total.cost_usd:,.4f} actual vs "
            f"${total.sync_cost_usd:,.4f} all-sync, saved ${total.saved_usd:,.4f} "
            f"({total.savings_pct:.1f}%); {self.cache_read_share_pct:.1f}% of prompt tokens "
            "read from the prompt cache",
            "",
            "| lever | saved (USD) | % of all-sync |",
            "|---|---:|---:|",
        ]
        for lever in LEVERS:
            saved = total.saved_by.get(lever, 0.0)
            lines.append(f"| {lever} | {saved:,.4f} | {total.pct_of_sync(saved):.1f} |")
        lines += [
            f"| **total** | **{total.saved_usd:,.4f}** | **{total.savings_pct:.1f}** |",
            "",
            "| slice | results | cost (USD) | all-sync (USD) | saved (USD) | saved % | "
            + " | ".join(f"{lever} (USD)" for lever in LEVERS)
            + " |",
            "|---|" + "---:|" * (5 + len(LEVERS)),
        ]
        for title, group in self.slices():
            for line in group:
                levers = " | ".join(f"{line.saved_by.get(lever, 0.0):,.4f}" for lever in LEVERS)
                lines.append(
                    f"| {title}: {line.key} | {line.results:,} | {line.cost_usd:,.4f} | "
                    f"{line.sync_cost_usd:,.4f} | {line.saved_usd:,.4f} | "
                    f"{line.savings_pct:.1f} | {levers} |"
                )
        return "\n".join(lines)


def _measures(chunk: pa.Table, prices: PriceTable, migrated_ids: pa.Array) -> pa.Table:
    """The per-row numbers the report sums, with the slice columns beside them
    (``migrated_ids``: the tasks routing moved off a retired model)."""

    def tokens(name: str) -> pa.Array:
        return pc.fill_null(chunk[name], 0)

    writes = pc.add(tokens("cache_write_5m_tokens"), tokens("cache_write_1h_tokens"))
    reused = pc.equal(chunk["route"], REUSE_ROUTE)
    migrated = pc.fill_null(pc.is_in(chunk["task_id"], value_set=migrated_ids), False)
    levers = prices.lever_savings(chunk, migrated)
    columns = {
        "total": pa.array(["total"] * chunk.num_rows, pa.string()),
        "route": chunk["route"],
        "model": pc.fill_null(chunk["model"], "(none)"),
        "task_type": pc.fill_null(chunk["task_type"], "(none)"),
        "results": pa.array([1] * chunk.num_rows, pa.int64()),
        "cost_usd": pc.fill_null(chunk["cost_usd"], 0.0),
        "sync_cost_usd": pc.fill_null(chunk["sync_cost_usd"], 0.0),
        **{f"saved_{lever}_usd": levers[f"saved_{lever}_usd"] for lever in LEVERS},
        # Reused rows repeat their source's usage: count tokens only where they were sent.
        "prompt_tokens": pc.if_else(
            reused, 0, pc.add(pc.add(tokens("input_tokens"), tokens("cache_read_tokens")), writes)
        ),
        "cache_read_tokens": pc.if_else(reused, 0, tokens("cache_read_tokens")),
        "cache_write_tokens": pc.if_else(reused, 0, writes),
    }
    return pa.table(columns)


def _sum_by(table: pa.Table, key: str) -> pa.Table:
    summed = table.group_by(key).aggregate([(name, "sum") for name in _SUMMED])
    return summed.rename_columns([key, *_SUMMED])


def _lines(table: pa.Table, key: str) -> list[CostLine]:
    rows = table.to_pylist()
    return sorted(
        (
            CostLine(
                key=str(row[key]),
                results=int(row["results"]),
                cost_usd=row["cost_usd"],
                sync_cost_usd=row["sync_cost_usd"],
                saved_by={lever: row[f"saved_{lever}_usd"] for lever in LEVERS},
            )
            for row in rows
        ),
        key=lambda line: -line.sync_cost_usd,
    )


def build_report(lake: Lake, partition: str, prices: PriceTable | None = None) -> CostReport:
    """Stream the partition's results (usage and cost columns only) and total them."""
    prices = prices or default_price_table()
    keys = ["total", *SLICE_COLUMNS]
    partials: dict[str, list[pa.Table]] = {key: [] for key in keys}
    migrated = migrated_task_ids(lake, partition)
    for batch in lake.iter_batches(lake.files(RESULTS, partition, ".parquet"), USAGE_COLUMNS):
        measures = _measures(pa.Table.from_batches([batch]), prices, migrated)
        for key in keys:
            partials[key].append(_sum_by(measures.select([key, *_SUMMED]), key))
    summed = {
        key: _sum_by(pa.concat_tables(parts), key) if parts else None
        for key, parts in partials.items()
    }
    total_rows = summed["total"].to_pylist() if summed["total"] is not None else []
    totals = total_rows[0] if total_rows else dict.fromkeys(_SUMMED, 0)
    total = CostLine(
        key="total",
        results=int(totals["results"]),
        cost_usd=float(totals["cost_usd"]),
        sync_cost_usd=float(totals["sync_cost_usd"]),
        saved_by={lever: float(totals[f"saved_{lever}_usd"]) for lever in LEVERS},
    )

    def lines(column: str) -> list[CostLine]:
        table = summed[column]
        return _lines(table, column) if table is not None else []

    return CostReport(
        partition=partition,
        total=total,
        by_route=lines("route"),
        by_model=lines("model"),
        by_task_type=lines("task_type"),
        prompt_tokens=int(totals["prompt_tokens"]),
        cache_read_tokens=int(totals["cache_read_tokens"]),
        cache_write_tokens=int(totals["cache_write_tokens"]),
    )


def migrated_task_ids(lake: Lake, partition: str) -> pa.Array:
    """The partition's tasks routing moved off a retired model (rule ``model_migrated``):
    their change of price is the migration lever's, not right-sizing's."""
    ids = [
        batch["task_id"]
        for path in lake.files(TASKS, partition, ".parquet")
        for batch in lake.select_rows(
            path,
            ["model_rule"],
            lambda narrow: pc.fill_null(pc.equal(narrow["model_rule"], MODEL_MIGRATED), False),
            ["task_id"],
        )
    ]
    return pa.concat_arrays(ids) if ids else pa.array([], pa.string())


def daily_cost_usd(lake: Lake, partition: str) -> float:
    """A day's actual spend: the sum of ``cost_usd`` over its result rows."""
    total = 0.0
    for batch in lake.iter_batches(lake.files(RESULTS, partition, ".parquet"), ["cost_usd"]):
        total += pc.sum(batch["cost_usd"]).as_py() or 0.0
    return total
