"""Intake assets: the landing zone becomes validated events, then routed tasks."""

import dagster as dg

from llm_pipelines.assets.catalog import current_catalog, model_catalog
from llm_pipelines.assets.landing import LANDING_PRODUCERS
from llm_pipelines.assets.partitions import DAILY, OWNERS, run_owner
from llm_pipelines.intake import ingest_partition
from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.routing.route import route_partition
from llm_pipelines.storage.datasets import utcnow
from llm_pipelines.storage.lease import LeaseHeld, every_lease


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
    deps=[*LANDING_PRODUCERS, model_catalog],
    description=(
        "A day's landing zone validated: producer fields strictly, each request against the "
        "installed anthropic SDK's request types, its model and max_tokens against the model "
        "catalog; deduplicated by task_id. Invalid lines, and lines reusing a task_id for "
        "different content, go to dead_letter/ with the reason; none are dropped silently."
    ),
)
def raw_llm_events(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    anthropic: AnthropicResource,
    cost_policy: CostPolicyResource,
) -> dg.MaterializeResult:
    lifecycle = cost_policy.routing_policy().model_lifecycle
    models = current_catalog(lake, anthropic).intake_models(
        cost_policy.price_table().knows, lifecycle.retired, lifecycle.successors
    )
    stats = ingest_partition(lake.lake(), context.partition_key, models=models)
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
    anthropic: AnthropicResource,
    cost_policy: CostPolicyResource,
) -> dg.MaterializeResult:
    prices = cost_policy.price_table()
    policy = cost_policy.routing_policy(config.policy_path or None)
    catalog = current_catalog(lake, anthropic)
    successors = catalog.retired_successors(policy.model_lifecycle.successors)
    # Both dispatch leases while the tasks file is rewritten: a real-time or submission pass
    # of another run reads the routes once, under its lease, so re-routing in between could
    # have one run answer a task real-time that another's new routes then send in a batch.
    try:
        with every_lease(
            lake.lake(), context.partition_key, owner=run_owner(context), purpose="route"
        ):
            stats = route_partition(
                lake.lake(),
                context.partition_key,
                policy,
                prices,
                utcnow(),
                migrations={model: to for model, to in successors.items() if to},
            )
    except LeaseHeld as held:
        raise dg.Failure(description=f"not routed again while it is dispatched: {held}") from None
    deprecated = {}
    for model, count in stats.by_model.items():
        entry = catalog.resolve(model)
        if entry is not None and entry.lifecycle == "deprecated":
            when = f"{entry.retires_at:%Y-%m-%d}" if entry.retires_at else "not yet scheduled"
            deprecated[model] = {"tasks": count, "retires_at": when}
            context.log.warning(
                f"{count} tasks go to {model}, which the provider has deprecated (retirement: "
                f"{when}); move them before it retires, or name a successor in the policy"
            )

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
            "by_model_rule": dg.MetadataValue.json(dict(stats.by_model_rule)),
            "model_migrated": stats.by_model_rule.get("model_migrated", 0),
            "deprecated_models": dg.MetadataValue.json(deprecated),
            "policy": config.policy_path or cost_policy.routing_policy_path or "(shipped default)",
            "dagster/row_count": stats.tasks,
        }
    )
