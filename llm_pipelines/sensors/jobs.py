"""Jobs: the daily batch cycle, per-batch collection, resubmission, replay, cancel, and the
lake's housekeeping."""

import dagster as dg
from pydantic import Field

from llm_pipelines.assets.catalog import model_catalog
from llm_pipelines.assets.dispatch import (
    batch_results,
    batch_submissions,
    realtime_results,
    reused_results,
)
from llm_pipelines.assets.intake import raw_llm_events, routed_tasks
from llm_pipelines.assets.partitions import DAILY, run_owner
from llm_pipelines.assets.report import llm_cost_report
from llm_pipelines.dispatch.cancel import cancel_partition_batches
from llm_pipelines.dispatch.retries import REPLAYABLE_STAGES, replay_dead_letters
from llm_pipelines.resources import AnthropicResource, LakeResource
from llm_pipelines.storage.lake import ABANDONED_AFTER_S
from llm_pipelines.storage.lease import LeaseHeld, partition_lease

SENSOR_RUN_TAGS = {"dagster/max_runtime": "3600"}
"""Sensor-launched runs: run monitoring ends one stuck this long, and the sensor asks again."""

STAGE_TAG = "llm_pipelines/stage"
"""Run tag naming what a run does to the provider; the run queue limits runs by it
(``tag_concurrency_limits`` in dagster.yaml and deploy/dagster.yaml)."""

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
    # Every step is safe to repeat, so a failed or killed cycle is simply run again.
    tags={
        STAGE_TAG: "submit",
        "dagster/max_retries": "3",
        "dagster/retry_strategy": "FROM_FAILURE",
    },
)

refresh_model_catalog = dg.define_asset_job(
    "refresh_model_catalog",
    selection=dg.AssetSelection.assets(model_catalog),
    description="Read the provider's Models API into the lake's model catalog.",
)

collect_batch_results = dg.define_asset_job(
    "collect_batch_results",
    selection=dg.AssetSelection.assets(batch_results, reused_results, llm_cost_report),
    partitions_def=DAILY,
    description=(
        "Collect ended batches of a partition, answer the tasks that reuse them, and refresh "
        "its cost report."
    ),
    tags={**SENSOR_RUN_TAGS, STAGE_TAG: "collect"},
)

resubmit_batch_retries = dg.define_asset_job(
    "resubmit_batch_retries",
    selection=dg.AssetSelection.assets(batch_submissions),
    partitions_def=DAILY,
    description=(
        "Submit what a partition still owes the provider: retries waiting in retries/ (from "
        "collection or a replay) and tasks of intents a crashed run left. Launched by "
        "batch_completion_sensor."
    ),
    tags=SENSOR_RUN_TAGS,
)


class ReplayConfig(dg.Config):
    """Which standing dead letters of the partition to re-enqueue."""

    stages: list[str] = Field(
        default=list(REPLAYABLE_STAGES),
        description="Dead-letter stages to replay: collect, realtime, submit (not intake).",
    )
    reason_contains: str = Field(
        default="", description="Only rows whose reason contains this text (any case)."
    )
    task_ids: list[str] = Field(default=[], description="Only these tasks (empty: any).")
    dry_run: bool = Field(default=False, description="Count the matches, change nothing.")


@dg.op(
    description=(
        "Re-enqueue chosen dead letters of the partition into retries/ (one more attempt each);"
        " batch_completion_sensor then submits them."
    ),
)
def replay_dead_letters_op(
    context: dg.OpExecutionContext, config: ReplayConfig, lake: LakeResource
) -> None:
    store = lake.lake()
    partition = context.partition_key
    try:
        with partition_lease(store, partition, owner=run_owner(context), purpose="replay"):
            stats = replay_dead_letters(
                store,
                partition,
                run_id=context.run_id,
                stages=config.stages,
                reason_contains=config.reason_contains,
                task_ids=config.task_ids or None,
                dry_run=config.dry_run,
            )
    except (LeaseHeld, ValueError) as error:
        raise dg.Failure(description=str(error)) from None
    metadata = {
        "matched": stats.matched,
        "replayed": stats.replayed,
        "not_routed": stats.not_routed,
        "dry_run": config.dry_run,
    }
    context.log.info(f"{stats.matched} dead letters matched; {stats.replayed} re-enqueued")
    context.log_event(
        dg.AssetObservation(asset_key=batch_results.key, partition=partition, metadata=metadata)
    )


class CancelConfig(dg.Config):
    """Which in-flight batches of the partition to cancel."""

    batch_ids: list[str] = Field(default=[], description="Provider batch ids (empty: all).")


@dg.op(
    description=(
        "Cancel the partition's in-flight batches; once they end, collection sends requests "
        "they had not run to retries/ for a later batch."
    ),
)
def cancel_batches_op(
    context: dg.OpExecutionContext,
    config: CancelConfig,
    lake: LakeResource,
    anthropic: AnthropicResource,
) -> None:
    stats = cancel_partition_batches(
        lake.lake(), anthropic.provider(context.log), context.partition_key, config.batch_ids
    )
    metadata = {
        "canceled": len(stats.canceled),
        "already_ended": len(stats.already_ended),
        "requests": stats.requests,
        "batch_ids": dg.MetadataValue.json(stats.canceled),
    }
    context.log_event(
        dg.AssetObservation(
            asset_key=batch_submissions.key, partition=context.partition_key, metadata=metadata
        )
    )


@dg.job(
    name="replay_dead_letters",
    partitions_def=DAILY,
    description=(
        "Re-enqueue a partition's dead letters chosen by stage, reason text or task id "
        "(config from the launchpad); the sensor resubmits them."
    ),
)
def replay_dead_letters_job() -> None:
    replay_dead_letters_op()


@dg.job(
    name="cancel_batches",
    partitions_def=DAILY,
    description=(
        "Cancel a partition's in-flight batches (all, or chosen ids); unfinished requests are "
        "retried in later batches."
    ),
)
def cancel_batches_job() -> None:
    cancel_batches_op()


class SweepConfig(dg.Config):
    """How old a temporary file must be to count as abandoned."""

    older_than_hours: float = Field(
        default=ABANDONED_AFTER_S / 3600,
        gt=0,
        description="Remove .tmp-* files untouched for this long whose writer is gone (a live "
        "writer holds a lock on its file, however quiet it is).",
    )


@dg.op
def sweep_abandoned_files_op(
    context: dg.OpExecutionContext, config: SweepConfig, lake: LakeResource
) -> dg.Output[int]:
    """Remove temporary files that killed writers left in the lake (local lakes; an object
    store never publishes an unfinished upload)."""
    stats = lake.lake().sweep_abandoned(older_than_s=config.older_than_hours * 3600)
    context.log.info(f"removed {stats.files} abandoned temporary files ({stats.bytes:,} bytes)")
    return dg.Output(
        stats.files,
        metadata={"files_removed": stats.files, "mb_freed": round(stats.bytes / 2**20, 3)},
    )


@dg.job(
    name="sweep_abandoned_files",
    description=(
        "Housekeeping: delete the lake's temporary files left by writers that were killed "
        "mid-write; readers never see them, but they hold disk. Runs nightly."
    ),
)
def sweep_abandoned_files_job() -> None:
    sweep_abandoned_files_op()
