"""The daily cost report and the invariants checked on it."""

import os

import dagster as dg

from llm_pipelines.assets.dispatch import batch_results, realtime_results, reused_results
from llm_pipelines.assets.partitions import DAILY, OWNERS
from llm_pipelines.costs.report import build_report, daily_cost_usd
from llm_pipelines.dispatch.ledger import dead_letter_reasons, partition_ledger
from llm_pipelines.resources import CostPolicyResource, LakeResource


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
def llm_cost_report(
    context: dg.AssetExecutionContext, lake: LakeResource, cost_policy: CostPolicyResource
) -> dg.MaterializeResult:
    report = build_report(lake.lake(), context.partition_key, cost_policy.price_table())
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
        "Conservation: every valid task is in exactly one state (result, dead letter, batch in "
        "flight, waiting for a retry, or routed and not yet submitted); none lost, none with "
        "two terminal rows, none in two states at once."
    ),
)
def conservation(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    ledger = partition_ledger(lake.lake(), context.partition_key)
    return dg.AssetCheckResult(
        passed=ledger.holds,
        metadata={"partition": context.partition_key, **ledger.as_dict()},
    )


MAX_DEAD_LETTER_RATE_ENV = "LLM_PIPELINES_MAX_DEAD_LETTER_RATE"
DEFAULT_MAX_DEAD_LETTER_RATE = 0.05


def max_dead_letter_rate() -> float:
    """The dead-letter rate above which the check warns (env override, default 5%)."""
    return float(os.environ.get(MAX_DEAD_LETTER_RATE_ENV, DEFAULT_MAX_DEAD_LETTER_RATE))


@dg.asset_check(
    asset=llm_cost_report,
    partitions_def=DAILY,
    description=(
        "Dead-letter rate: the share of a day's landed work that ended dead-lettered (bad "
        f"input at intake, or given up later) stays under a threshold ({MAX_DEAD_LETTER_RATE_ENV},"
        f" default {DEFAULT_MAX_DEAD_LETTER_RATE:.0%}). Warns; the top reasons are in the metadata."
    ),
)
def dead_letter_rate(
    context: dg.AssetCheckExecutionContext, lake: LakeResource
) -> dg.AssetCheckResult:
    store = lake.lake()
    partition = context.partition_key
    ledger = partition_ledger(store, partition)
    landed = ledger.valid + ledger.intake_rejected
    dead = ledger.dead_lettered + ledger.intake_rejected
    rate = dead / landed if landed else 0.0
    threshold = max_dead_letter_rate()
    reasons = dead_letter_reasons(store, partition)
    return dg.AssetCheckResult(
        passed=rate <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "dead_letter_rate": round(rate, 6),
            "threshold": threshold,
            "dead_lettered": dead,
            "intake_rejected": ledger.intake_rejected,
            "processing_dead_lettered": ledger.dead_lettered,
            "landed": landed,
            "top_reasons": dg.MetadataValue.md(
                "\n".join(f"- {reason} ({count})" for reason, count in reasons) or "none"
            ),
        },
    )
