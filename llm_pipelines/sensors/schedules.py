"""The nightly schedule: yesterday's partition through the daily cycle."""

import dagster as dg

from llm_pipelines.sensors.jobs import daily_batch_cycle

nightly_batch_cycle = dg.build_schedule_from_partitioned_job(
    daily_batch_cycle,
    hour_of_day=2,
    minute_of_hour=0,
    name="nightly_batch_cycle",
    description="At 02:00 UTC, run the daily cycle for the day that just ended.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
