"""Everything Dagster loads, assembled in one place."""

from __future__ import annotations

import os

import dagster as dg

from llm_pipelines import workloads
from llm_pipelines.assets import catalog, dispatch, intake, report
from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.sensors import (
    batch_completion_sensor,
    cancel_batches_job,
    collect_batch_results,
    daily_batch_cycle,
    daily_catalog_refresh,
    nightly_batch_cycle,
    nightly_sweep,
    refresh_model_catalog,
    replay_dead_letters_job,
    resubmit_batch_retries,
    sweep_abandoned_files_job,
)


def default_resources() -> dict[str, object]:
    """Resources from the environment: the real API only when ``ANTHROPIC_API_KEY`` is set."""
    return {
        "lake": LakeResource(s3_endpoint_url=os.environ.get("LLM_PIPELINES_S3_ENDPOINT")),
        "anthropic": AnthropicResource(
            api_key=dg.EnvVar("ANTHROPIC_API_KEY") if os.environ.get("ANTHROPIC_API_KEY") else None,
            base_url=os.environ.get("ANTHROPIC_BASE_URL"),
        ),
        # Routing policy file and daily budget: LLM_PIPELINES_ROUTING_POLICY and
        # LLM_PIPELINES_DAILY_BUDGET_USD, read by the resource's defaults.
        "cost_policy": CostPolicyResource(),
    }


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    """The project's Definitions, with ``resources`` (any key not given: from the environment)."""
    modules = [catalog, intake, dispatch, report]
    return dg.Definitions(
        assets=[*dg.load_assets_from_modules(modules), *workloads.ASSETS],
        asset_checks=dg.load_asset_checks_from_modules(modules),
        jobs=[
            daily_batch_cycle,
            refresh_model_catalog,
            collect_batch_results,
            resubmit_batch_retries,
            replay_dead_letters_job,
            cancel_batches_job,
            sweep_abandoned_files_job,
            *workloads.JOBS,
        ],
        sensors=[batch_completion_sensor, *workloads.SENSORS],
        schedules=[nightly_batch_cycle, nightly_sweep, daily_catalog_refresh, *workloads.SCHEDULES],
        resources={**default_resources(), **(resources or {})},
        # The steps wait on I/O (the lake, the API): running them in the run's own process
        # saves a Python start-up (seconds) per step. A deployment can set its own executor.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
