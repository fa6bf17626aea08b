"""The routing policy: which tasks keep the synchronous path and which go to batches."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field

from llm_pipelines.costs import PriceTable

REALTIME = "realtime"
BATCH = "batch"
CHARS_PER_TOKEN = 4
"""For estimates before a request is sent; actual usage replaces it on every result row."""
EXPECTED_OUTPUT_SHARE = 0.5
"""Estimated output tokens as a share of ``max_tokens``."""


class RoutingPolicy(BaseModel):
    """Validated routing rules (see ``default_policy.yaml`` for their order and meaning)."""

    model_config = ConfigDict(extra="forbid")

    batch_turnaround_hours: float = Field(gt=0, le=24)
    realtime_task_types: list[str] = Field(default_factory=list)
    realtime_max_priority: int | None = Field(default=None, ge=0, le=9)

    def route(self, tasks: pa.RecordBatch, now: datetime, prices: PriceTable) -> pa.RecordBatch:
        """Add ``route``, ``rule``, ``requested_model`` and ``est_cost_usd`` to events."""
        cutoff = pa.scalar(
            now + timedelta(hours=self.batch_turnaround_hours), tasks["deadline"].type
        )
        flagged = tasks["requires_realtime"]
        by_type = pc.is_in(
            tasks["task_type"], value_set=pa.array(self.realtime_task_types, pa.string())
        )
        by_deadline = pc.fill_null(pc.less(tasks["deadline"], cutoff), False)
        if self.realtime_max_priority is None:
            by_priority = pa.array([False] * tasks.num_rows)
        else:
            by_priority = pc.less_equal(tasks["priority"], self.realtime_max_priority)
        rule = pc.case_when(
            pc.make_struct(flagged, by_type, by_deadline, by_priority),
            "requires_realtime",
            "task_type",
            "deadline",
            "priority",
            "default",
        )
        route = pc.if_else(pc.equal(rule, "default"), BATCH, REALTIME)
        estimate = estimated_cost(tasks, route, prices)
        return (
            pa.Table.from_batches([tasks])
            .append_column("route", route)
            .append_column("rule", rule)
            .append_column("requested_model", tasks["model"])
            .append_column("est_cost_usd", estimate)
            .to_batches()[0]
        )


def estimated_cost(tasks: pa.RecordBatch, route: pa.Array, prices: PriceTable) -> pa.Array:
    """Expected cost before sending: prompt chars / 4 in, half of ``max_tokens`` out."""
    table = pa.table(
        {
            "model": tasks["model"],
            "requested_model": tasks["model"],
            "route": route,
            "input_tokens": pc.divide(tasks["prompt_chars"], CHARS_PER_TOKEN),
            "output_tokens": pc.multiply(
                pc.cast(tasks["max_tokens"], pa.float64()), EXPECTED_OUTPUT_SHARE
            ),
            "cache_write_5m_tokens": pa.nulls(tasks.num_rows, pa.int64()),
            "cache_write_1h_tokens": pa.nulls(tasks.num_rows, pa.int64()),
            "cache_read_tokens": pa.nulls(tasks.num_rows, pa.int64()),
        }
    )
    return prices.with_cost_columns(table).column("cost_usd").combine_chunks()


def load_policy(path: str | Path | None = None) -> RoutingPolicy:
    """Read and validate a policy file; without ``path``, the one shipped in the package."""
    if path is None:
        return default_policy()
    return RoutingPolicy.model_validate(yaml.safe_load(Path(path).read_text()))


@cache
def default_policy() -> RoutingPolicy:
    """The policy shipped with the package."""
    text = resources.files("llm_pipelines.routing").joinpath("default_policy.yaml").read_text()
    return RoutingPolicy.model_validate(yaml.safe_load(text))
