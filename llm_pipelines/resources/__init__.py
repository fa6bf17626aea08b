"""Dagster resources."""

from llm_pipelines.resources.anthropic import AnthropicResource
from llm_pipelines.resources.lake import LakeResource
from llm_pipelines.resources.policy import CostPolicyResource

__all__ = ["AnthropicResource", "CostPolicyResource", "LakeResource"]
