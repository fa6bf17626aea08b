"""Dispatch assets: the real-time path, batch submission and batch collection."""

import dagster as dg
from pydantic import Field

from llm_pipelines.assets.intake import routed_tasks
from llm_pipelines.assets.partitions import DAILY, OWNERS, run_owner
from llm_pipelines.dispatch.collect import collect_batch, pending_manifests
from llm_pipelines.dispatch.realtime import answer_partition
from llm_pipelines.dispatch.retries import DEFAULT_MAX_ATTEMPTS
from llm_pipelines.dispatch.submit import submit_partition
from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.routing.reuse import resolve_reuse
from llm_pipelines.storage.lease import LeaseHeld


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_dispatch",
    kinds={"anthropic", "parquet"},
    owners=OWNERS,
    deps=[routed_tasks],
    description=(
        "Tasks routed real-time, answered through the synchronous Messages API with bounded "
        "concurrency and the SDK's retries; same results shape as batch results. One run per "
        "partition at a time (a real-time lease in the lake, apart from submission's)."
    ),
)
def realtime_results(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    anthropic: AnthropicResource,
    cost_policy: CostPolicyResource,
) -> dg.MaterializeResult:
    try:
        stats = answer_partition(
            lake.lake(),
            anthropic.provider(context.log),
            context.partition_key,
            cost_policy.price_table(),
            anthropic.realtime_concurrency,
            owner=run_owner(context),
        )
    except LeaseHeld as held:
        # As submission does: the run that holds the lease answers these tasks; this one
        # fails loudly rather than record a materialization of work it did not do.
        raise dg.Failure(description=str(held)) from None
    totals = stats.totals
    assert totals is not None
    return dg.MaterializeResult(
        metadata={
            "tasks": stats.tasks,
            "answered": stats.answered,
            "dead_lettered": stats.dead_lettered,
            "chunks_written": stats.chunks_written,
            "already_answered": stats.already_answered,
            "cost_usd": round(totals.cost_usd, 6),
            "sync_cost_usd": round(totals.sync_cost_usd, 6),
            "dagster/row_count": stats.answered,
        }
    )


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_dispatch",
    kinds={"anthropic", "json"},
    owners=OWNERS,
    deps=[routed_tasks],
    description=(
        "Batch-routed tasks packed into Message Batches (at most 100,000 requests and 256 MB "
        "each) and submitted; one manifest per batch, written as an intent before the call. "
        "Also submits retries waiting in retries/ (attempt n batches) and reconciles what a "
        "crashed run left. One run per partition at a time (a lease in the lake)."
    ),
)
def batch_submissions(
    context: dg.AssetExecutionContext, lake: LakeResource, anthropic: AnthropicResource
) -> dg.MaterializeResult:
    try:
        stats = submit_partition(
            lake.lake(),
            anthropic.provider(context.log),
            context.partition_key,
            owner=run_owner(context),
        )
    except LeaseHeld as held:
        raise dg.Failure(description=str(held)) from None
    if stats.abandoned_intents:
        context.log.warning(
            f"{stats.abandoned_intents} batch intents from an interrupted run reconciled: "
            f"{stats.orphans_found} provider batches their calls created found, "
            f"{stats.orphans_adopted} adopted (had ended: collected as the intent's batch), "
            f"{stats.orphans_canceled} canceled (still running: tasks packed again); "
            "the other intents' tasks packed again (see orphans/)"
        )
    return dg.MaterializeResult(
        metadata={
            "batches": stats.batches,
            "requests": stats.requests,
            "retry_requests": stats.retry_requests,
            "payload_bytes": stats.payload_bytes,
            "already_submitted": stats.already_submitted,
            "oversized_dead_lettered": stats.oversized,
            "abandoned_intents": stats.abandoned_intents,
            "orphan_batches_found": stats.orphans_found,
            "orphan_batches_adopted": stats.orphans_adopted,
            "orphan_batches_canceled": stats.orphans_canceled,
            "batch_ids": dg.MetadataValue.json(stats.batch_ids),
        }
    )


class CollectConfig(dg.Config):
    """Which batches to collect; empty collects every ended batch of the partition."""

    batch_ids: list[str] = []
    max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS,
        ge=1,
        le=20,
        description="Attempts a request gets before a retryable failure is dead-lettered.",
    )


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_dispatch",
    kinds={"anthropic", "parquet"},
    owners=OWNERS,
    deps=[batch_submissions],
    description=(
        "Results of ended batches streamed into parquet, one file per batch. Retryable "
        "failures (overloaded, api_error, expired, canceled) go to retries/ for a later batch, "
        "up to max_attempts; the rest are dead-lettered with the provider's reason."
    ),
)
def batch_results(
    context: dg.AssetExecutionContext,
    config: CollectConfig,
    lake: LakeResource,
    anthropic: AnthropicResource,
    cost_policy: CostPolicyResource,
) -> dg.MaterializeResult:
    store = lake.lake()
    provider = anthropic.provider(context.log)
    prices = cost_policy.price_table()
    collected: list[str] = []
    counts: dict[str, int] = {}
    cost = sync_cost = 0.0
    still_running = 0
    for manifest in pending_manifests(store, context.partition_key, config.batch_ids):
        assert manifest.provider_batch_id is not None
        status = provider.get_batch(manifest.provider_batch_id)
        if not status.ended:
            # Waiting is the sensor's job: leave it for a later run.
            still_running += 1
            continue
        stats = collect_batch(
            store,
            provider,
            manifest,
            prices,
            status.ended_at,
            max_attempts=config.max_attempts,
            log=context.log,
        )
        collected.append(stats.batch_id)
        for outcome, n in stats.counts.items():
            counts[outcome] = counts.get(outcome, 0) + n
        counts["missing"] = counts.get("missing", 0) + stats.missing
        counts["retrying"] = counts.get("retrying", 0) + stats.retrying
        counts["dead_lettered"] = counts.get("dead_lettered", 0) + stats.dead_lettered
        counts["stream_restarts"] = counts.get("stream_restarts", 0) + stats.stream_restarts
        cost += stats.totals.cost_usd
        sync_cost += stats.totals.sync_cost_usd
        if stats.unexpected or stats.duplicates:
            context.log.warning(
                f"batch {stats.batch_id}: ignored {stats.unexpected} unknown and "
                f"{stats.duplicates} repeated result lines"
            )
    return dg.MaterializeResult(
        metadata={
            "batches_collected": len(collected),
            "batches_still_running": still_running,
            "succeeded": counts.get("succeeded", 0),
            "errored": counts.get("errored", 0),
            "expired": counts.get("expired", 0),
            "canceled": counts.get("canceled", 0),
            "missing": counts.get("missing", 0),
            "retrying": counts.get("retrying", 0),
            "dead_lettered": counts.get("dead_lettered", 0),
            "stream_restarts": counts.get("stream_restarts", 0),
            "cost_usd": round(cost, 6),
            "sync_cost_usd": round(sync_cost, 6),
            "batch_ids": dg.MetadataValue.json(collected),
        }
    )


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_dispatch",
    kinds={"python", "parquet"},
    owners=OWNERS,
    deps=[realtime_results, batch_results],
    description=(
        "Tasks routed to reuse, answered with the result of the identical request already "
        "answered (this day or an earlier one): same output and usage, cost 0. Also indexes "
        "this day's answers in reuse_index/ so later days can reuse them."
    ),
)
def reused_results(
    context: dg.AssetExecutionContext, lake: LakeResource, cost_policy: CostPolicyResource
) -> dg.MaterializeResult:
    stats = resolve_reuse(lake.lake(), context.partition_key, cost_policy.price_table())
    return dg.MaterializeResult(
        metadata={
            "reused": stats.reused,
            "waiting_for_source": stats.still_waiting,
            "dead_lettered": stats.dead_lettered,
            "results_files_indexed": stats.indexed_files,
            "saved_usd": round(stats.saved_usd, 6),
            "dagster/row_count": stats.reused,
        }
    )
