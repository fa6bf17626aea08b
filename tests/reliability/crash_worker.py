"""Run the daily cycle in a fresh interpreter (the crash test arms it through the environment).

Usage: python crash_worker.py '{"lake": ..., "emulator": ..., "day": ..., "home": ...}'
"""

from __future__ import annotations

import sys

import orjson

from llm_pipelines.definitions import build_definitions
from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.sensors.daemon import disk_instance


def main(raw: str) -> int:
    """Execute daily_batch_cycle for one partition; 0 if it succeeded."""
    settings = orjson.loads(raw)
    resources = {
        "lake": LakeResource(url=settings["lake"]),
        "cost_policy": CostPolicyResource(),
        "anthropic": AnthropicResource(emulator_dir=settings["emulator"], max_batch_requests=40),
    }
    defs = build_definitions(resources)
    with disk_instance(settings["home"]) as instance:
        result = defs.resolve_job_def("daily_batch_cycle").execute_in_process(
            partition_key=settings["day"], instance=instance, raise_on_error=False
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
