"""The daily cost report and the invariants checked on it."""

import dagster as dg

from llm_pipelines.assets.dispatch import batch_results, realtime_results
from llm_pipelines.assets.partitions import DAILY, OWNERS
from llm_pipelines.costs.report import build_report
from llm_pipelines.dispatch.ledger import partition_ledger
from llm_pipelines.resources import LakeResource
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import TASKS


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
