"""Batch LLM providers behind one small protocol."""

from llm_pipelines.providers.anthropic import ANTHROPIC_LIMITS, AnthropicProvider
from llm_pipelines.providers.base import (
    BatchLimits,
    BatchProvider,
    BatchStatus,
    RequestResult,
)

__all__ = [
    "ANTHROPIC_LIMITS",
    "AnthropicProvider",
    "BatchLimits",
    "BatchProvider",
    "BatchStatus",
    "RequestResult",
]
