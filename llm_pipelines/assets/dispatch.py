"""Dispatch assets: the real-time path, batch submission and batch collection."""

import dagster as dg

from llm_pipelines.assets.intake import routed_tasks
from llm_pipelines.assets.partitions import DAILY, OWNERS
from llm_pipelines.costs import default_price_table
from llm_pipelines.dispatch.collect import collect_batch, pending_manifests
from llm_pipelines.dispatch.realtime import answer_partition
from llm_pipelines.dispatch.submit import submit_partition
from llm_pipelines.resources import AnthropicResource, LakeResource
from llm_pipelines.routing.reuse import resolve_reuse


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_dispatch",
    kinds={"anthropic", "parquet"},
    owners=OWNERS,
    deps=[routed_tasks],
    description=(
        "Tasks routed real-time, answered through the synchronous Messages API with bounded "
        "concurrency and the SDK's retries; same results shape as batch results."
    ),
)
def realtime_results(
    context: dg.AssetExecutionContext, lake: LakeResource, anthropic: AnthropicResource
) -> dg.MaterializeResult:
    stats = answer_partition(
        lake.lake(),
        anthropic.provider(context.log),
        context.partition_key,
        default_price_table(),
        anthropic.realtime_concurrency,
    )
    totals = stats.totals
    assert totals is not None
    return dg.MaterializeResult(
        metadata={
            "tasks": stats.tasks,
            "answered": stats.answered,
            "dead_lettered": stats.dead_lettered,
            "chunks_written": stats.chunks_written,
            "chunks_already_done": stats.chunks_skipped,
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
        "each) and submitted; one manifest per batch, written as an intent before the call."
    ),
)
def batch_submissions(
    context: dg.AssetExecutionContext, lake: LakeResource, anthropic: AnthropicResource
) -> dg.MaterializeResult:
    stats = submit_partition(lake.lake(), anthropic.provider(context.log), context.partition_key)
    if stats.abandoned_intents:
        context.log.warning(
            f"{stats.abandoned_intents} batch intents from an interrupted run were packed again"
        )
    return dg.MaterializeResult(
        metadata={
            "batches": stats.batches,
            "requests": stats.requests,
            "payload_bytes": stats.payload_bytes,
            "already_submitted": stats.already_submitted,
            "oversized_dead_lettered": stats.oversized,
            "batch_ids": dg.MetadataValue.json(stats.batch_ids),
        }
    )


class CollectConfig(dg.Config):
    """Which batches to collect; empty collects every ended batch of the partition."""

    batch_ids: list[str] = []


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_dispatch",
    kinds={"anthropic", "parquet"},
    owners=OWNERS,
    deps=[batch_submissions],
    description=(
        "Results of ended batches streamed into parquet, one file per batch; errored, expired "
        "and canceled requests are dead-lettered with the provider's reason."
    ),
)
def batch_results(
    context: dg.AssetExecutionContext,
    config: CollectConfig,
    lake: LakeResource,
    anthropic: AnthropicResource,
) -> dg.MaterializeResult:
    store = lake.lake()
    provider = anthropic.provider(context.log)
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
        stats = collect_batch(store, provider, manifest, default_price_table(), status.ended_at)
        collected.append(stats.batch_id)
        for outcome, n in stats.counts.items():
            counts[outcome] = counts.get(outcome, 0) + n
        counts["missing"] = counts.get("missing", 0) + stats.missing
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
def reused_results(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    stats = resolve_reuse(lake.lake(), context.partition_key, default_price_table())
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
