"""The deployment's cost policy as a Dagster resource: routing policy, price sheet, budget."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from llm_pipelines.costs import PriceTable, load_price_table, price_sheet_path_from_env
from llm_pipelines.routing.policy import RoutingPolicy, load_policy, policy_path_from_env

BUDGET_ENV = "LLM_PIPELINES_DAILY_BUDGET_USD"
"""Environment variable holding the daily budget in USD (unset: no budget)."""


def daily_budget_from_env() -> float | None:
    """``LLM_PIPELINES_DAILY_BUDGET_USD`` as a number, if set."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{BUDGET_ENV}={raw!r} is not a number of US dollars") from None


class CostPolicyResource(dg.ConfigurableResource):
    """Which routing policy the pipeline follows, what it pays, and what a day may cost.

    Set once per deployment (``build_definitions(resources=...)`` or the environment):

    - ``routing_policy_path``: a YAML routing policy (schema: ``RoutingPolicy``; example:
      ``llm_pipelines/routing/default_policy.yaml``). Default ``LLM_PIPELINES_ROUTING_POLICY``;
      empty means the policy shipped in the package. One run can still override it with
      ``ops.routed_tasks.config.policy_path``.
    - ``price_sheet_path``: a YAML price sheet (schema: ``PriceTable``; example:
      ``llm_pipelines/costs/prices.yaml``) that every asset pricing work uses (routing's
      estimate, result costs, the cost report). Default ``LLM_PIPELINES_PRICE_SHEET``;
      empty means the sheet shipped in the package.
    - ``daily_budget_usd``: the ``daily_budget`` asset check on ``llm_cost_report`` fails
      when a day's actual spend exceeds it. Default ``LLM_PIPELINES_DAILY_BUDGET_USD``;
      empty means no budget (the check passes and says so).
    """

    routing_policy_path: str | None = Field(
        default_factory=policy_path_from_env,
        description="Routing policy YAML; empty: the policy shipped in the package.",
    )
    price_sheet_path: str | None = Field(
        default_factory=price_sheet_path_from_env,
        description="Price sheet YAML; empty: the sheet shipped in the package.",
    )
    daily_budget_usd: float | None = Field(
        default_factory=daily_budget_from_env,
        ge=0,
        description="What one day may cost (actual USD); empty: no budget.",
    )

    def routing_policy(self, override: str | None = None) -> RoutingPolicy:
        """The validated policy: ``override`` if given, else this resource's file.

        Every model it maps to must be in this resource's price sheet.
        """
        return load_policy(override or self.routing_policy_path or None, self.price_table())

    def price_table(self) -> PriceTable:
        """The validated price sheet: this resource's file, else the one shipped."""
        return load_price_table(self.price_sheet_path or None)
