"""Intake assets: the landing zone becomes validated events, then routed tasks."""

import dagster as dg

from llm_pipelines.assets.landing import LANDING_PRODUCERS
from llm_pipelines.assets.partitions import DAILY, OWNERS
from llm_pipelines.intake import ingest_partition
from llm_pipelines.resources import CostPolicyResource, LakeResource
from llm_pipelines.routing.route import route_partition
from llm_pipelines.storage.datasets import utcnow


class RoutingConfig(dg.Config):
    """A one-run override of the routing policy (a trial policy for a backfill, say).

    Empty: the deployment's policy, ``CostPolicyResource.routing_policy_path``
    (``LLM_PIPELINES_ROUTING_POLICY``), else the policy shipped in the package.
    """

    policy_path: str = ""


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_intake",
    kinds={"python", "parquet"},
    owners=OWNERS,
    deps=LANDING_PRODUCERS,
    description=(
        "A day's landing zone validated against the task schema and deduplicated by task_id. "
        "Invalid lines, and lines reusing a task_id for different content, go to dead_letter/ "
        "with the reason; none are dropped silently."
    ),
)
def raw_llm_events(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    stats = ingest_partition(lake.lake(), context.partition_key)
    if stats.invalid:
        context.log.warning(f"{stats.invalid} landing lines were invalid and dead-lettered")
    if stats.conflicts:
        context.log.warning(
            f"{stats.conflicts} landing lines reused a task_id for different content and were "
            "dead-lettered (a producer bug: see dead_letter/ for where each task first landed)"
        )
    return dg.MaterializeResult(
        metadata={
            "landing_files": stats.landing_files,
            "lines": stats.lines,
            "valid": stats.valid,
            "duplicates": stats.duplicates,
            "conflicts": stats.conflicts,
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
        "Each event routed by the routing policy: real-time, Message Batches, or reuse of an "
        "identical request already answered; the rule that decided, the right-sized model, "
        "cache_control on shared prefixes worth caching, an estimated cost, and a dispatch "
        "position by which the packer keeps tasks sharing a prefix together across batches."
    ),
)
def routed_tasks(
    context: dg.AssetExecutionContext,
    config: RoutingConfig,
    lake: LakeResource,
    cost_policy: CostPolicyResource,
) -> dg.MaterializeResult:
    prices = cost_policy.price_table()
    policy = cost_policy.routing_policy(config.policy_path or None)
    stats = route_partition(lake.lake(), context.partition_key, policy, prices, utcnow())

    def share(count: int) -> float:
        return round(100.0 * count / stats.tasks, 2) if stats.tasks else 0.0

    return dg.MaterializeResult(
        metadata={
            "tasks": stats.tasks,
            "batch": stats.batch,
            "realtime": stats.realtime,
            "reuse": stats.reused,
            "reuse_from_earlier_days": stats.reused_from_earlier,
            "batch_share_pct": share(stats.batch),
            "reuse_share_pct": share(stats.reused),
            "cache_marked": stats.cache_marked,
            "cache_prefix_groups": stats.prefix_groups,
            "est_cost_usd": round(stats.est_cost_usd, 6),
            "by_rule": dg.MetadataValue.json(dict(stats.by_rule)),
            "policy": config.policy_path or cost_policy.routing_policy_path or "(shipped default)",
            "dagster/row_count": stats.tasks,
        }
    )
