"""The price table: one data file, validated, with the cost arithmetic every result row uses."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, Field

PER_MILLION = 1_000_000
BATCH_ROUTE = "batch"
"""Rows answered through the Message Batches API get the batch discount."""
REUSE_ROUTE = "reuse"
"""Rows whose identical request was already answered: the answer is given again at no cost."""


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


class ModelPrice(BaseModel):
    """List prices of one model in USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write_5m: float = Field(ge=0)
    cache_write_1h: float = Field(ge=0)
    cache_read: float = Field(ge=0)
    min_cacheable_tokens: int = Field(ge=0, default=1024)


class PriceTable(BaseModel):
    """Per-model prices plus the discount the Message Batches API gives on every component."""

    batch_discount: float = Field(ge=0, lt=1)
    models: dict[str, ModelPrice]

    def price(self, model: str) -> ModelPrice:
        """Prices for ``model``; raises :class:`UnknownModelError` for a model not listed."""
        try:
            return self.models[model]
        except KeyError:
            raise UnknownModelError(model, list(self.models)) from None

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

        ``input_tokens`` is the uncached part of the prompt, as in Anthropic's ``usage``.
        """
        p = self.price(model)
        list_cost = (
            input_tokens * p.input
            + output_tokens * p.output
            + cache_write_5m_tokens * p.cache_write_5m
            + cache_write_1h_tokens * p.cache_write_1h
            + cache_read_tokens * p.cache_read
        ) / PER_MILLION
        return list_cost * (1 - self.batch_discount) if batch else list_cost

    def sync_cost_usd(self, model: str, *, prompt_tokens: int, output_tokens: int) -> float:
        """The counterfactual: the same tokens on the synchronous path, no caching."""
        p = self.price(model)
        return (prompt_tokens * p.input + output_tokens * p.output) / PER_MILLION

    def with_cost_columns(self, results: pa.Table) -> pa.Table:
        """Add ``cost_usd`` and ``sync_cost_usd`` to a results table, vectorised.

        Expects the usage columns written by the collectors (``model``, ``requested_model``,
        ``route``, ``input_tokens``, ``output_tokens``, ``cache_write_5m_tokens``,
        ``cache_write_1h_tokens``, ``cache_read_tokens``); rows without usage cost 0.

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

    def lever_savings(self, results: pa.Table) -> pa.Table:
        """What each cost lever saved on every row of a priced results table.

        The saving of a row, ``sync_cost_usd - cost_usd``, is split into four parts that add
        up to it exactly, by taking the levers away one at a time in a fixed order (a
        waterfall; what two levers save together falls to the later one):

        - ``saved_reuse_usd``: a ``reuse`` row was not sent at all, so its whole
          counterfactual is the reuse saving and the other three parts are 0.
        - ``saved_downshifting_usd`` = S - D, where S is ``sync_cost_usd`` (requested model,
          every prompt token as plain input, list price) and D the same tokens priced the
          same way on the model that answered. Negative if the "right-sized" model is dearer.
        - ``saved_caching_usd`` = D - C, where C is the list price of the reported usage on
          the answering model with its cache split (uncached input, 5-minute and 1-hour
          cache writes, cache reads). Negative when cache writes were not read enough.
        - ``saved_batching_usd`` = C - A, where A is ``cost_usd``: C with the batch discount
          on the ``batch`` route, C itself on the ``realtime`` route (so 0 there).

        S and A are the stored columns, so the parts add up to the stored saving even if the
        price table changed since the rows were priced. Token counts are the ones reported:
        the counterfactuals assume the requested model would have read and written as many.
        """
        self._check_known(results)
        sync = pc.fill_null(results.column("sync_cost_usd"), 0.0)
        actual = pc.fill_null(results.column("cost_usd"), 0.0)
        reused = pc.fill_null(pc.equal(results.column("route"), REUSE_ROUTE), False)
        zero = pa.scalar(0.0)
        # For a reused row D = C = A, so the three waterfall steps before it are empty.
        plain = pc.if_else(reused, actual, self._list_cost(results, "model", cached=False))
        cached = pc.if_else(reused, actual, self._list_cost(results, "model", cached=True))
        return pa.table(
            {
                "saved_downshifting_usd": pc.if_else(reused, zero, pc.subtract(sync, plain)),
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
                    self.price(name)

    def _per_model(self, models: pa.ChunkedArray | pa.Array, component: str) -> pa.Array:
        """The price of one component for each row's model (0 where the model is null)."""
        keys = list(self.models)
        index = pc.index_in(models, value_set=pa.array(keys, pa.string()))
        prices = pa.array([getattr(self.models[k], component) for k in keys], pa.float64())
        return pc.fill_null(pc.take(prices, index), 0.0)

    def _list_cost(self, results: pa.Table, model_column: str, *, cached: bool) -> pa.Array:
        """List price (USD) of each row's reported usage on ``model_column``'s model.

        With ``cached``, the prompt is priced by its cache split as reported; without, every
        prompt token (uncached, written and read) counts as plain input.
        """
        models = results.column(model_column)

        def tokens(name: str) -> pa.Array:
            return pc.fill_null(pc.cast(results.column(name), pa.float64()), 0.0)

        def priced(name: str, component: str) -> pa.Array:
            return pc.multiply(tokens(name), self._per_model(models, component))

        output = priced("output_tokens", "output")
        if cached:
            prompt = pc.add(
                pc.add(priced("input_tokens", "input"), priced("cache_read_tokens", "cache_read")),
                pc.add(
                    priced("cache_write_5m_tokens", "cache_write_5m"),
                    priced("cache_write_1h_tokens", "cache_write_1h"),
                ),
            )
        else:
            all_prompt = pc.add(
                pc.add(tokens("input_tokens"), tokens("cache_read_tokens")),
                pc.add(tokens("cache_write_5m_tokens"), tokens("cache_write_1h_tokens")),
            )
            prompt = pc.multiply(all_prompt, self._per_model(models, "input"))
        return pc.divide(pc.add(prompt, output), float(PER_MILLION))


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """Read and validate a price table; without ``path``, the one shipped in the package."""
    if path is None:
        return default_price_table()
    return PriceTable.model_validate(yaml.safe_load(Path(path).read_text()))


@cache
def default_price_table() -> PriceTable:
    """The price table shipped with the package (read once per process)."""
    text = resources.files("llm_pipelines.costs").joinpath("prices.yaml").read_text()
    return PriceTable.model_validate(yaml.safe_load(text))
