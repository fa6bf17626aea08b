"""Jobs, the batch completion sensor and the nightly schedules."""

from llm_pipelines.sensors.batch_completion import batch_completion_sensor
from llm_pipelines.sensors.jobs import (
    cancel_batches_job,
    collect_batch_results,
    daily_batch_cycle,
    refresh_model_catalog,
    replay_dead_letters_job,
    resubmit_batch_retries,
    sweep_abandoned_files_job,
)
from llm_pipelines.sensors.schedules import (
    daily_catalog_refresh,
    nightly_batch_cycle,
    nightly_sweep,
)

__all__ = [
    "batch_completion_sensor",
    "cancel_batches_job",
    "collect_batch_results",
    "daily_batch_cycle",
    "daily_catalog_refresh",
    "nightly_batch_cycle",
    "nightly_sweep",
    "refresh_model_catalog",
    "replay_dead_letters_job",
    "resubmit_batch_retries",
    "sweep_abandoned_files_job",
]
