"""Routing: decide per task between the synchronous path and the batch API."""

from llm_pipelines.routing.policy import BATCH, REALTIME, RoutingPolicy, default_policy, load_policy

__all__ = ["BATCH", "REALTIME", "RoutingPolicy", "default_policy", "load_policy"]
