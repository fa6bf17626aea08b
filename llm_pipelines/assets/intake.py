"""Intake assets: the landing zone becomes validated events, then routed tasks."""

import dagster as dg

from llm_pipelines.assets.landing import LANDING_PRODUCERS
from llm_pipelines.assets.partitions import DAILY, OWNERS
from llm_pipelines.costs import default_price_table
from llm_pipelines.intake import ingest_partition
from llm_pipelines.resources import LakeResource
from llm_pipelines.routing import load_policy
from llm_pipelines.routing.route import route_partition
from llm_pipelines.storage.datasets import utcnow


class RoutingConfig(dg.Config):
    """Which policy file to route with (empty: the policy shipped in the package)."""

    policy_path: str = ""


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_intake",
    kinds={"python", "parquet"},
    owners=OWNERS,
    deps=LANDING_PRODUCERS,
    description=(
        "A day's landing zone validated against the task schema and deduplicated by task_id. "
        "Invalid lines go to dead_letter/ with the reason; none are dropped silently."
    ),
)
def raw_llm_events(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    stats = ingest_partition(lake.lake(), context.partition_key)
    if stats.invalid:
        context.log.warning(f"{stats.invalid} landing lines were invalid and dead-lettered")
    return dg.MaterializeResult(
        metadata={
            "landing_files": stats.landing_files,
            "lines": stats.lines,
            "valid": stats.valid,
            "duplicates": stats.duplicates,
            "invalid": stats.invalid,
            "landing_bytes": stats.landing_bytes,
            "dagster/row_count": stats.valid,
        }
    )


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_intake",
    kinds={"python", "parquet"},
    owners=OWNERS,
    deps=[raw_llm_events],
    description=(
        "Each event routed to the synchronous path or the Message Batches API by the routing "
        "policy, with the rule that decided and an estimated cost."
    ),
)
def routed_tasks(
    context: dg.AssetExecutionContext, config: RoutingConfig, lake: LakeResource
) -> dg.MaterializeResult:
    policy = load_policy(config.policy_path or None)
    stats = route_partition(
        lake.lake(), context.partition_key, policy, default_price_table(), utcnow()
    )
    return dg.MaterializeResult(
        metadata={
            "tasks": stats.tasks,
            "batch": stats.batch,
            "realtime": stats.realtime,
            "batch_share_pct": round(100.0 * stats.batch / stats.tasks, 2) if stats.tasks else 0.0,
            "est_cost_usd": round(stats.est_cost_usd, 6),
            "by_rule": dict(stats.by_rule),
            "dagster/row_count": stats.tasks,
        }
    )
