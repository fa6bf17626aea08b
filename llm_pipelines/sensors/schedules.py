"""The nightly schedules: yesterday's partition through the daily cycle, then housekeeping."""

import dagster as dg

from llm_pipelines.sensors.jobs import (
    daily_batch_cycle,
    refresh_model_catalog,
    sweep_abandoned_files_job,
)

nightly_batch_cycle = dg.build_schedule_from_partitioned_job(
    daily_batch_cycle,
    hour_of_day=2,
    minute_of_hour=0,
    name="nightly_batch_cycle",
    description="At 02:00 UTC, run the daily cycle for the day that just ended.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

nightly_sweep = dg.ScheduleDefinition(
    name="nightly_sweep",
    job=sweep_abandoned_files_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    description="At 03:30 UTC, remove temporary files that killed writers left in the lake.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

daily_catalog_refresh = dg.ScheduleDefinition(
    name="daily_catalog_refresh",
    job=refresh_model_catalog,
    cron_schedule="30 1 * * *",
    execution_timezone="UTC",
    description=(
        "At 01:30 UTC, read the provider's Models API into the model catalog, before the "
        "nightly cycle validates and routes by it."
    ),
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
