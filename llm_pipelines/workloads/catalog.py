"""Catalog generation: a day's new products → one description task each → descriptions joined
back to the products.

Copy this module to start a workload of your own: a source table (``products``), a producer
that lands one task per row with the shared prompt as a cacheable prefix
(``catalog_description_tasks``), and a consumer that joins the results back and reports every
row that did not get one (``catalog_descriptions``), plus its nightly schedule and the sensor
that runs the consumer once the day's batches are in.
"""

from functools import cache
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.assets.dispatch import batch_results, realtime_results
from llm_pipelines.resources import LakeResource
from llm_pipelines.storage.lake import Lake
from llm_pipelines.tasks import ChatMessage, LLMTask
from llm_pipelines.workloads.common import (
    FAILED,
    MISSING,
    OUTPUTS,
    SOURCES,
    SUCCEEDED,
    asset_factory,
    cost_metadata,
    count_by,
    coverage_check,
    land_source_rows,
    outcomes_for,
    problems_markdown,
    read_table,
    replace_column,
    results_sensor,
    when_settled,
    workload_jobs,
    workload_metadata,
    write_table,
)
from llm_pipelines.workloads.samples import (
    MATERIALS_CARE,
    bundled_text,
    example_products,
    generate_products,
)

WORKLOAD = "catalog"
workload_asset = asset_factory(WORKLOAD, owners=["team:catalog"])
MODEL = "claude-haiku-5-5"
"""A small model: product copy from structured facts does not need a larger one."""
TASK_TYPE = "catalog_description"
MAX_TOKENS = 300
"""120 words is about 160 tokens; the rest is headroom, so few answers are cut short."""
FEW_SHOT_EXAMPLES = 17
"""Enough worked examples to make the shared prefix long enough for the model to cache."""
TRUNCATED = "truncated"
"""A description the model did not finish (the result row's ``complete`` is false: cut short
by ``max_tokens`` or the context window, or paused): answered, but not publishable as is;
``detail`` names the stop reason."""
REFUSED = "refused"
"""The model declined to describe the product (``stop_reason`` ``refusal``): a retry gets
the same answer, so the product needs a person; ``detail`` has the refusal's category."""


class ProductsConfig(dg.Config):
    """How many products the sample catalog adds per day (replace with your own table)."""

    count: int = 40
    seed: int = 7


class CatalogTasksConfig(dg.Config):
    """The model and output budget of description tasks."""

    model: str = MODEL
    max_tokens: int = MAX_TOKENS


def product_facts(product: dict[str, Any]) -> str:
    """A product row as the fact list the model writes from."""
    return "\n".join(
        [
            f"- title: {product['title']}",
            f"- category: {product['category']}",
            f"- material: {product['material']}",
            f"- colour: {product['colour']}",
            f"- dimensions (W x H x D): {product['width_cm']} x {product['height_cm']} x "
            f"{product['depth_cm']} cm",
            f"- weight: {product['weight_kg']} kg",
            f"- features: {product['features']}",
        ]
    )


def _example_description(product: dict[str, Any]) -> str:
    item = product["title"].split(" ", 1)[1]
    features = product["features"].split("; ")
    return (
        f"You get a {item} built around what you use every day: {features[0]}, "
        f"{features[1]} and {features[2]}. The {product['material']} body is chosen to last "
        f"through daily use and keeps its {product['colour']} finish looking even. It measures "
        f"{product['width_cm']} x {product['height_cm']} x {product['depth_cm']} cm and weighs "
        f"{product['weight_kg']} kg, so check the space you have in mind before you order. To "
        f"look after it, {MATERIALS_CARE[product['material']]}. It is a {item} you set up once "
        f"and then stop thinking about."
    )


@cache
def system_prompt() -> str:
    """The shared prefix of every description task: style guide, glossary, worked examples.

    Identical for every task, so the routing policy puts a cache breakpoint on it and every
    request after the first in a batch reads it from the prompt cache.
    """
    glossary = "\n".join(f"- **{m}**: {care}." for m, care in MATERIALS_CARE.items())
    examples = "\n\n".join(
        f"Product data:\n{product_facts(p)}\n\nDescription:\n{_example_description(p)}"
        for p in example_products(FEW_SHOT_EXAMPLES)
    )
    return (
        f"{bundled_text('catalog_style_guide.md')}\n"
        f"## Materials glossary (care instructions)\n\n{glossary}\n\n"
        f"## Worked examples\n\n{examples}\n"
    )


def description_task(
    product: dict[str, Any], partition: str, config: CatalogTasksConfig
) -> LLMTask:
    """The description task of one product: idempotent by product and day."""
    return LLMTask(
        task_id=f"catalog-{partition}-{product['product_id']}",
        task_type=TASK_TYPE,
        model=config.model,
        system=system_prompt(),
        messages=[
            ChatMessage(
                role="user",
                content=f"Write the description for this product.\n\n{product_facts(product)}",
            )
        ],
        max_tokens=config.max_tokens,
        metadata=workload_metadata(WORKLOAD, product["product_id"]),
    )


@workload_asset(
    kinds={"python", "parquet"},
    description=(
        "Source table: the products added or changed on the day (sample data, generated "
        "deterministically; point this at your product table)."
    ),
)
def products(
    context: dg.AssetExecutionContext, config: ProductsConfig, lake: LakeResource
) -> dg.MaterializeResult:
    table = generate_products(context.partition_key, config.count, seed=config.seed)
    write_table(lake.lake(), SOURCES, "products", context.partition_key, table)
    return dg.MaterializeResult(
        metadata={
            "products": table.num_rows,
            "categories": len(pc.unique(table["category"])),
            "mean_list_price_eur": round(pc.mean(table["list_price_eur"]).as_py() or 0.0, 2),
            "dagster/row_count": table.num_rows,
        }
    )


@workload_asset(
    kinds={"python", "json"},
    deps=[products],
    description=(
        "Producer: one description task per product into the landing zone (small model; the "
        "style guide and worked examples are one shared, cacheable system prompt). Keeps its "
        "own record of the tasks it landed."
    ),
)
def catalog_description_tasks(
    context: dg.AssetExecutionContext, config: CatalogTasksConfig, lake: LakeResource
) -> dg.MaterializeResult:
    partition = context.partition_key
    landed = land_source_rows(
        lake.lake(),
        partition,
        "catalog_description_tasks",
        source="products",
        key="product_id",
        make_task=lambda product: description_task(product, partition, config),
    )
    return dg.MaterializeResult(
        metadata={**landed.metadata(), "shared_prefix_chars": len(system_prompt())}
    )


def descriptions_table(lake: Lake, partition: str) -> pa.Table:
    """Products joined with their descriptions; truncated, refused, failed and missing rows
    kept."""
    joined = outcomes_for(
        lake,
        partition,
        "catalog_description_tasks",
        read_table(lake, SOURCES, "products", partition),
        "product_id",
    )
    cut = pc.and_kleene(  # Kleene: a row without a result is "not cut", never null
        pc.equal(joined["status"], SUCCEEDED), pc.invert(joined["complete"])
    )
    refused = pc.equal(joined["stop_reason"], "refusal")
    status = pc.if_else(cut, pc.if_else(refused, REFUSED, TRUNCATED), joined["status"])
    why = pc.if_else(
        pc.equal(joined["stop_reason"], "max_tokens"),
        "answer reached max_tokens before it ended",
        pc.if_else(
            refused,
            pc.binary_join_element_wise(
                "the model refused: ", pc.fill_null(joined["stop_details"], "{}"), ""
            ),
            pc.binary_join_element_wise(
                "answer stopped with stop_reason ", joined["stop_reason"], ""
            ),
        ),
    )
    detail = pc.if_else(cut, why, joined["detail"])
    text = joined["output_text"]
    words = pc.list_value_length(pc.utf8_split_whitespace(pc.fill_null(text, "")))
    table = replace_column(replace_column(joined, "status", status), "detail", detail)
    return (
        table.drop_columns(["output_text"])
        .append_column("description", text)
        .append_column("word_count", words)
    )


@workload_asset(
    kinds={"python", "parquet"},
    deps=[products, catalog_description_tasks, batch_results, realtime_results],
    check_specs=[
        dg.AssetCheckSpec(
            "every_product_has_a_row",
            asset="catalog_descriptions",
            description="One output row per product of the day: none dropped, none doubled.",
        ),
        dg.AssetCheckSpec(
            "every_product_described",
            asset="catalog_descriptions",
            description="Every product got a complete description (warns otherwise).",
        ),
    ],
    description=(
        "Consumer: product descriptions joined back to the products on task_id. Rows whose "
        "answer failed, is missing or was cut short stay in the table with their status and "
        "the reason, and are counted in the metadata."
    ),
)
def catalog_descriptions(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> dg.MaterializeResult:
    store = lake.lake()
    partition = context.partition_key
    table = descriptions_table(store, partition)
    write_table(store, OUTPUTS, "catalog_descriptions", partition, table)
    counts = count_by(table["status"], (SUCCEEDED, TRUNCATED, REFUSED, FAILED, MISSING))
    products_count = read_table(store, SOURCES, "products", partition).num_rows
    described = table.filter(pc.equal(table["status"], SUCCEEDED))
    return dg.MaterializeResult(
        metadata={
            "products": products_count,
            "described": counts[SUCCEEDED],
            "truncated": counts[TRUNCATED],
            "refused": counts[REFUSED],
            "failed": counts[FAILED],
            "missing": counts[MISSING],
            "mean_words": round(pc.mean(described["word_count"]).as_py() or 0.0, 1),
            **cost_metadata(table),
            "dagster/row_count": table.num_rows,
            "not_described": dg.MetadataValue.md(problems_markdown(table, "product_id")),
        },
        check_results=[
            coverage_check("every_product_has_a_row", table, ["product_id"], products_count),
            dg.AssetCheckResult(
                check_name="every_product_described",
                passed=counts[SUCCEEDED] == products_count,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={k: v for k, v in counts.items() if k != SUCCEEDED},
            ),
        ],
    )


jobs = workload_jobs(
    WORKLOAD,
    produce=[products, catalog_description_tasks],
    consume=[catalog_descriptions],
    minute_past_one=0,
    tasks="description tasks",
)

catalog_sensor = results_sensor(
    name="catalog_sensor",
    jobs=[jobs.consume],
    plan=when_settled("catalog_description_tasks", "catalog_descriptions", jobs.consume.name),
    description=(
        "Watches new batch and real-time results; once a day's description tasks all have a "
        "result or a dead letter, materializes catalog_descriptions for that day."
    ),
)

ASSETS = [products, catalog_description_tasks, catalog_descriptions]
PRODUCERS = [catalog_description_tasks]
JOBS = [jobs.produce, jobs.consume]
SCHEDULES = [jobs.nightly]
SENSORS = [catalog_sensor]
