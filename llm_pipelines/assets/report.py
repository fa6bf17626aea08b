"""The daily cost report and the invariants checked on it."""

import dagster as dg

from llm_pipelines.assets.dispatch import batch_results, realtime_results, reused_results
from llm_pipelines.assets.partitions import DAILY, OWNERS
from llm_pipelines.costs.report import build_report, daily_cost_usd
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.resources import CostPolicyResource, LakeResource
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import TASKS


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_reporting",
    kinds={"python", "parquet"},
    owners=OWNERS,
    deps=[batch_results, realtime_results, reused_results],
    description=(
        "What the day cost against the same requests sent synchronously at list price "
        "(requested model, no caching): savings in USD and percent, split by route, model "
        "and task type, and by lever (batching, caching, downshifting, reuse)."
    ),
)
def llm_cost_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    report = build_report(lake.lake(), context.partition_key)
    metadata: dict[str, object] = {
        **report.metadata(),
        "report": dg.MetadataValue.md(report.markdown()),
        "dagster/row_count": report.total.results,
    }
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(
    asset=llm_cost_report,
    partitions_def=DAILY,
    description=(
        "Budget: the day's actual spend (cost_usd of its results) is within "
        "CostPolicyResource.daily_budget_usd (LLM_PIPELINES_DAILY_BUDGET_USD). Passes, "
        "saying so, when no budget is set."
    ),
)
def daily_budget(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, cost_policy: CostPolicyResource
) -> dg.AssetCheckResult:
    spent = daily_cost_usd(lake.lake(), context.partition_key)
    budget = cost_policy.daily_budget_usd
    metadata: dict[str, object] = {"partition": context.partition_key, "cost_usd": round(spent, 6)}
    if budget is None:
        return dg.AssetCheckResult(
            passed=True, description="no daily budget configured", metadata=metadata
        )
    metadata["budget_usd"] = budget
    if budget > 0:
        metadata["budget_used_pct"] = round(100.0 * spent / budget, 2)
    over = spent > budget
    return dg.AssetCheckResult(
        passed=not over,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"spent ${spent:,.4f} of a ${budget:,.2f} daily budget"
            + (f": over by ${spent - budget:,.4f}" if over else "")
        ),
        metadata=metadata,
    )


@dg.asset_check(
    asset=llm_cost_report,
    partitions_def=DAILY,
    description=(
        "Conservation: every valid task is in exactly one state (result, dead letter, in-flight "
        "batch or routed and waiting); none lost, none with two terminal rows."
    ),
)
def conservation(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    store = lake.lake()
    partition = context.partition_key
    tasks_path = store.path(TASKS, partition, TASKS_FILE)
    routed = (
        store.read_table([tasks_path], ["task_id"])["task_id"].combine_chunks()
        if store.exists(tasks_path)
        else None
    )
    ledger = partition_ledger(store, partition, routed)
    return dg.AssetCheckResult(
        passed=ledger.lost == 0 and ledger.duplicated == 0,
        metadata={"partition": partition, **ledger.as_dict()},
    )
