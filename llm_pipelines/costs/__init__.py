"""Prices and cost arithmetic."""

from llm_pipelines.costs.prices import (
    PRICE_SHEET_ENV,
    ModelPrice,
    PriceSheetError,
    PriceTable,
    PriceTier,
    Rates,
    UnknownModelError,
    default_price_table,
    load_price_table,
    parse_price_sheet,
    price_sheet_path_from_env,
    shipped_price_table,
)

__all__ = [
    "PRICE_SHEET_ENV",
    "ModelPrice",
    "PriceSheetError",
    "PriceTable",
    "PriceTier",
    "Rates",
    "UnknownModelError",
    "default_price_table",
    "load_price_table",
    "parse_price_sheet",
    "price_sheet_path_from_env",
    "shipped_price_table",
]
