"""The model catalog as an asset: the provider's Models API, refreshed daily, kept in the lake."""

from collections import Counter

import dagster as dg

from llm_pipelines.assets.partitions import OWNERS
from llm_pipelines.providers.catalog import ModelCatalog
from llm_pipelines.resources import AnthropicResource, LakeResource


def fetch_catalog(anthropic: AnthropicResource) -> ModelCatalog:
    """Every model the provider lists now, retired ones included (they are listed only when
    asked for, and routing needs them to move their work); the SDK pages through it."""
    client = anthropic.client()
    listing = client.models.list(limit=100, lifecycle=["active", "deprecated", "retired"])
    return ModelCatalog.from_listing(listing, source=anthropic.mode)


def current_catalog(lake: LakeResource, anthropic: AnthropicResource) -> ModelCatalog:
    """The catalog in the lake; fetched and saved first if the lake has none yet, so a new
    deployment's first day does not wait for the schedule."""
    stored = ModelCatalog.load(lake.lake())
    if stored is not None:
        return stored
    catalog = fetch_catalog(anthropic)
    catalog.save(lake.lake())
    return catalog


@dg.asset(
    group_name="llm_catalog",
    kinds={"anthropic", "json"},
    owners=OWNERS,
    description=(
        "The provider's models as its Models API lists them: ids, lifecycle (active, "
        "deprecated, retired, with dates), line, max_tokens and context window. Intake "
        "rejects unknown ids and max_tokens over a model's ceiling by it; routing migrates "
        "or dead-letters work for retired models by it. Refreshed daily."
    ),
)
def model_catalog(
    context: dg.AssetExecutionContext, lake: LakeResource, anthropic: AnthropicResource
) -> dg.MaterializeResult:
    catalog = fetch_catalog(anthropic)
    previous = ModelCatalog.load(lake.lake())
    path = catalog.save(lake.lake())
    lifecycles = Counter(model.lifecycle for model in catalog.models)
    deprecated = sorted(m.id for m in catalog.models if m.lifecycle == "deprecated")
    changed = []
    if previous is not None:
        before = {m.id: m.lifecycle for m in previous.models}
        changed = [
            f"{m.id}: {before.get(m.id, 'new')} → {m.lifecycle}"
            for m in catalog.models
            if before.get(m.id) != m.lifecycle
        ]
    for change in changed:
        context.log.warning(f"model lifecycle changed: {change}")
    return dg.MaterializeResult(
        metadata={
            "models": len(catalog.models),
            "active": lifecycles["active"],
            "deprecated": lifecycles["deprecated"],
            "retired": lifecycles["retired"],
            "deprecated_models": dg.MetadataValue.json(deprecated),
            "lifecycle_changes": dg.MetadataValue.json(changed),
            "source": catalog.source,
            "path": dg.MetadataValue.path(path),
        }
    )
