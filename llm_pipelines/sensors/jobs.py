"""Jobs: the daily batch cycle and per-batch collection."""

import dagster as dg

from llm_pipelines.assets.dispatch import batch_results, batch_submissions, realtime_results
from llm_pipelines.assets.intake import raw_llm_events, routed_tasks
from llm_pipelines.assets.partitions import DAILY
from llm_pipelines.assets.report import llm_cost_report

STAGE_TAG = "llm_pipelines/stage"
"""Run tag naming what a run does to the provider; the run queue limits runs by it
(``tag_concurrency_limits`` in dagster.yaml and deploy/dagster.yaml)."""

daily_batch_cycle = dg.define_asset_job(
    "daily_batch_cycle",
    selection=dg.AssetSelection.assets(
        raw_llm_events, routed_tasks, realtime_results, batch_submissions
    ),
    partitions_def=DAILY,
    description=(
        "One day's cycle: validate the landing zone, route, answer real-time tasks and submit "
        "the rest as Message Batches. Collection follows, launched by batch_completion_sensor."
    ),
    tags={STAGE_TAG: "submit"},
)

collect_batch_results = dg.define_asset_job(
    "collect_batch_results",
    selection=dg.AssetSelection.assets(batch_results, llm_cost_report),
    partitions_def=DAILY,
    description="Collect ended batches of a partition and refresh its cost report.",
    tags={STAGE_TAG: "collect"},
)
