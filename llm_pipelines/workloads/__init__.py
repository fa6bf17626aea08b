"""The three workloads that feed the pipeline and read its results back.

Each is an asset group a data team can copy: a source table, a producer that lands tasks into
the landing zone, and a consumer that joins the results back and reports what is missing.

- :mod:`~llm_pipelines.workloads.catalog`: product descriptions for the day's new products.
- :mod:`~llm_pipelines.workloads.support_analytics`: the day's support tickets triaged into a
  daily insights table.
- :mod:`~llm_pipelines.workloads.offline_eval`: an eval set answered by several models, then
  judged, into a per-model score table.
"""

from __future__ import annotations

import dagster as dg

from llm_pipelines.assets.partitions import DAILY
from llm_pipelines.sensors import daily_batch_cycle
from llm_pipelines.workloads import catalog, offline_eval, support_analytics

MODULES = [catalog, support_analytics, offline_eval]

ASSETS = [a for m in MODULES for a in m.ASSETS]
SCHEDULES = [s for m in MODULES for s in m.SCHEDULES]
SENSORS = [s for m in MODULES for s in m.SENSORS]
PRODUCERS = [p for m in MODULES for p in m.PRODUCERS]
"""First-round producers: ``raw_llm_events`` depends on them (``assets/landing.py``)."""

todays_batch_cycle = dg.define_asset_job(
    "todays_batch_cycle",
    selection=dg.AssetSelection.assets(*PRODUCERS).upstream() | daily_batch_cycle.selection,
    partitions_def=DAILY,
    description=(
        "Today's batch cycle in one run, from the launchpad with no config to write: every "
        "workload's source table and tasks for the day, then intake, routing, real-time "
        "answers and batch submission. Pick the newest partition (the day that just ended, "
        "as the nightly schedules do). batch_completion_sensor collects the batches; each "
        "workload's sensor then builds its outputs (and runs the evaluation's judge round)."
    ),
)

JOBS = [todays_batch_cycle, *(j for m in MODULES for j in m.JOBS)]
