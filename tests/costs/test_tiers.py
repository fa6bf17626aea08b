"""Prompt-length tiers: the tier of the prompt prices every token of the request.

Hand-computed cases on both sides of a boundary, per component, per path (per row, vectorised,
routing's estimate), then the per-row and vectorised paths against each other on random rows.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_pipelines.costs import PriceSheetError, PriceTable, parse_price_sheet, shipped_price_table
from llm_pipelines.routing.route import estimated_cost

SHIPPED = shipped_price_table()
# Claude Haiku 5.5 as the sheet records it (USD / MTok): up to 100,000 prompt tokens, above.
BASE = {"input": 0.10, "output": 0.50, "cache_write_5m": 0.125, "cache_write_1h": 0.20,
        "cache_read": 0.01}  # fmt: skip
LONG = {"input": 0.50, "output": 2.50, "cache_write_5m": 0.625, "cache_write_1h": 1.00,
        "cache_read": 0.05}  # fmt: skip
USAGE_OF = {
    "input": "input_tokens",
    "cache_write_5m": "cache_write_5m_tokens",
    "cache_write_1h": "cache_write_1h_tokens",
    "cache_read": "cache_read_tokens",
}
ZERO_USAGE = dict.fromkeys([*USAGE_OF.values(), "output_tokens"], 0)


def _row(model: str = "claude-haiku-5-5", **usage: Any) -> dict[str, Any]:
    return {"model": model, "requested_model": model, "route": "realtime", **ZERO_USAGE, **usage}


def _priced(*rows: dict[str, Any], prices: PriceTable = SHIPPED) -> pa.Table:
    return prices.with_cost_columns(pa.Table.from_pylist(list(rows)))


def test_the_sheet_records_haiku_5_5_tiers_as_the_tests_assume() -> None:
    price = SHIPPED.price("claude-haiku-5-5")
    assert price.model_dump(include=set(BASE)) == BASE
    assert [t.above_prompt_tokens for t in price.tiers] == [100_000]
    assert price.tiers[0].model_dump(include=set(LONG)) == LONG


@pytest.mark.parametrize("component", list(USAGE_OF))
@pytest.mark.parametrize(("prompt", "rates"), [(100_000, BASE), (100_001, LONG)])
def test_each_prompt_component_alone_on_each_side_of_the_boundary(
    component: str, prompt: int, rates: dict[str, float]
) -> None:
    # The whole prompt is of one kind; 1,000 output tokens pay the same tier's output rate.
    usage = {**ZERO_USAGE, USAGE_OF[component]: prompt, "output_tokens": 1_000}
    expected = (prompt * rates[component] + 1_000 * rates["output"]) / 1e6
    assert SHIPPED.cost_usd("claude-haiku-5-5", **usage) == pytest.approx(expected, rel=1e-12)
    assert SHIPPED.cost_usd("claude-haiku-5-5", **usage, batch=True) == pytest.approx(
        expected / 2, rel=1e-12
    )
    table = _priced(_row(**usage), _row(route="batch", **usage))
    assert table["cost_usd"].to_pylist() == pytest.approx([expected, expected / 2], rel=1e-12)
    # All-sync: every prompt token as plain input, at the same tier.
    sync = (prompt * rates["input"] + 1_000 * rates["output"]) / 1e6
    assert table["sync_cost_usd"].to_pylist() == pytest.approx([sync, sync], rel=1e-12)
    assert SHIPPED.sync_cost_usd(
        "claude-haiku-5-5", prompt_tokens=prompt, output_tokens=1_000
    ) == pytest.approx(sync, rel=1e-12)


# A mixed prompt: 40,000 uncached + 20,000 written (5m) + 10,000 written (1h) + 30,000 read
# is exactly 100,000 tokens, the base tier; one more uncached token tips the request over.
MIXED = {
    "cache_write_5m_tokens": 20_000,
    "cache_write_1h_tokens": 10_000,
    "cache_read_tokens": 30_000,
    "output_tokens": 2_000,
}


@pytest.mark.parametrize(
    ("input_tokens", "cost", "sync"),
    [
        # base: 40000*0.10 + 20000*0.125 + 10000*0.20 + 30000*0.01 + 2000*0.50 = 9,800 / 1e6
        #       all-sync: 100000*0.10 + 2000*0.50 = 11,000 / 1e6
        (40_000, 0.0098, 0.011),
        # long: 40001*0.50 + 20000*0.625 + 10000*1.00 + 30000*0.05 + 2000*2.50 = 49,000.5 / 1e6
        #       all-sync: 100001*0.50 + 2000*2.50 = 55,000.5 / 1e6
        (40_001, 0.0490005, 0.0550005),
    ],
)
def test_every_token_of_the_request_pays_the_tier_of_its_prompt(
    input_tokens: int, cost: float, sync: float
) -> None:
    usage = {**MIXED, "input_tokens": input_tokens}
    assert SHIPPED.cost_usd("claude-haiku-5-5", **usage) == pytest.approx(cost, rel=1e-12)
    assert SHIPPED.cost_usd("claude-haiku-5-5", **usage, batch=True) == pytest.approx(
        cost / 2, rel=1e-12
    )
    table = _priced(_row(**usage), _row(route="batch", **usage))
    assert table["cost_usd"].to_pylist() == pytest.approx([cost, cost / 2], rel=1e-12)
    assert table["sync_cost_usd"].to_pylist() == pytest.approx([sync, sync], rel=1e-12)


def test_cache_reads_count_toward_the_prompt_and_output_does_not() -> None:
    rows = [
        # 100,000 read + 0 uncached: base. 100,000 read + 1 uncached: long, on every token.
        _row(cache_read_tokens=100_000),
        _row(cache_read_tokens=100_000, input_tokens=1),
        # 100,000 uncached + 50,000 out: output is not prompt, so base.
        _row(input_tokens=100_000, output_tokens=50_000),
    ]
    expected = [
        100_000 * 0.01 / 1e6,  # 0.001
        (1 * 0.50 + 100_000 * 0.05) / 1e6,  # 0.0050005
        (100_000 * 0.10 + 50_000 * 0.50) / 1e6,  # 0.035
    ]
    assert _priced(*rows)["cost_usd"].to_pylist() == pytest.approx(expected, rel=1e-12)
    assert [
        SHIPPED.cost_usd("claude-haiku-5-5", **{k: v for k, v in r.items() if k in ZERO_USAGE})
        for r in rows
    ] == pytest.approx(expected, rel=1e-12)


def test_a_tier_changes_the_lever_split_consistently() -> None:
    # Batch, 100,001-token prompt mostly read from the cache, downshifted from Sonnet 4.5.
    row = _row(route="batch", input_tokens=1, cache_read_tokens=100_000, output_tokens=1_000)
    row["requested_model"] = "claude-sonnet-4-5"
    priced = _priced(row)
    levers = SHIPPED.lever_savings(priced)
    # S: Sonnet 4.5, 100,001 plain input + 1,000 out: (100001*3 + 1000*15) / 1e6
    # D: Haiku 5.5 long tier, all plain input: (100001*0.50 + 1000*2.50) / 1e6
    # C: long tier with the cache split: (1*0.50 + 100000*0.05 + 1000*2.50) / 1e6
    # A: C / 2
    s, d, c = 0.315003, 0.0525005, 0.0075005
    assert priced["sync_cost_usd"][0].as_py() == pytest.approx(s, rel=1e-12)
    assert priced["cost_usd"][0].as_py() == pytest.approx(c / 2, rel=1e-12)
    got = {name: levers[name][0].as_py() for name in levers.column_names}
    assert got == pytest.approx(
        {
            "saved_downshifting_usd": s - d,
            "saved_caching_usd": d - c,
            "saved_batching_usd": c / 2,
            "saved_reuse_usd": 0.0,
            "saved_migration_usd": 0.0,
        },
        rel=1e-9,
    )
    # Had routing moved it off a retired model instead, the same S - D is migration's.
    migrated = SHIPPED.lever_savings(priced, pa.array([True]))
    assert migrated["saved_migration_usd"][0].as_py() == pytest.approx(s - d, rel=1e-9)
    assert migrated["saved_downshifting_usd"][0].as_py() == 0.0
    assert migrated["saved_caching_usd"] == levers["saved_caching_usd"]


def test_routings_estimate_applies_the_tier_of_the_estimated_prompt() -> None:
    # prompt chars / 4 tokens in: 400,000 chars = 100,000 tokens (base), 400,004 = 100,001.
    estimate = estimated_cost(
        pa.array(["claude-haiku-5-5"] * 3),
        pa.array([400_000, 400_004, 400_004]),
        pa.array([0, 0, 0], pa.int32()),
        pa.array(["realtime", "realtime", "batch"]),
        SHIPPED,
    )
    assert estimate.to_pylist() == pytest.approx(
        [100_000 * 0.10 / 1e6, 100_001 * 0.50 / 1e6, 100_001 * 0.50 / 2e6], rel=1e-12
    )


def _two_tier_sheet() -> dict[str, Any]:
    def rates(k: float) -> dict[str, float]:
        return {"input": k, "output": 5 * k, "cache_write_5m": k, "cache_write_1h": k,
                "cache_read": k}  # fmt: skip

    return {
        "source": "https://example.test/prices",
        "checked": date(2026, 12, 6),
        "batch_discount": 0.5,
        "models": {
            "stepped": {
                **rates(1.0),
                "tiers": [
                    {"above_prompt_tokens": 1_000, **rates(2.0)},
                    {"above_prompt_tokens": 2_000, **rates(4.0)},
                ],
            },
            "flat": rates(3.0),
        },
    }


def test_the_highest_tier_below_the_prompt_applies() -> None:
    prices = parse_price_sheet(_two_tier_sheet(), "test")
    prompts = [1_000, 1_001, 2_000, 2_001, 10_000]
    per_token = [1.0, 2.0, 2.0, 4.0, 4.0]
    rows = [_row("stepped", input_tokens=n) for n in prompts] + [_row("flat", input_tokens=5_000)]
    expected = [n * k / 1e6 for n, k in zip(prompts, per_token, strict=True)] + [5_000 * 3 / 1e6]
    assert _priced(*rows, prices=prices)["cost_usd"].to_pylist() == pytest.approx(expected)
    assert [prices.cost_usd("stepped", input_tokens=n, output_tokens=0) for n in prompts] == (
        pytest.approx(expected[:-1])
    )


def test_tiers_out_of_order_are_refused_naming_the_model() -> None:
    raw = _two_tier_sheet()
    raw["models"]["stepped"]["tiers"].reverse()
    with pytest.raises(PriceSheetError, match=r"models\.stepped: .*increasing above_prompt_tokens"):
        parse_price_sheet(raw, "test")


# --- the per-row and vectorised paths agree ---------------------------------------------

MODELS = [
    "claude-haiku-5-5",
    "claude-sonnet-5-5",
    "claude-opus-5-5",
    "claude-fable-5-1",
    "claude-sonnet-4-5",  # a 200K tier
    "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5-20251001",
    "claude-3-5-haiku-latest",
]
EDGES = [0, 99_999, 100_000, 100_001, 199_999, 200_000, 200_001]


@st.composite
def result_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A result row whose prompt is often right at a tier boundary, split at random."""
    total = draw(st.one_of(st.integers(0, 250_000), st.sampled_from(EDGES)))
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=3, max_size=3)))
    parts = [cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], total - cuts[2]]
    return {
        "model": draw(st.sampled_from(MODELS)),
        "requested_model": draw(st.sampled_from(MODELS)),
        "route": draw(st.sampled_from(["batch", "realtime", "reuse"])),
        **dict(zip(USAGE_OF.values(), parts, strict=True)),
        "output_tokens": draw(st.integers(0, 130_000)),
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(result_rows(), min_size=1, max_size=25))
def test_per_row_and_vectorised_paths_agree(rows: list[dict[str, Any]]) -> None:
    priced = _priced(*rows)
    levers = SHIPPED.lever_savings(priced)
    for i, row in enumerate(rows):
        usage = {k: row[k] for k in ZERO_USAGE}
        cost = (
            0.0
            if row["route"] == "reuse"
            else SHIPPED.cost_usd(row["model"], **usage, batch=row["route"] == "batch")
        )
        prompt = sum(row[k] for k in USAGE_OF.values())
        sync = SHIPPED.sync_cost_usd(
            row["requested_model"], prompt_tokens=prompt, output_tokens=row["output_tokens"]
        )
        assert priced["cost_usd"][i].as_py() == pytest.approx(cost, rel=1e-12, abs=1e-15)
        assert priced["sync_cost_usd"][i].as_py() == pytest.approx(sync, rel=1e-12, abs=1e-15)
        parts = sum(levers[name][i].as_py() for name in levers.column_names)
        assert parts == pytest.approx(sync - cost, rel=1e-9, abs=1e-12)
