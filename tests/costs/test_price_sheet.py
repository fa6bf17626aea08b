"""The price sheet: what the shipped one records, how ids resolve, how a bad sheet fails, and
how a deployment points at its own (resource field, environment variable) through Dagster."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from anthropic.types.model_param import ModelParam

from llm_pipelines.costs import (
    PRICE_SHEET_ENV,
    PriceSheetError,
    UnknownModelError,
    default_price_table,
    load_price_table,
    shipped_price_table,
)
from llm_pipelines.costs.prices import COMPONENTS
from llm_pipelines.demo.workload import generate_tasks
from llm_pipelines.resources import CostPolicyResource
from llm_pipelines.routing.route import estimated_cost
from llm_pipelines.storage import Lake, LandingZone
from llm_pipelines.storage.datasets import RESULTS, RESULTS_SCHEMA, TASKS, TASKS_FILE

SHIPPED = shipped_price_table()
SHEET_TEXT = resources.files("llm_pipelines.costs").joinpath("prices.yaml").read_text()
NOT_PRICED = {"claude-mythos-preview"}
"""Ids the installed SDK lists that the sheet could not price (no figure in the docs)."""


def test_the_shipped_sheet_names_its_source_and_date() -> None:
    assert SHIPPED.source == "https://platform.claude.com/docs/en/about-claude/pricing"
    assert SHIPPED.checked == date(2026, 12, 6)
    assert SHIPPED.batch_discount == 0.5
    for name, price in SHIPPED.models.items():
        if price.source is not None:
            assert price.source.startswith("https://"), name


def test_every_model_the_sdk_lists_prices_but_those_the_sheet_says_it_cannot() -> None:
    sdk_ids = set(get_args(get_args(ModelParam)[0]))
    assert {m for m in sdk_ids if not SHIPPED.knows(m)} == NOT_PRICED
    for model in NOT_PRICED:
        assert model in SHEET_TEXT, f"the sheet should say why {model} has no price"


def test_models_the_workloads_still_use_keep_their_2025_prices() -> None:
    expected = {
        "claude-sonnet-4-5": (3.0, 15.0, 3.75, 6.0, 0.30),
        "claude-haiku-4-5": (1.0, 5.0, 1.25, 2.0, 0.10),
        "claude-opus-4-5": (5.0, 25.0, 6.25, 10.0, 0.50),
        "claude-opus-4-1": (15.0, 75.0, 18.75, 30.0, 1.50),
        "claude-3-5-haiku": (0.80, 4.0, 1.0, 1.6, 0.08),
    }
    for model, rates in expected.items():
        price = SHIPPED.price(model)
        assert tuple(getattr(price, c) for c in COMPONENTS) == rates, model
    assert SHIPPED.price("claude-sonnet-4-5").status == "retired"
    assert SHIPPED.price("claude-opus-4-1").status == "retired"


@pytest.mark.parametrize(
    ("model", "input_price", "read_price", "ratio"),
    [
        # Same input price, different cache-read ratio: the sheet says which, per model.
        ("claude-sonnet-5-5", 2.0, 0.10, 0.05),
        ("claude-sonnet-5", 2.0, 0.20, 0.1),
        ("claude-opus-5-5", 4.0, 0.20, 0.05),
        ("claude-opus-5", 5.0, 0.50, 0.1),
        ("claude-haiku-5-5", 0.10, 0.01, 0.1),
        ("claude-haiku-4-5", 1.0, 0.10, 0.1),
        ("claude-fable-5-1", 10.0, 0.25, 0.025),
    ],
)
def test_cache_reads_cost_the_ratio_the_sheet_records(
    model: str, input_price: float, read_price: float, ratio: float
) -> None:
    price = SHIPPED.price(model)
    assert (price.input, price.cache_read) == (input_price, read_price)
    assert price.cache_read == pytest.approx(ratio * price.input)
    # 100,000 tokens read from the cache and nothing else (Haiku 5.5's base tier still):
    # a tenth of the read price, halved in a batch.
    usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 100_000}
    assert SHIPPED.cost_usd(model, **usage) == pytest.approx(read_price / 10, rel=1e-12)
    assert SHIPPED.cost_usd(model, **usage, batch=True) == pytest.approx(read_price / 20, rel=1e-12)


DATED = [
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("claude-opus-4-5-20251101", "claude-opus-4-5"),
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku"),  # an alias in the sheet
]


@pytest.mark.parametrize(("given", "model"), DATED)
def test_dated_ids_and_aliases_price_as_their_model(given: str, model: str) -> None:
    assert SHIPPED.resolve(given) == model
    usage = {"input_tokens": 1_200, "output_tokens": 300, "cache_read_tokens": 5_000}
    assert SHIPPED.cost_usd(given, **usage) == SHIPPED.cost_usd(model, **usage)
    assert SHIPPED.sync_cost_usd(given, prompt_tokens=6_200, output_tokens=300) == (
        SHIPPED.sync_cost_usd(model, prompt_tokens=6_200, output_tokens=300)
    )
    rows = [
        {
            "model": name,
            "requested_model": name,
            "route": "batch",
            "input_tokens": 1_200,
            "output_tokens": 300,
            "cache_write_5m_tokens": 0,
            "cache_write_1h_tokens": 800,
            "cache_read_tokens": 5_000,
        }
        for name in (given, model)
    ]
    priced = SHIPPED.with_cost_columns(pa.Table.from_pylist(rows))
    assert priced["cost_usd"][0] == priced["cost_usd"][1]
    assert priced["sync_cost_usd"][0] == priced["sync_cost_usd"][1]
    assert priced["cost_usd"][0].as_py() > 0


@pytest.mark.parametrize(
    "given",
    [
        "claude-nope-4-5-20251001",  # the undated id is not listed either
        "claude-haiku-4-5-2025100",  # seven digits: not a snapshot date
        "claude-haiku-20251001-4-5",  # a date not at the end
    ],
)
def test_ids_that_are_no_snapshot_of_a_listed_model_stay_unknown(given: str) -> None:
    assert not SHIPPED.knows(given)
    with pytest.raises(UnknownModelError, match="not in the price table"):
        SHIPPED.cost_usd(given, input_tokens=1, output_tokens=1)


# --- a malformed sheet -------------------------------------------------------------------


def _shipped_raw() -> dict[str, Any]:
    return yaml.safe_load(SHEET_TEXT)


def _write(tmp_path: Path, raw: dict[str, Any] | str, name: str = "prices.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def _break(raw: dict[str, Any], how: str) -> None:
    haiku = raw["models"]["claude-haiku-5-5"]
    if how == "missing":
        del haiku["cache_read"]
    elif how == "text":
        haiku["tiers"][0]["output"] = "2.50"
    elif how == "negative":
        raw["models"]["claude-opus-5-5"]["cache_write_1h"] = -8.0
    elif how == "typo":
        haiku["cache_reads"] = haiku.pop("cache_read")
    elif how == "alias":
        raw["aliases"]["claude-3-5-haiku-latest"] = "claude-3-haiku"
    elif how == "undated":
        del raw["checked"]


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing", r"models\.claude-haiku-5-5\.cache_read: Field required"),
        ("text", r"models\.claude-haiku-5-5\.tiers\.0\.output: Input should be a valid number"),
        ("negative", r"models\.claude-opus-5-5\.cache_write_1h: Input should be greater than"),
        ("typo", r"models\.claude-haiku-5-5\.cache_reads: Extra inputs are not permitted"),
        ("alias", r"aliases\.claude-3-5-haiku-latest: target 'claude-3-haiku' is not a listed"),
        ("undated", r"checked: Field required"),
    ],
)
def test_a_malformed_sheet_names_the_file_the_model_and_the_field(
    tmp_path: Path, how: str, message: str
) -> None:
    raw = _shipped_raw()
    _break(raw, how)
    path = _write(tmp_path, raw)
    with pytest.raises(PriceSheetError, match=rf"^price sheet {path}: .*{message}"):
        load_price_table(path)


def test_an_unreadable_sheet_says_so(tmp_path: Path) -> None:
    with pytest.raises(PriceSheetError, match="cannot read it"):
        load_price_table(tmp_path / "missing.yaml")
    with pytest.raises(PriceSheetError, match="not valid YAML"):
        load_price_table(_write(tmp_path, "models: [unclosed"))


# --- a deployment's own sheet, through Dagster ---------------------------------------------

FACTOR = 10


def _dearer_sheet(tmp_path: Path) -> Path:
    """The shipped sheet with every rate, tiers included, ``FACTOR`` times higher."""
    raw = _shipped_raw()
    raw["source"] = "https://example.test/negotiated-prices"
    for price in raw["models"].values():
        for level in [price, *price.get("tiers", [])]:
            for component in COMPONENTS:
                level[component] *= FACTOR
    return _write(tmp_path, raw, "dearer.yaml")


def _estimates_match(lake: Lake, day: str, dearer: Path) -> None:
    """Routing estimated every task with the dearer sheet: FACTOR times the shipped estimate."""
    tasks = lake.read_table([lake.path(TASKS, day, TASKS_FILE)])
    inputs = [tasks[c] for c in ("model", "prompt_chars", "max_tokens", "route")]
    expected = estimated_cost(*inputs, load_price_table(dearer))
    shipped = estimated_cost(*inputs, SHIPPED)
    assert tasks["est_cost_usd"].to_pylist() == pytest.approx(expected.to_pylist(), rel=1e-12)
    assert pc.sum(expected).as_py() == pytest.approx(FACTOR * pc.sum(shipped).as_py())
    assert pc.sum(shipped).as_py() > 0


def test_the_resource_sheet_prices_routing_results_and_the_report(
    tmp_path: Path, lake: Lake, day: str, materialize_assets, tick_sensor
) -> None:
    dearer = _dearer_sheet(tmp_path)
    LandingZone(lake).append(generate_tasks(day, 80, seed=8, rerequest_share=0.1), partition=day)
    override = {
        "cost_policy": CostPolicyResource(
            routing_policy_path=None, daily_budget_usd=None, price_sheet_path=str(dearer)
        )
    }
    cycle = ["raw_llm_events", "routed_tasks", "realtime_results", "batch_submissions"]
    run = materialize_assets(cycle, resources_override=override)
    _estimates_match(lake, day, dearer)
    for request in tick_sensor().run_requests:
        materialize_assets(
            ["batch_results", "reused_results"], request.run_config, resources_override=override
        )
    results = lake.read_table(lake.files(RESULTS, day, ".parquet"), schema=RESULTS_SCHEMA)
    assert set(results["route"].to_pylist()) == {"batch", "realtime", "reuse"}
    usage = results.drop_columns(["cost_usd", "sync_cost_usd"])
    at_shipped = SHIPPED.with_cost_columns(usage)
    for column in ("cost_usd", "sync_cost_usd"):
        assert results[column].to_pylist() == pytest.approx(
            [FACTOR * c for c in at_shipped[column].to_pylist()], rel=1e-12
        )
    realtime = at_shipped.filter(pc.equal(at_shipped["route"], "realtime"))
    answered = run.asset_materializations_for_node("realtime_results")[0].metadata
    assert answered["cost_usd"].value == pytest.approx(
        FACTOR * pc.sum(realtime["cost_usd"]).as_py(), abs=1e-5
    )
    # The report splits the saving by lever with the resource's sheet too. With the shipped
    # one, downshifting (stored all-sync minus the tokens repriced on the answering model)
    # would come out at 9/10 of the all-sync cost instead of FACTOR times the shipped split.
    report = materialize_assets(["llm_cost_report"], resources_override=override)
    meta = report.asset_materializations_for_node("llm_cost_report")[0].metadata
    shipped_split = SHIPPED.lever_savings(at_shipped)
    for lever in ("batching", "caching", "downshifting", "reuse"):
        expected = FACTOR * (pc.sum(shipped_split[f"saved_{lever}_usd"]).as_py() or 0.0)
        assert meta[f"saved_usd_{lever}"].value == pytest.approx(expected, abs=1e-5), lever
    assert meta["all_sync_cost_usd"].value > 0


def test_the_environment_variable_names_the_sheet(
    tmp_path: Path, lake: Lake, day: str, materialize_assets, monkeypatch: pytest.MonkeyPatch
) -> None:
    dearer = _dearer_sheet(tmp_path)
    monkeypatch.setenv(PRICE_SHEET_ENV, str(dearer))
    # The resource's default, and the sheet of code without resources, follow the variable.
    resource = CostPolicyResource(routing_policy_path=None, daily_budget_usd=None)
    assert resource.price_sheet_path == str(dearer)
    assert default_price_table().source == "https://example.test/negotiated-prices"
    LandingZone(lake).append(generate_tasks(day, 40, seed=8), partition=day)
    materialize_assets(
        ["raw_llm_events", "routed_tasks"], resources_override={"cost_policy": resource}
    )
    _estimates_match(lake, day, dearer)
    monkeypatch.delenv(PRICE_SHEET_ENV)
    assert default_price_table() is SHIPPED


def test_a_broken_deployment_sheet_fails_the_run_with_its_message(
    tmp_path: Path, lake: Lake, day: str, materialize_assets
) -> None:
    raw = _shipped_raw()
    _break(raw, "missing")
    broken = _write(tmp_path, raw, "broken.yaml")
    LandingZone(lake).append(generate_tasks(day, 10, seed=2), partition=day)
    override = {"cost_policy": CostPolicyResource(price_sheet_path=str(broken))}
    with pytest.raises(PriceSheetError, match=r"models\.claude-haiku-5-5\.cache_read"):
        materialize_assets(["raw_llm_events", "routed_tasks"], resources_override=override)


def test_a_policy_mapping_to_a_model_the_resource_sheet_lacks_is_refused(tmp_path: Path) -> None:
    raw = _shipped_raw()
    del raw["models"]["claude-haiku-5-5"]
    sheet = _write(tmp_path, raw, "no-haiku-5-5.yaml")
    resource = CostPolicyResource(routing_policy_path=None, price_sheet_path=str(sheet))
    # The shipped policy right-sizes to claude-haiku-5-5, which this sheet does not price.
    with pytest.raises(ValueError, match=r"model 'claude-haiku-5-5' is not in the price table"):
        resource.routing_policy()
