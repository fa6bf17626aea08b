"""Routing: per task, the synchronous path, the batch API, or reuse of an answer given already."""

from llm_pipelines.routing.policy import (
    BATCH,
    POLICY_ENV,
    REALTIME,
    REUSE,
    PolicyError,
    RoutingPolicy,
    default_policy,
    load_policy,
)

__all__ = [
    "BATCH",
    "POLICY_ENV",
    "REALTIME",
    "REUSE",
    "PolicyError",
    "RoutingPolicy",
    "default_policy",
    "load_policy",
]
