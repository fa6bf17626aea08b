"""Route a whole partition: events in, routed tasks out, streamed chunk by chunk."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow.compute as pc

from llm_pipelines.costs import PriceTable
from llm_pipelines.intake import EVENTS_FILE
from llm_pipelines.routing.policy import BATCH, REALTIME, RoutingPolicy
from llm_pipelines.storage.datasets import EVENTS, TASKS, TASKS_SCHEMA, write_rows
from llm_pipelines.storage.lake import Lake

TASKS_FILE = "tasks.parquet"


@dataclass
class RoutingStats:
    """How a partition was routed."""

    tasks: int = 0
    batch: int = 0
    realtime: int = 0
    est_cost_usd: float = 0.0
    by_rule: Counter[str] = field(default_factory=Counter)


def route_partition(
    lake: Lake, partition: str, policy: RoutingPolicy, prices: PriceTable, now: datetime
) -> RoutingStats:
    """Apply ``policy`` to every event of the partition and write ``tasks/``."""
    stats = RoutingStats()
    events_path = lake.path(EVENTS, partition, EVENTS_FILE)
    with write_rows(
        lake, lake.path(TASKS, partition, TASKS_FILE), TASKS_SCHEMA, keep_empty=True
    ) as out:
        for chunk in lake.iter_batches([events_path]):
            routed = policy.route(chunk, now, prices)
            out.add_batch(routed)
            stats.tasks += routed.num_rows
            realtime = int(pc.sum(pc.equal(routed["route"], REALTIME)).as_py() or 0)
            stats.realtime += realtime
            stats.batch += routed.num_rows - realtime
            stats.est_cost_usd += pc.sum(routed["est_cost_usd"]).as_py() or 0.0
            counts = pc.value_counts(routed["rule"])
            for rule, count in zip(
                counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
            ):
                stats.by_rule[rule] += count
    assert stats.batch + stats.realtime == stats.tasks, f"{BATCH}+{REALTIME} must cover every task"
    return stats
