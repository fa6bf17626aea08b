"""Cost arithmetic against hand-computed examples, one per price component."""

from __future__ import annotations

import pyarrow as pa
import pytest

from llm_pipelines.costs import PriceTable, UnknownModelError, default_price_table

PRICES = PriceTable.model_validate(
    {
        "batch_discount": 0.5,
        "models": {
            "m": {
                "input": 3.0,
                "output": 15.0,
                "cache_write_5m": 3.75,
                "cache_write_1h": 6.0,
                "cache_read": 0.3,
            },
            "small": {
                "input": 1.0,
                "output": 5.0,
                "cache_write_5m": 1.25,
                "cache_write_1h": 2.0,
                "cache_read": 0.1,
            },
        },
    }
)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 1_000_000, "output_tokens": 0}, 3.0),
        ({"input_tokens": 0, "output_tokens": 1_000_000}, 15.0),
        ({"input_tokens": 0, "output_tokens": 0, "cache_write_5m_tokens": 2_000_000}, 7.5),
        ({"input_tokens": 0, "output_tokens": 0, "cache_write_1h_tokens": 500_000}, 3.0),
        ({"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 10_000_000}, 3.0),
        # 1200 in, 300 out: 1200*3/1e6 + 300*15/1e6 = 0.0036 + 0.0045
        ({"input_tokens": 1200, "output_tokens": 300}, 0.0081),
    ],
)
def test_each_price_component(usage: dict[str, int], expected: float) -> None:
    assert PRICES.cost_usd("m", **usage) == pytest.approx(expected)
    assert PRICES.cost_usd("m", **usage, batch=True) == pytest.approx(expected / 2)


def test_sync_counterfactual_counts_cached_tokens_at_full_input_price() -> None:
    # 100 uncached + 900 read from cache = 1000 prompt tokens at $3/M, 50 out at $15/M.
    assert PRICES.sync_cost_usd("m", prompt_tokens=1000, output_tokens=50) == pytest.approx(
        0.003 + 0.00075
    )


def test_vectorised_columns_match_the_scalar_arithmetic() -> None:
    rows = [
        {
            "model": "small",
            "requested_model": "m",
            "route": "batch",
            "input_tokens": 100,
            "output_tokens": 50,
            "cache_write_5m_tokens": 0,
            "cache_write_1h_tokens": 4000,
            "cache_read_tokens": 0,
        },
        {
            "model": "m",
            "requested_model": "m",
            "route": "realtime",
            "input_tokens": 2000,
            "output_tokens": 10,
            "cache_write_5m_tokens": 0,
            "cache_write_1h_tokens": 0,
            "cache_read_tokens": 3000,
        },
    ]
    table = PRICES.with_cost_columns(pa.Table.from_pylist(rows))
    # Row 1: small model, batch: (100*1 + 50*5 + 4000*2)/1e6 * 0.5 = 0.004175
    # all-sync on the requested model m: (4100*3 + 50*15)/1e6 = 0.01305
    # Row 2: m realtime: (2000*3 + 10*15 + 3000*0.3)/1e6 = 0.00705; sync (5000*3 + 150)/1e6
    assert table["cost_usd"].to_pylist() == pytest.approx([0.004175, 0.00705])
    assert table["sync_cost_usd"].to_pylist() == pytest.approx([0.01305, 0.01515])


def test_unknown_model_is_a_clear_error_not_zero() -> None:
    with pytest.raises(UnknownModelError, match="not in the price table"):
        PRICES.cost_usd("gpt-x", input_tokens=1, output_tokens=1)
    table = pa.Table.from_pylist(
        [
            {
                "model": "gpt-x",
                "requested_model": "gpt-x",
                "route": "batch",
                "input_tokens": 1,
                "output_tokens": 1,
                "cache_write_5m_tokens": 0,
                "cache_write_1h_tokens": 0,
                "cache_read_tokens": 0,
            }
        ]
    )
    with pytest.raises(UnknownModelError):
        PRICES.with_cost_columns(table)


def test_shipped_price_table_has_the_batch_discount_and_cache_ratios() -> None:
    table = default_price_table()
    assert table.batch_discount == 0.5
    for price in table.models.values():
        assert price.cache_read == pytest.approx(price.input / 10)
        assert price.cache_write_5m == pytest.approx(price.input * 1.25)
        assert price.cache_write_1h == pytest.approx(price.input * 2)
