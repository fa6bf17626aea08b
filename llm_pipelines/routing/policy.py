"""The routing policy: which tasks keep the synchronous path and which go to batches.

Per task it decides the route (by the first matching rule, recorded with the task), the
model (right-sizing by task type, with the requested model kept for the report), whether an
identical request already answered can be reused, and the prompt-cache plan. The policy is
a YAML file validated by :class:`RoutingPolicy`; the one shipped in the package is
``default_policy.yaml``, and a deployment points at its own with ``CostPolicyResource``
(``LLM_PIPELINES_ROUTING_POLICY``) or, for one run, ``RoutingConfig.policy_path``.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llm_pipelines.costs import PriceTable, default_price_table
from llm_pipelines.costs.prices import BATCH_ROUTE, REUSE_ROUTE, ModelPrice
from llm_pipelines.yaml_files import problems, read_yaml

REALTIME = "realtime"
BATCH = BATCH_ROUTE
REUSE = REUSE_ROUTE
ROUTES = (REALTIME, BATCH, REUSE)
"""Every route, in dispatch order: the routed tasks file is sorted this way."""
RULES = ("requires_realtime", "task_type", "deadline", "priority", "default")
"""The routing rules in the order they are tried; the first that matches decides."""
REUSE_RULE = "reuse"
"""The rule recorded on a task whose identical request is answered elsewhere."""
POLICY_ENV = "LLM_PIPELINES_ROUTING_POLICY"
"""Environment variable naming the routing policy file of a deployment."""

CacheTTL = Literal["5m", "1h"]


class PolicyError(ValueError):
    """A policy file that does not validate; the message names the file and the field."""


class PromptCaching(BaseModel):
    """Where to put ``cache_control`` breakpoints (see :mod:`llm_pipelines.routing.caching`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    batch_ttl: CacheTTL = Field(
        default="1h", description="Batches can take longer than 5 minutes to run through."
    )
    realtime_ttl: CacheTTL = "5m"
    shared_documents: bool = Field(
        default=True,
        description="Also cache a shared document: the leading blocks of the first user turn.",
    )
    min_group_size: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Mark a prefix only when at least this many tasks of the partition (on the same "
            "route) send it; empty: the break-even size the price table gives for the TTL."
        ),
    )

    def ttl(self, route: str) -> CacheTTL:
        """The cache lifetime for requests on ``route``."""
        return self.batch_ttl if route == BATCH else self.realtime_ttl

    def min_sharers(self, price: ModelPrice, route: str) -> int:
        """How many requests must share a prefix before marking it saves money."""
        if self.min_group_size is not None:
            return self.min_group_size
        return break_even_group_size(price, self.ttl(route))


class Reuse(BaseModel):
    """Answer an identical request once: later copies reuse the answer at no cost."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    lookback_days: int = Field(
        default=7,
        ge=0,
        le=90,
        description="Also reuse answers from this many earlier partitions (0: this day only).",
    )
    exclude_task_types: list[str] = Field(
        default_factory=list,
        description="Task types whose repeats are meant as independent samples: never reused.",
    )


class ModelLifecycle(BaseModel):
    """What happens to work for a model the provider has retired (see the model catalog)."""

    model_config = ConfigDict(extra="forbid")

    retired: Literal["migrate", "dead_letter"] = Field(
        default="migrate",
        description=(
            "migrate: send the task to the model's successor (rule model_migrated); "
            "dead_letter: reject it at intake, naming the retirement date."
        ),
    )
    successors: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Retired model → the model its work goes to; a retired model not listed here goes "
            "to the newest active model of its line."
        ),
    )


class RoutingPolicy(BaseModel):
    """Validated routing rules (see ``default_policy.yaml`` for their order and meaning)."""

    model_config = ConfigDict(extra="forbid")

    batch_turnaround_hours: float = Field(
        gt=0,
        le=24,
        description="The turnaround budget of a batch: a task due sooner goes real-time.",
    )
    realtime_task_types: list[str] = Field(default_factory=list)
    realtime_max_priority: int | None = Field(default=None, ge=0, le=9)
    model_map: dict[str, str] = Field(
        default_factory=dict, description="Right-sizing: task type → model to use instead."
    )
    prompt_caching: PromptCaching = Field(default_factory=PromptCaching)
    reuse: Reuse = Field(default_factory=Reuse)
    model_lifecycle: ModelLifecycle = Field(default_factory=ModelLifecycle)

    def check_models(self, prices: PriceTable) -> None:
        """Every model the policy maps to must be priced (and so servable)."""
        for task_type, model in self.model_map.items():
            if model not in prices.models:
                raise PolicyError(
                    f"model_map.{task_type}: model {model!r} is not in the price table "
                    f"(known: {', '.join(sorted(prices.models))})"
                )

    def decide(self, tasks: pa.RecordBatch | pa.Table, now: datetime) -> tuple[pa.Array, pa.Array]:
        """The route and the deciding rule of every task in a chunk, vectorised.

        A task whose deadline is *sooner* than ``now`` + ``batch_turnaround_hours`` goes
        real-time; one due exactly at that cutoff, or later, can wait for a batch.
        """
        deadline = tasks.column("deadline")
        cutoff = pa.scalar(now + timedelta(hours=self.batch_turnaround_hours), deadline.type)
        flagged = tasks.column("requires_realtime")
        by_type = pc.is_in(
            tasks.column("task_type"), value_set=pa.array(self.realtime_task_types, pa.string())
        )
        by_deadline = pc.fill_null(pc.less(deadline, cutoff), False)
        if self.realtime_max_priority is None:
            by_priority = pc.is_null(flagged)  # all False: the flag is never null
        else:
            by_priority = pc.less_equal(tasks.column("priority"), self.realtime_max_priority)
        conditions = [
            c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
            for c in (flagged, by_type, by_deadline, by_priority)
        ]
        rule = pc.case_when(pc.make_struct(*conditions), *RULES)
        route = pc.if_else(pc.equal(rule, "default"), BATCH, REALTIME)
        return route, rule

    def target_model(self, task_type: str, requested: str) -> str:
        """The model a task is sent to: right-sized by task type, else the one requested."""
        return self.model_map.get(task_type, requested)

    def target_models(self, task_types: pa.Array, requested: pa.Array) -> pa.Array:
        """:meth:`target_model` of every task of a column, vectorised."""
        return _mapped(task_types, self.model_map, requested)

    def reusable(self, task_types: pa.Array) -> pa.Array:
        """Which tasks may take (or give) a reused answer."""
        if not self.reuse.enabled:
            return pc.is_null(task_types)  # all False: task_type is never null
        excluded = pa.array(self.reuse.exclude_task_types, pa.string())
        return pc.invert(pc.is_in(task_types, value_set=excluded))


def _mapped(keys: pa.Array, mapping: dict[str, str], default: pa.Array) -> pa.Array:
    """``mapping[key]`` for each key, else the row's ``default``, vectorised."""
    if not mapping:
        return default
    mapped = pc.take(
        pa.array(list(mapping.values()), pa.string()),
        pc.index_in(keys, value_set=pa.array(list(mapping), pa.string())),
    )
    return pc.coalesce(mapped, default)


def migrated_models(models: pa.Array, migrations: dict[str, str]) -> pa.Array:
    """Each model, or its successor if it is retired (``migrations``: retired → successor)."""
    return _mapped(models, migrations, models)


def break_even_group_size(price: ModelPrice, ttl: CacheTTL) -> int:
    """The fewest requests sharing a prefix for which caching it costs less than not.

    One request writes the prefix, the other ``n - 1`` read it, against ``n`` plain reads:
    ``write + (n - 1) * read < n * input`` ⇔ ``n > (write - read) / (input - read)``.
    With Anthropic's ratios that is 2 for the 5-minute TTL (a write costs 1.25 inputs) and 3
    for the 1-hour TTL (2 inputs). The batch discount scales every component alike, so it
    does not change ``n``.
    """
    write = price.cache_write_1h if ttl == "1h" else price.cache_write_5m
    if price.input <= price.cache_read:
        return 2**31 - 1  # reading is no cheaper than sending: never worth writing
    return max(2, math.floor((write - price.cache_read) / (price.input - price.cache_read)) + 1)


def parse_policy(raw: Any, source: str, prices: PriceTable | None = None) -> RoutingPolicy:
    """Validate a policy document; errors name the source and the offending field.

    Every model it maps to must be in ``prices`` (default: :func:`default_price_table`).
    """
    try:
        policy = RoutingPolicy.model_validate(raw)
    except ValidationError as error:
        raise PolicyError(f"routing policy {source}: {problems(error, 'policy')}") from None
    return _priced(policy, source, prices if prices is not None else default_price_table())


def _priced(policy: RoutingPolicy, source: str, prices: PriceTable) -> RoutingPolicy:
    try:
        policy.check_models(prices)
    except PolicyError as error:
        raise PolicyError(f"routing policy {source}: {error}") from None
    return policy


def load_policy(path: str | Path | None = None, prices: PriceTable | None = None) -> RoutingPolicy:
    """Read and validate a policy file; without ``path``, the one shipped in the package.

    With ``prices``, the models it maps to are checked against that price sheet.
    """
    if path is None or str(path) == "":
        policy = default_policy()
        return policy if prices is None else _priced(policy, "default_policy.yaml", prices)
    raw = read_yaml(path, "routing policy", PolicyError)
    return parse_policy(raw, str(path), prices)


def policy_path_from_env() -> str | None:
    """The policy file named by ``LLM_PIPELINES_ROUTING_POLICY``, if set."""
    return os.environ.get(POLICY_ENV) or None


@cache
def default_policy() -> RoutingPolicy:
    """The policy shipped with the package."""
    text = resources.files("llm_pipelines.routing").joinpath("default_policy.yaml").read_text()
    return parse_policy(yaml.safe_load(text), "default_policy.yaml")
