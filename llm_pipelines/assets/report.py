"""The daily cost report and the invariants checked on it."""

import os

import dagster as dg

from llm_pipelines.assets.dispatch import batch_results, realtime_results
from llm_pipelines.assets.partitions import DAILY, OWNERS
from llm_pipelines.costs.report import build_report
from llm_pipelines.dispatch.ledger import dead_letter_reasons, partition_ledger
from llm_pipelines.resources import LakeResource


@dg.asset(
    partitions_def=DAILY,
    group_name="llm_reporting",
    kinds={"python", "parquet"},
    owners=OWNERS,
    deps=[batch_results, realtime_results],
    description=(
        "What the day cost against the same tokens on the synchronous path: savings in USD "
        "and percent, split by route, model and task type."
    ),
)
def llm_cost_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    report = build_report(lake.lake(), context.partition_key)
    metadata: dict[str, object] = {
        "results": report.total.results,
        "cost_usd": round(report.total.cost_usd, 6),
        "all_sync_cost_usd": round(report.total.sync_cost_usd, 6),
        "saved_usd": round(report.total.saved_usd, 6),
        "savings_pct": round(report.total.savings_pct, 2),
        "report": dg.MetadataValue.md(report.markdown()),
    }
    for line in report.by_route:
        metadata[f"cost_usd_{line.key}"] = round(line.cost_usd, 6)
    return dg.MaterializeResult(metadata=metadata)


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
