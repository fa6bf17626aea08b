"""Jobs: the daily batch cycle and per-batch collection."""

import dagster as dg

from llm_pipelines.assets.dispatch import (
    batch_results,
    batch_submissions,
    realtime_results,
    reused_results,
)
from llm_pipelines.assets.intake import raw_llm_events, routed_tasks
from llm_pipelines.assets.partitions import DAILY
from llm_pipelines.assets.report import llm_cost_report

daily_batch_cycle = dg.define_asset_job(
    "daily_batch_cycle",
    selection=dg.AssetSelection.assets(
        raw_llm_events, routed_tasks, realtime_results, reused_results, batch_submissions
    ),
    partitions_def=DAILY,
    description=(
        "One day's cycle: validate the landing zone, route, answer real-time tasks, reuse "
        "answers already given, and submit the rest as Message Batches. Collection follows, "
        "launched by batch_completion_sensor."
    ),
)

collect_batch_results = dg.define_asset_job(
    "collect_batch_results",
    selection=dg.AssetSelection.assets(batch_results, reused_results, llm_cost_report),
    partitions_def=DAILY,
    description=(
        "Collect ended batches of a partition, answer the tasks that reuse them, and refresh "
        "its cost report."
    ),
)
