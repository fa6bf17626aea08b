"""Nightly analytics: a day's support tickets → one triage task each (structured JSON answer)
→ a per-ticket triage table → a daily insights table (counts by category, sentiment, urgency
and top issues).

The answer is asked for as a structured output (``output_config.format``: the JSON Schema of
:class:`TicketTriage`), not a schema pasted in the prompt; the consumer validates it with the
same pydantic model, and an answer that does not parse is kept and reported as ``unparsed``,
never dropped and never a crash.
"""

import re
from functools import cache
from typing import Any, Literal, get_args

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

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
    json_output,
    land_source_rows,
    outcomes_for,
    parse_answer,
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
    ISSUES,
    bundled_text,
    example_tickets,
    generate_tickets,
)

WORKLOAD = "support_analytics"
workload_asset = asset_factory(WORKLOAD, owners=["team:support-analytics"])
MODEL = "claude-haiku-5-5"
"""Triage into fixed labels is classification: a small model does it well."""
TASK_TYPE = "ticket_triage"
MAX_TOKENS = 200
FEW_SHOT_EXAMPLES = 48
"""Labelled examples in the shared prefix: steadier labels, and a prefix long enough to cache."""
UNPARSED = "unparsed"
"""An answer came back but is not valid JSON for :class:`TicketTriage`."""
TOP_ISSUES = 5

Category = Literal["billing", "shipping", "product", "account", "other"]
IssueLabel = Literal[tuple(ISSUES)]  # type: ignore[valid-type]


class TicketTriage(BaseModel):
    """The structured answer of one triage task, asked for as a structured output."""

    model_config = ConfigDict(extra="forbid")

    category: Category
    issue: IssueLabel
    sentiment: Literal["negative", "neutral", "positive"]
    urgency: Literal["low", "medium", "high"]
    summary: str = Field(max_length=140)


LABELS = ("category", "issue", "sentiment", "urgency")
TRIAGE_COLUMNS = [*LABELS, "summary"]


class TicketsConfig(dg.Config):
    """How many tickets the sample help desk receives per day (replace with your own table)."""

    count: int = 60
    seed: int = 7


class TriageTasksConfig(dg.Config):
    """The model and output budget of triage tasks."""

    model: str = MODEL
    max_tokens: int = MAX_TOKENS


def ticket_prompt(ticket: dict[str, Any]) -> str:
    """A ticket as the model reads it."""
    return (
        f"Ticket {ticket['ticket_id']} ({ticket['channel']}, {ticket['customer_tier']} "
        f"customer)\nSubject: {ticket['subject']}\n\n{ticket['body']}"
    )


@cache
def system_prompt() -> str:
    """The shared prefix: triage guide and labelled examples (the answer's form is the
    request's structured output format, not prompt text)."""
    examples = []
    for example in example_tickets(FEW_SHOT_EXAMPLES):
        order = re.search(r"NW-\d{8}", example.row["body"])
        answer = TicketTriage(
            category=example.category,  # type: ignore[arg-type]
            issue=example.issue,
            sentiment=example.sentiment,  # type: ignore[arg-type]
            urgency=example.urgency,  # type: ignore[arg-type]
            summary=f"{example.issue.capitalize()}" + (f", order {order[0]}" if order else ""),
        )
        examples.append(f"{ticket_prompt(example.row)}\n\nAnswer:\n{answer.model_dump_json()}")
    return f"{bundled_text('support_triage_guide.md')}\n## Labelled examples\n\n" + "\n\n".join(
        examples
    )


def triage_task(ticket: dict[str, Any], partition: str, config: TriageTasksConfig) -> LLMTask:
    """The triage task of one ticket: idempotent by ticket."""
    return LLMTask(
        task_id=f"triage-{ticket['ticket_id']}",
        task_type=TASK_TYPE,
        model=config.model,
        system=system_prompt(),
        messages=[ChatMessage(role="user", content=ticket_prompt(ticket))],
        max_tokens=config.max_tokens,
        output_config=json_output(TicketTriage),
        metadata=workload_metadata(WORKLOAD, ticket["ticket_id"], day=partition),
    )


@workload_asset(
    kinds={"python", "parquet"},
    description=(
        "Source table: the support tickets received on the day (sample data, generated "
        "deterministically; point this at your help desk export)."
    ),
)
def support_tickets(
    context: dg.AssetExecutionContext, config: TicketsConfig, lake: LakeResource
) -> dg.MaterializeResult:
    table = generate_tickets(context.partition_key, config.count, seed=config.seed)
    write_table(lake.lake(), SOURCES, "support_tickets", context.partition_key, table)
    channels = pc.value_counts(table["channel"]).to_pylist()
    return dg.MaterializeResult(
        metadata={
            "tickets": table.num_rows,
            **{f"channel_{c['values']}": c["counts"] for c in channels},
            "dagster/row_count": table.num_rows,
        }
    )


@workload_asset(
    kinds={"python", "json"},
    deps=[support_tickets],
    description=(
        "Producer: one triage task per ticket into the landing zone. The prompt gives the "
        "answer's JSON Schema and labelled examples, shared by every task as a cacheable "
        "prefix; a small model classifies."
    ),
)
def support_ticket_tasks(
    context: dg.AssetExecutionContext, config: TriageTasksConfig, lake: LakeResource
) -> dg.MaterializeResult:
    partition = context.partition_key
    landed = land_source_rows(
        lake.lake(),
        partition,
        "support_ticket_tasks",
        source="support_tickets",
        key="ticket_id",
        make_task=lambda ticket: triage_task(ticket, partition, config),
    )
    return dg.MaterializeResult(
        metadata={**landed.metadata(), "shared_prefix_chars": len(system_prompt())}
    )


def triage_table(lake: Lake, partition: str) -> pa.Table:
    """Tickets joined with their parsed triage; unparsed, failed and missing rows kept."""
    joined = outcomes_for(
        lake,
        partition,
        "support_ticket_tasks",
        read_table(lake, SOURCES, "support_tickets", partition),
        "ticket_id",
    )
    parsed: dict[str, list[Any]] = {c: [] for c in TRIAGE_COLUMNS}
    statuses, details = joined["status"].to_pylist(), joined["detail"].to_pylist()
    for index, text in enumerate(joined["output_text"].to_pylist()):
        answer = None
        if statuses[index] == SUCCEEDED:
            answer, problem = parse_answer(text, TicketTriage)
            if answer is None:
                statuses[index], details[index] = UNPARSED, problem
        for column in TRIAGE_COLUMNS:
            parsed[column].append(getattr(answer, column) if answer else None)
    table = replace_column(joined, "status", pa.array(statuses, pa.string()))
    table = replace_column(table, "detail", pa.array(details, pa.string()))
    # The raw answer is kept only where it could not be parsed: that is where someone looks.
    raw = pc.if_else(
        pc.equal(table["status"], UNPARSED), table["output_text"], pa.scalar(None, pa.string())
    )
    table = table.drop_columns(["output_text"]).append_column("unparsed_answer", raw)
    for column in TRIAGE_COLUMNS:
        table = table.append_column(column, pa.array(parsed[column], pa.string()))
    return table


def status_counts(table: pa.Table) -> dict[str, int]:
    """Rows by status, every status present."""
    return count_by(table["status"], (SUCCEEDED, UNPARSED, FAILED, MISSING))


@workload_asset(
    kinds={"python", "parquet"},
    deps=[support_tickets, support_ticket_tasks, batch_results, realtime_results],
    check_specs=[
        dg.AssetCheckSpec(
            "every_ticket_has_a_row",
            asset="support_ticket_triage",
            description="One row per ticket of the day: none dropped, none doubled.",
        )
    ],
    description=(
        "Consumer: every ticket with its triage (category, issue, sentiment, urgency, "
        "summary), joined on task_id. Answers that are not valid JSON are kept as 'unparsed' "
        "with the raw answer and the parse error; failed and missing answers keep their reason."
    ),
)
def support_ticket_triage(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> dg.MaterializeResult:
    store = lake.lake()
    partition = context.partition_key
    table = triage_table(store, partition)
    write_table(store, OUTPUTS, "support_ticket_triage", partition, table)
    tickets = read_table(store, SOURCES, "support_tickets", partition).num_rows
    counts = status_counts(table)
    return dg.MaterializeResult(
        metadata={
            "tickets": tickets,
            "triaged": counts[SUCCEEDED],
            "unparsed": counts[UNPARSED],
            "failed": counts[FAILED],
            "missing": counts[MISSING],
            **cost_metadata(table),
            "dagster/row_count": table.num_rows,
            "not_triaged": dg.MetadataValue.md(problems_markdown(table, "ticket_id")),
        },
        check_results=[coverage_check("every_ticket_has_a_row", table, ["ticket_id"], tickets)],
    )


INSIGHTS_SCHEMA = pa.schema(
    [
        pa.field("dimension", pa.string(), nullable=False),
        pa.field("value", pa.string(), nullable=False),
        pa.field("tickets", pa.int64(), nullable=False),
        pa.field("share_pct", pa.float64(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
    ]
)


def insights_table(triage: pa.Table) -> pa.Table:
    """Counts per label value (over triaged tickets) and per status (over all tickets)."""
    rows: list[dict[str, Any]] = []
    triaged = triage.filter(pc.equal(triage["status"], SUCCEEDED))
    for dimension, source in [*((d, triaged) for d in LABELS), ("status", triage)]:
        counts = sorted(
            pc.value_counts(source[dimension]).to_pylist(),
            key=lambda c: (-c["counts"], c["values"]),
        )
        for rank, count in enumerate(counts, start=1):
            rows.append(
                {
                    "dimension": dimension,
                    "value": count["values"],
                    "tickets": count["counts"],
                    "share_pct": round(100 * count["counts"] / source.num_rows, 2),
                    "rank": rank,
                }
            )
    return pa.Table.from_pylist(rows, schema=INSIGHTS_SCHEMA)


def _count(insights: pa.Table, dimension: str, value: str) -> int:
    hit = insights.filter(
        pc.and_(pc.equal(insights["dimension"], dimension), pc.equal(insights["value"], value))
    )
    return int(hit["tickets"][0].as_py()) if hit.num_rows else 0


@workload_asset(
    kinds={"python", "parquet"},
    deps=[support_ticket_triage],
    description=(
        "The daily insights table: tickets by category, issue (ranked: the top issues), "
        "sentiment, urgency and triage status, with shares; plotted across days in the UI."
    ),
)
def support_daily_insights(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> dg.MaterializeResult:
    store = lake.lake()
    partition = context.partition_key
    triage = read_table(store, OUTPUTS, "support_ticket_triage", partition)
    insights = insights_table(triage)
    write_table(store, OUTPUTS, "support_daily_insights", partition, insights)
    triaged = _count(insights, "status", SUCCEEDED)
    issues = insights.filter(pc.equal(insights["dimension"], "issue")).slice(0, TOP_ISSUES)
    top = "\n".join(
        f"| {r['rank']} | {r['value']} | {r['tickets']} | {r['share_pct']} |"
        for r in issues.to_pylist()
    )
    categories = {f"category_{c}": _count(insights, "category", c) for c in get_args(Category)}
    return dg.MaterializeResult(
        metadata={
            "tickets": triage.num_rows,
            "triaged": triaged,
            "not_triaged": triage.num_rows - triaged,
            **categories,
            "negative_share_pct": round(
                100 * _count(insights, "sentiment", "negative") / triaged, 2
            )
            if triaged
            else 0.0,
            "high_urgency": _count(insights, "urgency", "high"),
            "top_issue_tickets": int(issues["tickets"][0].as_py()) if issues.num_rows else 0,
            **cost_metadata(triage),
            "dagster/row_count": insights.num_rows,
            "top_issues": dg.MetadataValue.md(
                "| rank | issue | tickets | share % |\n|---|---|---|---|\n" + top
            ),
        }
    )


jobs = workload_jobs(
    WORKLOAD,
    produce=[support_tickets, support_ticket_tasks],
    consume=[support_ticket_triage, support_daily_insights],
    minute_past_one=10,
    tasks="triage tasks",
)

support_analytics_sensor = results_sensor(
    name="support_analytics_sensor",
    jobs=[jobs.consume],
    plan=when_settled("support_ticket_tasks", "support_ticket_triage", jobs.consume.name),
    description=(
        "Watches new batch and real-time results; once a day's triage tasks all have a "
        "result or a dead letter, builds support_ticket_triage and support_daily_insights."
    ),
)

ASSETS = [support_tickets, support_ticket_tasks, support_ticket_triage, support_daily_insights]
PRODUCERS = [support_ticket_tasks]
JOBS = [jobs.produce, jobs.consume]
SCHEDULES = [jobs.nightly]
SENSORS = [support_analytics_sensor]
