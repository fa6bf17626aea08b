"""The model catalog: ids resolve as the API resolves them, and retired work finds a home."""

from __future__ import annotations

from llm_pipelines.providers.catalog import ModelCatalog
from llm_pipelines.storage import Lake

LISTING = [
    {
        "id": "claude-sonnet-4-5-20250929",
        "lifecycle": "retired",
        "line": "sonnet",
        "created_at": "2025-09-29T00:00:00Z",
        "max_tokens": 64_000,
        "type": "model",
    },
    {
        "id": "claude-sonnet-5-5",
        "lifecycle": "active",
        "line": "sonnet",
        "created_at": "2026-10-01T00:00:00Z",
        "max_tokens": 128_000,
        "type": "model",
    },
    {
        "id": "claude-sonnet-5",
        "lifecycle": "active",
        "line": "sonnet",
        "created_at": "2026-03-01T00:00:00Z",
        "max_tokens": 64_000,
        "type": "model",
    },
    {
        "id": "claude-haiku-4-5-20251001",
        "lifecycle": "active",
        "line": "haiku",
        "created_at": "2025-10-01T00:00:00Z",
        "max_tokens": 64_000,
        "type": "model",
    },
    {
        "id": "claude-opus-4-5",
        "lifecycle": "deprecated",
        "line": "opus",
        "created_at": "2025-11-01T00:00:00Z",
        "max_tokens": 64_000,
        "type": "model",
    },
    {"id": "claude-mythos-preview", "lifecycle": "retired", "line": None, "type": "model"},
]


def _catalog() -> ModelCatalog:
    return ModelCatalog.from_listing(LISTING, source="test")


def test_listed_dated_and_alias_ids_resolve_to_the_listed_model() -> None:
    catalog = _catalog()
    assert catalog.resolve("claude-sonnet-5-5").id == "claude-sonnet-5-5"
    # an alias names its dated model; a dated form of a listed alias names the alias
    assert catalog.resolve("claude-haiku-4-5").id == "claude-haiku-4-5-20251001"
    assert catalog.resolve("claude-opus-4-5-20251101").id == "claude-opus-4-5"
    assert catalog.resolve("claude-3-5-haiku") is None
    accepted = catalog.accepted_ids()
    assert accepted["claude-haiku-4-5"] == accepted["claude-haiku-4-5-20251001"] == 64_000
    assert "claude-3-5-haiku" not in accepted


def test_a_retired_model_goes_to_the_named_successor_else_the_newest_active_of_its_line() -> None:
    catalog = _catalog()
    assert catalog.successor("claude-sonnet-4-5") == "claude-sonnet-5-5"  # newest, not first
    assert catalog.successor("claude-sonnet-4-5", {"claude-sonnet-4-5": "claude-sonnet-5"}) == (
        "claude-sonnet-5"
    )
    assert catalog.successor("claude-mythos-preview") is None  # no line: nowhere to go
    assert catalog.successor("claude-opus-4-5") is None  # its line has no active model


def test_the_catalog_round_trips_through_the_lake(tmp_path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    assert ModelCatalog.load(lake) is None
    catalog = _catalog()
    catalog.save(lake)
    assert ModelCatalog.load(lake) == catalog


def test_intake_refuses_retired_models_by_policy_and_leaves_out_unpriced_ones(tmp_path) -> None:
    from llm_pipelines.intake import ingest_partition
    from llm_pipelines.storage import LandingZone
    from llm_pipelines.storage.datasets import DEAD_LETTER, DEAD_LETTER_SCHEMA, EVENTS

    listing = [
        {**LISTING[0], "retires_at": "2026-11-30T00:00:00Z"},
        *LISTING[1:],
    ]
    catalog = ModelCatalog.from_listing(listing, source="test")
    priced = {"claude-sonnet-4-5", "claude-sonnet-5-5", "claude-mythos-preview"}.__contains__
    migrate = catalog.intake_models(priced)
    assert migrate["claude-sonnet-4-5"] == 64_000  # accepted: routing migrates it
    assert "claude-sonnet-5" not in migrate  # listed, but no price: cannot be reported
    assert "no successor" in str(migrate["claude-mythos-preview"])
    refuse = catalog.intake_models(priced, retired="dead_letter")
    assert refuse["claude-sonnet-4-5"] == (
        "model: claude-sonnet-4-5 was retired on 2026-11-30 (the provider's Models API) and "
        "the routing policy dead-letters work for retired models; send it to a current model "
        "such as claude-sonnet-5-5"
    )
    lake = Lake(str(tmp_path / "lake"))
    day = "2026-11-23"
    task = {"task_type": "t", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    LandingZone(lake).append(
        [{**task, "model": "claude-sonnet-4-5"}, {**task, "model": "claude-sonnet-5-5"}],
        partition=day,
    )
    stats = ingest_partition(lake, day, models=refuse)
    assert (stats.valid, stats.invalid) == (1, 1)
    assert lake.read_table(lake.files(EVENTS, day))["model"].to_pylist() == ["claude-sonnet-5-5"]
    dead = lake.read_table(lake.files(DEAD_LETTER, day), schema=DEAD_LETTER_SCHEMA)
    assert dead["reason"].to_pylist() == [refuse["claude-sonnet-4-5"]]


def test_the_catalog_asset_reads_the_models_api_and_reports_lifecycle_changes(
    resources, tmp_path
) -> None:
    """Through Dagster and the SDK against the emulator's Models API: retired models are
    listed too (they are only when asked for), and a change since the last refresh warns."""
    import dagster as dg

    from llm_pipelines.assets.catalog import model_catalog

    lake = resources["lake"].lake()
    stale = ModelCatalog.from_listing(
        [{"id": "claude-sonnet-4-5-20250929", "lifecycle": "active", "line": "sonnet"}],
        source="old",
    )
    stale.save(lake)
    result = dg.materialize([model_catalog], resources=resources)
    metadata = result.asset_materializations_for_node("model_catalog")[0].metadata
    catalog = ModelCatalog.load(lake)
    assert catalog is not None and catalog.source == "emulator-in-process"
    assert metadata["models"].value == len(catalog.models)
    assert metadata["retired"].value >= 1 and metadata["active"].value >= 3
    assert catalog.resolve("claude-sonnet-4-5").lifecycle == "retired"
    assert catalog.resolve("claude-haiku-5-5").lifecycle == "active"
    assert catalog.resolve("claude-haiku-5-5").max_tokens
    assert "claude-sonnet-4-5-20250929: active → retired" in metadata["lifecycle_changes"].value
    # The sonnet line's newest active model takes a retired Sonnet's work.
    assert catalog.successor("claude-sonnet-4-5") == "claude-sonnet-5-5"
