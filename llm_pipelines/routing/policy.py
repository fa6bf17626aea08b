"""The routing policy: which tasks keep the synchronous path and which go to batches.

Per task it decides the route (by the first matching rule, recorded with the task), the
model (right-sizing by task type, with the requested model kept for the report), and the
prompt-cache plan (a ``cache_control`` breakpoint on a long enough shared system prompt).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_pipelines.costs import PriceTable, default_price_table
from llm_pipelines.storage.datasets import utf8_array
from llm_pipelines.tasks import canonical_json

REALTIME = "realtime"
BATCH = "batch"
RULES = ("requires_realtime", "task_type", "deadline", "priority", "default")
CHARS_PER_TOKEN = 4
"""For estimates before a request is sent; actual usage replaces it on every result row."""
EXPECTED_OUTPUT_SHARE = 0.5
"""Estimated output tokens as a share of ``max_tokens``."""

CacheTTL = Literal["5m", "1h"]


class PolicyError(ValueError):
    """A policy file that does not validate; the message names the file and the field."""


class PromptCaching(BaseModel):
    """Where to put ``cache_control`` breakpoints."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    batch_ttl: CacheTTL = Field(
        default="1h", description="Batches can take longer than 5 minutes to run through."
    )
    realtime_ttl: CacheTTL = "5m"


class RoutingPolicy(BaseModel):
    """Validated routing rules (see ``default_policy.yaml`` for their order and meaning)."""

    model_config = ConfigDict(extra="forbid")

    batch_turnaround_hours: float = Field(gt=0, le=24)
    realtime_task_types: list[str] = Field(default_factory=list)
    realtime_max_priority: int | None = Field(default=None, ge=0, le=9)
    model_map: dict[str, str] = Field(
        default_factory=dict, description="Right-sizing: task type → model to use instead."
    )
    prompt_caching: PromptCaching = Field(default_factory=PromptCaching)

    def check_models(self, prices: PriceTable) -> None:
        """Every model the policy maps to must be priced (and so servable)."""
        for task_type, model in self.model_map.items():
            if model not in prices.models:
                raise PolicyError(
                    f"model_map.{task_type}: model {model!r} is not in the price table "
                    f"(known: {', '.join(sorted(prices.models))})"
                )

    def decide(self, tasks: pa.RecordBatch, now: datetime) -> tuple[pa.Array, pa.Array]:
        """The route and the deciding rule of every task in a chunk, vectorised."""
        cutoff = pa.scalar(
            now + timedelta(hours=self.batch_turnaround_hours), tasks["deadline"].type
        )
        flagged = tasks["requires_realtime"]
        by_type = pc.is_in(
            tasks["task_type"], value_set=pa.array(self.realtime_task_types, pa.string())
        )
        by_deadline = pc.fill_null(pc.less(tasks["deadline"], cutoff), False)
        if self.realtime_max_priority is None:
            by_priority = pa.array([False] * tasks.num_rows)
        else:
            by_priority = pc.less_equal(tasks["priority"], self.realtime_max_priority)
        rule = pc.case_when(pc.make_struct(flagged, by_type, by_deadline, by_priority), *RULES)
        route = pc.if_else(pc.equal(rule, "default"), BATCH, REALTIME)
        return route, rule

    def route(self, tasks: pa.RecordBatch, now: datetime, prices: PriceTable) -> pa.RecordBatch:
        """Events in; the same rows with route, rule, model, cache plan and estimate out."""
        route, rule = self.decide(tasks, now)
        models, requests, prefixes = self._plan_requests(tasks, route, prices)
        columns = {name: tasks[name] for name in tasks.schema.names}
        columns.update(
            model=models,
            request=requests,
            route=route,
            rule=rule,
            requested_model=tasks["model"],
            prefix_key=prefixes,
        )
        columns["est_cost_usd"] = estimated_cost(
            models, tasks["prompt_chars"], tasks["max_tokens"], route, prices
        )
        return pa.RecordBatch.from_pydict(columns)

    def _plan_requests(
        self, tasks: pa.RecordBatch, route: pa.Array, prices: PriceTable
    ) -> tuple[pa.Array, pa.Array, pa.Array]:
        """Right-size models and place cache breakpoints, rewriting only requests that change."""
        models = tasks["model"].to_pylist()
        # As bytes: no UTF-8 decoding of every request into a str and encoding it back.
        requests = tasks["request"].cast(pa.binary()).to_pylist()
        prefixes: list[str | None] = [None] * len(models)
        task_types = tasks["task_type"].to_pylist()
        routes = route.to_pylist()
        caching = self.prompt_caching
        for i, request in enumerate(requests):
            original = models[i]
            target = self.model_map.get(task_types[i], original)
            if target == original:
                # Parse only a request that has a system prompt to cache.
                if not (caching.enabled and b'"system"' in request):
                    continue
                params: dict[str, Any] = orjson.loads(request)
                cacheable = True
            else:
                params = orjson.loads(request)
                cacheable = caching.enabled and "system" in params
            params["model"] = models[i] = target
            if cacheable:
                ttl = caching.batch_ttl if routes[i] == BATCH else caching.realtime_ttl
                minimum = prices.price(target).min_cacheable_tokens
                prefixes[i] = mark_cacheable_system(params, ttl, minimum)
            if target != original or prefixes[i] is not None:
                requests[i] = canonical_json(params)
        return (
            pa.array(models, pa.string()),
            utf8_array(requests),
            pa.array(prefixes, pa.string()),
        )


def mark_cacheable_system(params: dict[str, Any], ttl: CacheTTL, min_tokens: int) -> str | None:
    """Put a cache breakpoint on the system prompt if it is long enough to be cached.

    Returns the prefix key (model + system text hash) that groups requests sharing the
    cached prefix, or ``None`` when the prompt is below the model's minimum.
    """
    system = params.get("system")
    if isinstance(system, str):
        blocks = [{"type": "text", "text": system}]
    elif isinstance(system, list) and system:
        blocks = system
    else:
        return None
    text = "".join(block.get("text", "") for block in blocks)
    if len(text) / CHARS_PER_TOKEN < min_tokens:
        return None
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral", "ttl": ttl}}
    params["system"] = blocks
    return prefix_key(params["model"], text)


@lru_cache(maxsize=4_096)
def prefix_key(model: str, system_text: str) -> str:
    """The key of a cached prefix: a hash of model and system text.

    Memoised: the point of a cached prefix is that many requests share it, and hashing a
    long system prompt per request was a large share of routing time.
    """
    digest = hashlib.blake2b(f"{model}\x00{system_text}".encode(), digest_size=8)
    return digest.hexdigest()


def estimated_cost(
    models: pa.Array,
    prompt_chars: pa.Array,
    max_tokens: pa.Array,
    route: pa.Array,
    prices: PriceTable,
) -> pa.Array:
    """Expected cost before sending: prompt chars / 4 in, half of ``max_tokens`` out."""
    rows = len(models)
    table = pa.table(
        {
            "model": models,
            "requested_model": models,
            "route": route,
            "input_tokens": pc.divide(pc.cast(prompt_chars, pa.float64()), CHARS_PER_TOKEN),
            "output_tokens": pc.multiply(pc.cast(max_tokens, pa.float64()), EXPECTED_OUTPUT_SHARE),
            "cache_write_5m_tokens": pa.nulls(rows, pa.int64()),
            "cache_write_1h_tokens": pa.nulls(rows, pa.int64()),
            "cache_read_tokens": pa.nulls(rows, pa.int64()),
        }
    )
    return prices.with_cost_columns(table).column("cost_usd").combine_chunks()


def parse_policy(raw: Any, source: str) -> RoutingPolicy:
    """Validate a policy document; errors name the source and the offending field."""
    try:
        policy = RoutingPolicy.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        raise PolicyError(f"routing policy {source}: {problems}") from None
    policy.check_models(default_price_table())
    return policy


def load_policy(path: str | Path | None = None) -> RoutingPolicy:
    """Read and validate a policy file; without ``path``, the one shipped in the package."""
    if path is None:
        return default_policy()
    return parse_policy(yaml.safe_load(Path(path).read_text()), str(path))


@cache
def default_policy() -> RoutingPolicy:
    """The policy shipped with the package."""
    text = resources.files("llm_pipelines.routing").joinpath("default_policy.yaml").read_text()
    return parse_policy(yaml.safe_load(text), "default_policy.yaml")
