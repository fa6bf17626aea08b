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
        """
        models = results.column("model")
        requested = results.column("requested_model")
        for name in set(pc.unique(models).to_pylist()) | set(pc.unique(requested).to_pylist()):
            if name is not None:
                self.price(name)  # fail loudly on an unknown model before any arithmetic

        def per_model(column: pa.ChunkedArray, field: str) -> pa.Array:
            keys = list(self.models)
            index = pc.index_in(column, value_set=pa.array(keys))
            prices = pa.array([getattr(self.models[k], field) for k in keys], pa.float64())
            return pc.fill_null(pc.take(prices, index), 0.0)

        def tokens(name: str) -> pa.Array:
            return pc.fill_null(pc.cast(results.column(name), pa.float64()), 0.0)

        list_cost = pc.add_checked(
            pc.add_checked(
                pc.multiply(tokens("input_tokens"), per_model(models, "input")),
                pc.multiply(tokens("output_tokens"), per_model(models, "output")),
            ),
            pc.add_checked(
                pc.add_checked(
                    pc.multiply(
                        tokens("cache_write_5m_tokens"), per_model(models, "cache_write_5m")
                    ),
                    pc.multiply(
                        tokens("cache_write_1h_tokens"), per_model(models, "cache_write_1h")
                    ),
                ),
                pc.multiply(tokens("cache_read_tokens"), per_model(models, "cache_read")),
            ),
        )
        is_batch = pc.equal(results.column("route"), "batch")
        factor = pc.if_else(is_batch, 1 - self.batch_discount, 1.0)
        cost = pc.divide(pc.multiply(list_cost, factor), float(PER_MILLION))
        prompt = pc.add(
            pc.add(tokens("input_tokens"), tokens("cache_read_tokens")),
            pc.add(tokens("cache_write_5m_tokens"), tokens("cache_write_1h_tokens")),
        )
        sync = pc.divide(
            pc.add(
                pc.multiply(prompt, per_model(requested, "input")),
                pc.multiply(tokens("output_tokens"), per_model(requested, "output")),
            ),
            float(PER_MILLION),
        )
        return results.append_column("cost_usd", cost).append_column("sync_cost_usd", sync)


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
