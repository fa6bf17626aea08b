"""The price sheet: one data file, validated, with the cost arithmetic every result row uses.

The sheet (``prices.yaml`` in the package, or a deployment's own: see
:func:`default_price_table` and ``CostPolicyResource.price_sheet_path``) lists each model's
rates in USD per million tokens, explicitly per component, with prompt-length tiers where
the provider has them. Everything here prices the usage the provider *reported*:

- The prompt of a request is ``input + cache writes (5m + 1h) + cache reads`` tokens. A
  tier applies when the prompt is longer than its ``above_prompt_tokens``, and then to
  every token of the request, output and cache tokens included.
- ``output_tokens`` already contains thinking tokens: the API reports them there and bills
  them as output, so no separate thinking count is priced.
- The batch discount comes off every component.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import date
from functools import cache
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llm_pipelines.yaml_files import problems, read_yaml

PER_MILLION = 1_000_000
BATCH_ROUTE = "batch"
"""Rows answered through the Message Batches API get the batch discount."""
REUSE_ROUTE = "reuse"
"""Rows whose identical request was already answered: the answer is given again at no cost."""
PRICE_SHEET_ENV = "LLM_PIPELINES_PRICE_SHEET"
"""Environment variable naming a deployment's own price sheet (YAML, schema :class:`PriceTable`)."""
COMPONENTS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
"""The priced components, each a field of :class:`Rates` (USD per million tokens)."""
_DATED = r"-\d{8}$"
"""A snapshot date at the end of a model id: ``claude-haiku-4-5-20251001``."""


class UnknownModelError(KeyError):
    """A model that the price table does not list; costing it as zero would hide spend."""

    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(model)
        self.model = model
        self.known = known

    def __str__(self) -> str:
        return (
            f"model {self.model!r} is not in the price table; add it to prices.yaml "
            f"(known models: {', '.join(sorted(self.known))})"
        )


class PriceSheetError(ValueError):
    """A price sheet that cannot be read or does not validate; names the sheet and field."""


class Rates(BaseModel):
    """The rates of one price level, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write_5m: float = Field(ge=0)
    cache_write_1h: float = Field(ge=0)
    cache_read: float = Field(ge=0)


class PriceTier(Rates):
    """Rates for a request whose prompt is longer than ``above_prompt_tokens``."""

    above_prompt_tokens: int = Field(gt=0)


class ModelPrice(Rates):
    """List prices of one model: its base rates, and tiers for longer prompts.

    The fields of :class:`Rates` are the base rates, the ones a short prompt pays.
    """

    min_cacheable_tokens: int = Field(ge=0, default=1024)
    tiers: list[PriceTier] = Field(default_factory=list)
    status: Literal["active", "legacy", "deprecated", "retired"] | None = None
    source: str | None = None
    """Where these figures come from, when not the sheet's own ``source``."""
    checked: date | None = None
    """When they were checked, when not the sheet's own ``checked``."""
    note: str | None = None

    @model_validator(mode="after")
    def _tiers_ascend(self) -> ModelPrice:
        thresholds = [tier.above_prompt_tokens for tier in self.tiers]
        if any(b <= a for a, b in pairwise(thresholds)):
            raise ValueError(f"tiers must be in increasing above_prompt_tokens, got {thresholds}")
        return self

    def rates(self, prompt_tokens: float) -> Rates:
        """The rates every token of a request with a ``prompt_tokens``-long prompt pays."""
        level: Rates = self
        for tier in self.tiers:
            if prompt_tokens > tier.above_prompt_tokens:
                level = tier
        return level

    def levels(self) -> list[Rates]:
        """Every price level, base first, then the tiers in increasing threshold."""
        return [self, *self.tiers]


class PriceTable(BaseModel):
    """A validated price sheet: per-model prices, aliases, and the batch discount."""

    model_config = ConfigDict(extra="forbid", strict=True)

    source: str = Field(min_length=1, description="Where the prices come from (URL).")
    checked: date = Field(description="When they were last checked against the source.")
    batch_discount: float = Field(ge=0, lt=1)
    models: dict[str, ModelPrice] = Field(min_length=1)
    aliases: dict[str, str] = Field(default_factory=dict)
    """Other names of a listed model (dated snapshot ids need none: see :meth:`resolve`)."""

    @model_validator(mode="after")
    def _aliases_name_listed_models(self) -> PriceTable:
        for alias, target in self.aliases.items():
            if alias in self.models:
                raise ValueError(f"aliases.{alias}: is itself a listed model")
            if target not in self.models:
                raise ValueError(f"aliases.{alias}: target {target!r} is not a listed model")
        return self

    def resolve(self, model: str) -> str:
        """The listed model that ``model`` names.

        Tried in order: the id as given, as a listed model or an alias; then the id without a
        trailing ``-YYYYMMDD`` snapshot date (``claude-haiku-4-5-20251001`` is
        ``claude-haiku-4-5``), likewise. Raises :class:`UnknownModelError` otherwise.
        """
        for name in (model, re.sub(_DATED, "", model)):
            if name in self.models:
                return name
            if name in self.aliases:
                return self.aliases[name]
        raise UnknownModelError(model, list(self.models))

    def knows(self, model: str) -> bool:
        """Whether ``model`` prices (a listed model, an alias or a dated snapshot id)."""
        try:
            self.resolve(model)
        except UnknownModelError:
            return False
        return True

    def price(self, model: str) -> ModelPrice:
        """Prices for ``model`` (see :meth:`resolve`); :class:`UnknownModelError` if unknown."""
        return self.models[self.resolve(model)]

    def cost_usd(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_write_5m_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        cache_read_tokens: int = 0,
        batch: bool = False,
    ) -> float:
        """What one request cost, from the usage the provider reported.

        ``input_tokens`` is the uncached part of the prompt, as in Anthropic's ``usage``;
        ``output_tokens`` includes thinking tokens, as the API reports them. The prompt
        (input + cache writes + cache reads) picks the price tier of the whole request.
        """
        prompt = input_tokens + cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens
        rates = self.price(model).rates(prompt)
        list_cost = (
            input_tokens * rates.input
            + output_tokens * rates.output
            + cache_write_5m_tokens * rates.cache_write_5m
            + cache_write_1h_tokens * rates.cache_write_1h
            + cache_read_tokens * rates.cache_read
        ) / PER_MILLION
        return list_cost * (1 - self.batch_discount) if batch else list_cost

    def sync_cost_usd(self, model: str, *, prompt_tokens: int, output_tokens: int) -> float:
        """The counterfactual: the same tokens on the synchronous path, no caching.

        ``prompt_tokens`` is the whole prompt (cached parts included), which also picks the
        tier; ``output_tokens`` includes thinking tokens.
        """
        rates = self.price(model).rates(prompt_tokens)
        return (prompt_tokens * rates.input + output_tokens * rates.output) / PER_MILLION

    def with_cost_columns(self, results: pa.Table) -> pa.Table:
        """Add ``cost_usd`` and ``sync_cost_usd`` to a results table, vectorised.

        Expects the usage columns written by the collectors (``model``, ``requested_model``,
        ``route``, ``input_tokens``, ``output_tokens``, ``cache_write_5m_tokens``,
        ``cache_write_1h_tokens``, ``cache_read_tokens``); rows without usage cost 0.
        Model ids resolve as in :meth:`resolve`, and each row pays the tier of its prompt
        as :meth:`cost_usd` does.

        ``cost_usd`` prices the reported usage on the model that answered, with the batch
        discount on the ``batch`` route; a ``reuse`` row (an answer given again) costs 0.
        ``sync_cost_usd`` is the counterfactual: the same request sent on its own,
        synchronously, at list price, without caching and without downshifting, i.e. every
        prompt token as plain input on the *requested* model.
        """
        self._check_known(results)
        route = results.column("route")
        factor = pc.if_else(
            pc.equal(route, BATCH_ROUTE),
            1 - self.batch_discount,
            pc.if_else(pc.equal(route, REUSE_ROUTE), 0.0, 1.0),
        )
        cost = pc.multiply(self._list_cost(results, "model", cached=True), factor)
        sync = self._list_cost(results, "requested_model", cached=False)
        return results.append_column("cost_usd", cost).append_column("sync_cost_usd", sync)

    def lever_savings(self, results: pa.Table, migrated: pa.Array | None = None) -> pa.Table:
        """What each cost lever saved on every row of a priced results table.

        The saving of a row, ``sync_cost_usd - cost_usd``, is split into five parts that add
        up to it exactly, by taking the levers away one at a time in a fixed order (a
        waterfall; what two levers save together falls to the later one):

        - ``saved_reuse_usd``: a ``reuse`` row was not sent at all, so its whole
          counterfactual is the reuse saving and the other three parts are 0.
        - ``saved_downshifting_usd`` = S - D, where S is ``sync_cost_usd`` (requested model,
          every prompt token as plain input, list price) and D the same tokens priced the
          same way on the model that answered. Negative if the "right-sized" model is dearer.
        - ``saved_migration_usd``: the same S - D, instead, on rows ``migrated`` marks (a
          boolean per row: routing moved the task off a retired model, rule
          ``model_migrated``), where it is what the successor costs against the retired
          model, not a choice to save; ``saved_downshifting_usd`` is 0 there.
        - ``saved_caching_usd`` = D - C, where C is the list price of the reported usage on
          the answering model with its cache split (uncached input, 5-minute and 1-hour
          cache writes, cache reads). Negative when cache writes were not read enough.
        - ``saved_batching_usd`` = C - A, where A is ``cost_usd``: C with the batch discount
          on the ``batch`` route, C itself on the ``realtime`` route (so 0 there).

        S and A are the stored columns, so the parts add up to the stored saving even if the
        price table changed since the rows were priced. Token counts are the ones reported:
        the counterfactuals assume the requested model would have read and written as many.
        D and C pay the tier of the row's prompt, which is the same with or without caching.
        """
        self._check_known(results)
        sync = pc.fill_null(results.column("sync_cost_usd"), 0.0)
        actual = pc.fill_null(results.column("cost_usd"), 0.0)
        reused = pc.fill_null(pc.equal(results.column("route"), REUSE_ROUTE), False)
        zero = pa.scalar(0.0)
        # For a reused row D = C = A, so the three waterfall steps before it are empty.
        plain = pc.if_else(reused, actual, self._list_cost(results, "model", cached=False))
        cached = pc.if_else(reused, actual, self._list_cost(results, "model", cached=True))
        model_change = pc.if_else(reused, zero, pc.subtract(sync, plain))
        if migrated is None:
            migrated = pa.array([False] * results.num_rows, pa.bool_())
        return pa.table(
            {
                "saved_downshifting_usd": pc.if_else(migrated, zero, model_change),
                "saved_migration_usd": pc.if_else(migrated, model_change, zero),
                "saved_caching_usd": pc.subtract(plain, cached),
                "saved_batching_usd": pc.subtract(cached, actual),
                "saved_reuse_usd": pc.if_else(reused, pc.subtract(sync, actual), zero),
            }
        )

    def _check_known(self, results: pa.Table) -> None:
        """Fail loudly on an unknown model before any arithmetic (never cost it as 0)."""
        for column in ("model", "requested_model"):
            for name in pc.unique(results.column(column)).to_pylist():
                if name is not None:
                    self.resolve(name)

    def _row_index(self, models: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, list[ModelPrice]]:
        """Each row's position in the returned list of prices (null where the model is null).

        The same resolution as :meth:`resolve`, vectorised: the id as given, then without a
        snapshot date, each looked up among the listed models and the aliases.
        """
        names = [*self.models, *self.aliases]
        prices = [*self.models.values(), *(self.models[t] for t in self.aliases.values())]
        value_set = pa.array(names, pa.string())
        models = pc.cast(models, pa.string())  # a column of nulls only has the null type
        as_given = pc.index_in(models, value_set=value_set)
        undated = pc.index_in(
            pc.replace_substring_regex(models, pattern=_DATED, replacement=""),
            value_set=value_set,
        )
        return pc.coalesce(as_given, undated), prices

    def _row_rates(self, models: pa.ChunkedArray | pa.Array, prompt: pa.Array) -> dict[str, Any]:
        """Each row's rate of every component, at the tier its prompt length falls in.

        One pass per tier *level* (the most tiers any model has), never per row: a row takes
        level k's rates where its model has a k-th tier and the prompt is above it; levels
        ascend, so the last one that applies wins.
        """
        index, prices = self._row_index(models)

        def per_row(values: Sequence[float | None]) -> Any:
            return pc.take(pa.array(values, pa.float64()), index)

        rates = {c: per_row([getattr(p, c) for p in prices]) for c in COMPONENTS}
        for level in range(max(len(p.tiers) for p in prices)):
            tiers = [p.tiers[level] if level < len(p.tiers) else None for p in prices]
            threshold = per_row([t.above_prompt_tokens if t else None for t in tiers])
            above = pc.fill_null(pc.greater(prompt, threshold), False)
            for c in COMPONENTS:
                rates[c] = pc.if_else(
                    above, per_row([getattr(t, c, None) for t in tiers]), rates[c]
                )
        return {c: pc.fill_null(rate, 0.0) for c, rate in rates.items()}

    def _list_cost(self, results: pa.Table, model_column: str, *, cached: bool) -> pa.Array:
        """List price (USD) of each row's reported usage on ``model_column``'s model.

        With ``cached``, the prompt is priced by its cache split as reported; without, every
        prompt token (uncached, written and read) counts as plain input. Either way the
        whole prompt picks the tier.
        """

        def tokens(name: str) -> pa.Array:
            return pc.fill_null(pc.cast(results.column(name), pa.float64()), 0.0)

        split = {
            "input": tokens("input_tokens"),
            "cache_read": tokens("cache_read_tokens"),
            "cache_write_5m": tokens("cache_write_5m_tokens"),
            "cache_write_1h": tokens("cache_write_1h_tokens"),
        }
        prompt = pc.add(
            pc.add(split["input"], split["cache_read"]),
            pc.add(split["cache_write_5m"], split["cache_write_1h"]),
        )
        rates = self._row_rates(results.column(model_column), prompt)
        output = pc.multiply(tokens("output_tokens"), rates["output"])
        if cached:
            parts = [pc.multiply(n, rates[component]) for component, n in split.items()]
            prompt_cost = pc.add(pc.add(parts[0], parts[1]), pc.add(parts[2], parts[3]))
        else:
            prompt_cost = pc.multiply(prompt, rates["input"])
        return pc.divide(pc.add(prompt_cost, output), float(PER_MILLION))


def parse_price_sheet(raw: Any, source: str) -> PriceTable:
    """Validate a price sheet document; errors name the sheet, the model and the field."""
    try:
        return PriceTable.model_validate(raw)
    except ValidationError as error:
        raise PriceSheetError(f"price sheet {source}: {problems(error, 'sheet')}") from None


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """Read and validate a price sheet; without ``path``, the one shipped in the package."""
    if path is None or str(path) == "":
        return shipped_price_table()
    return parse_price_sheet(read_yaml(path, "price sheet", PriceSheetError), str(path))


def price_sheet_path_from_env() -> str | None:
    """The price sheet named by ``LLM_PIPELINES_PRICE_SHEET``, if set."""
    return os.environ.get(PRICE_SHEET_ENV) or None


def default_price_table() -> PriceTable:
    """The deployment's price sheet: ``LLM_PIPELINES_PRICE_SHEET`` if set, else the shipped one.

    Read once per process and path. Assets price with ``CostPolicyResource.price_table()``,
    whose default is the same variable; this one serves code without resources.
    """
    return _sheet_at(price_sheet_path_from_env())


@cache
def _sheet_at(path: str | None) -> PriceTable:
    return load_price_table(path)


@cache
def shipped_price_table() -> PriceTable:
    """The price sheet shipped with the package (read once per process)."""
    text = resources.files("llm_pipelines.costs").joinpath("prices.yaml").read_text()
    return parse_price_sheet(yaml.safe_load(text), "prices.yaml (shipped)")
