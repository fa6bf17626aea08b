"""Who fills the landing zone: the workload producers drawn upstream of ``raw_llm_events``."""

import dagster as dg

LANDING_PRODUCERS = [
    dg.AssetKey("catalog_description_tasks"),
    dg.AssetKey("support_ticket_tasks"),
    dg.AssetKey("eval_answer_tasks"),
]
"""First-round producers of ``llm_pipelines.workloads``; a new workload adds its producer here.

The landing zone is a queue, not an asset: this edge is what makes the lineage read
source → tasks → intake → … → workload output, and what makes a job holding a producer and
intake run the producer first. (Declared on the asset itself because adding a dependency
afterwards with ``map_asset_specs`` draws the edge but does not order execution.)
"""
