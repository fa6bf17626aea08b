"""Cost arithmetic against hand-computed examples, one per price component."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest

from llm_pipelines.costs import PriceTable, UnknownModelError

PRICES = PriceTable.model_validate(
    {
        "source": "https://example.test/prices",
        "checked": date(2026, 12, 6),
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


def _row(**usage: object) -> dict[str, object]:
    row: dict[str, object] = {
        "model": "m",
        "requested_model": "m",
        "route": "realtime",
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 0,
    }
    row.update(usage)
    return row


@pytest.mark.parametrize(
    ("usage", "cost", "sync"),
    [
        # input: 1000 * $3/M
        ({"input_tokens": 1000}, 0.003, 0.003),
        # output: 1000 * $15/M
        ({"output_tokens": 1000}, 0.015, 0.015),
        # 5-minute cache write: 1000 * $3.75/M; all-sync prices it as plain input, $3/M
        ({"cache_write_5m_tokens": 1000}, 0.00375, 0.003),
        # 1-hour cache write: 1000 * $6/M; all-sync $3/M
        ({"cache_write_1h_tokens": 1000}, 0.006, 0.003),
        # cache read: 1000 * $0.30/M; all-sync $3/M
        ({"cache_read_tokens": 1000}, 0.0003, 0.003),
        # batch discount: the same 1-hour write through a batch is half: 0.006 / 2
        ({"cache_write_1h_tokens": 1000, "route": "batch"}, 0.003, 0.003),
        # batch, input and output: (1000*3 + 100*15)/1e6 / 2 = 0.00225; sync 0.0045
        ({"input_tokens": 1000, "output_tokens": 100, "route": "batch"}, 0.00225, 0.0045),
        # downshifted: answered by "small" ($1/$5), requested "m": cost (1000*1 + 100*5)/1e6,
        # all-sync on m (1000*3 + 100*15)/1e6
        (
            {"model": "small", "input_tokens": 1000, "output_tokens": 100},
            0.0015,
            0.0045,
        ),
        # reused: not sent, costs 0; all-sync is what it would have cost on its own, on m:
        # (200 + 800 prompt tokens) * 3 + 50 * 15
        (
            {
                "route": "reuse",
                "model": "small",
                "input_tokens": 200,
                "cache_read_tokens": 800,
                "output_tokens": 50,
            },
            0.0,
            0.00375,
        ),
    ],
)
def test_cost_and_sync_columns_per_component(
    usage: dict[str, object], cost: float, sync: float
) -> None:
    table = PRICES.with_cost_columns(pa.Table.from_pylist([_row(**usage)]))
    assert table["cost_usd"].to_pylist() == pytest.approx([cost])
    assert table["sync_cost_usd"].to_pylist() == pytest.approx([sync])


@pytest.mark.parametrize(
    ("usage", "levers"),
    [
        # Batch, downshifted m -> small, a 1-hour write never read:
        # S = (4100*3 + 50*15)/1e6 = 0.01305   requested model, all prompt as input
        # D = (4100*1 + 50*5)/1e6  = 0.00435   answering model, all prompt as input
        # C = (100*1 + 4000*2 + 50*5)/1e6 = 0.00835   with the cache split
        # A = C / 2 = 0.004175                 batch discount
        (
            {
                "route": "batch",
                "model": "small",
                "input_tokens": 100,
                "output_tokens": 50,
                "cache_write_1h_tokens": 4000,
            },
            {"downshifting": 0.0087, "caching": -0.004, "batching": 0.004175, "reuse": 0.0},
        ),
        # Real-time on the requested model, reading 3000 cached tokens:
        # S = D = (5000*3 + 10*15)/1e6 = 0.01515; C = A = (2000*3 + 3000*0.3 + 150)/1e6
        (
            {"input_tokens": 2000, "output_tokens": 10, "cache_read_tokens": 3000},
            {"downshifting": 0.0, "caching": 0.0081, "batching": 0.0, "reuse": 0.0},
        ),
        # Batch, 5-minute write read later by others: S = D = (1000*3)/1e6 = 0.003;
        # C = 1000*3.75/1e6 = 0.00375; A = 0.001875
        (
            {"route": "batch", "cache_write_5m_tokens": 1000},
            {"downshifting": 0.0, "caching": -0.00075, "batching": 0.001875, "reuse": 0.0},
        ),
        # Reused: the whole all-sync cost, (1000*3 + 100*15)/1e6, is the reuse saving.
        (
            {"route": "reuse", "model": "small", "input_tokens": 1000, "output_tokens": 100},
            {"downshifting": 0.0, "caching": 0.0, "batching": 0.0, "reuse": 0.0045},
        ),
    ],
)
def test_lever_savings_add_up_to_the_saving(
    usage: dict[str, object], levers: dict[str, float]
) -> None:
    priced = PRICES.with_cost_columns(pa.Table.from_pylist([_row(**usage)]))
    split = PRICES.lever_savings(priced)
    got = {lever: split[f"saved_{lever}_usd"][0].as_py() for lever in levers}
    assert got == pytest.approx(levers)
    saved = priced["sync_cost_usd"][0].as_py() - priced["cost_usd"][0].as_py()
    assert sum(got.values()) == pytest.approx(saved)


def test_lever_parts_add_up_even_when_prices_changed_since_pricing() -> None:
    priced = PRICES.with_cost_columns(
        pa.Table.from_pylist([_row(route="batch", model="small", input_tokens=10_000)])
    )
    dearer = PRICES.model_copy(deep=True)
    dearer.models["small"].input = 2.0
    split = dearer.lever_savings(priced)
    total = sum(split[c][0].as_py() for c in split.column_names)
    assert total == pytest.approx(
        priced["sync_cost_usd"][0].as_py() - priced["cost_usd"][0].as_py()
    )


def test_rows_without_a_model_or_usage_cost_nothing_even_when_no_row_has_one() -> None:
    # A chunk of dead-letter-like rows only: every column null, so arrow types them as null.
    empty = dict.fromkeys(_row(), None) | {"route": "batch"}
    table = PRICES.with_cost_columns(pa.Table.from_pylist([empty, empty]))
    assert table.schema.field("model").type == pa.null()
    assert table["cost_usd"].to_pylist() == [0.0, 0.0]
    assert table["sync_cost_usd"].to_pylist() == [0.0, 0.0]
