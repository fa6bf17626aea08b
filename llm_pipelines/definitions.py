"""Everything Dagster loads, assembled in one place."""

from __future__ import annotations

import os

import dagster as dg

from llm_pipelines.assets import dispatch, intake, report
from llm_pipelines.resources import AnthropicResource, LakeResource
from llm_pipelines.sensors import (
    batch_completion_sensor,
    cancel_batches_job,
    collect_batch_results,
    daily_batch_cycle,
    nightly_batch_cycle,
    replay_dead_letters_job,
    resubmit_batch_retries,
)


def default_resources() -> dict[str, object]:
    """Resources from the environment: the real API only when ``ANTHROPIC_API_KEY`` is set."""
    return {
        "lake": LakeResource(s3_endpoint_url=os.environ.get("LLM_PIPELINES_S3_ENDPOINT")),
        "anthropic": AnthropicResource(
            api_key=dg.EnvVar("ANTHROPIC_API_KEY") if os.environ.get("ANTHROPIC_API_KEY") else None,
            base_url=os.environ.get("ANTHROPIC_BASE_URL"),
        ),
    }


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    """The project's Definitions, with ``resources`` (default: from the environment)."""
    modules = [intake, dispatch, report]
    return dg.Definitions(
        assets=dg.load_assets_from_modules(modules),
        asset_checks=dg.load_asset_checks_from_modules(modules),
        jobs=[
            daily_batch_cycle,
            collect_batch_results,
            resubmit_batch_retries,
            replay_dead_letters_job,
            cancel_batches_job,
        ],
        sensors=[batch_completion_sensor],
        schedules=[nightly_batch_cycle],
        resources=resources if resources is not None else default_resources(),
    )


defs = build_definitions()
