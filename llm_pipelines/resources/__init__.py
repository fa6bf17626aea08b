"""Dagster resources."""

from llm_pipelines.resources.anthropic import AnthropicResource
from llm_pipelines.resources.lake import LakeResource

__all__ = ["AnthropicResource", "LakeResource"]
