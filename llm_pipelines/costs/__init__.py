"""Prices and cost arithmetic."""

from llm_pipelines.costs.prices import (
    ModelPrice,
    PriceTable,
    UnknownModelError,
    default_price_table,
    load_price_table,
)

__all__ = [
    "ModelPrice",
    "PriceTable",
    "UnknownModelError",
    "default_price_table",
    "load_price_table",
]
