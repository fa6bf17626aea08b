"""What every workload shares: where its tables live, landing its tasks, reading their outcomes
back, cost metadata, parsing structured answers, and the sensor that runs its consumers.

A workload is a producer and a consumer of the shared pipeline. Its producer lands tasks
through :class:`~llm_pipelines.storage.LandingZone` and keeps its own record of them (task id,
source key), so its consumer can tell, for every task it asked for, whether it got an answer,
a failure (with the dead letter's reason) or nothing yet — nothing is dropped silently.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dagster as dg
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationError

from llm_pipelines.assets.partitions import DAILY
from llm_pipelines.dispatch.collect import in_flight
from llm_pipelines.dispatch.submit import sidecar_ids
from llm_pipelines.resources import LakeResource
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    LANDING,
    RESULTS,
    RESULTS_SCHEMA,
    TASKS,
    TASKS_SCHEMA,
    dead_letter_path,
    write_rows,
)
from llm_pipelines.storage.lake import Lake
from llm_pipelines.storage.landing import LandingZone
from llm_pipelines.tasks import LLMTask, prompt_chars

SOURCES = "sources"
"""``sources/<table>/dt=D/<table>.parquet``: the tables workloads start from."""
WORKLOAD_TASKS = "workload_tasks"
"""``workload_tasks/<producer>/dt=D/tasks.parquet``: what each producer asked for."""
OUTPUTS = "workload_outputs"
"""``workload_outputs/<asset>/dt=D/<asset>.parquet``: what each workload delivers."""

SUCCEEDED, FAILED, MISSING = "succeeded", "failed", "missing"
"""A task's status in a workload output: answered, dead-lettered, or neither (yet)."""

PRODUCED_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("source_key", pa.string(), nullable=False),  # the source row it came from
        pa.field("task_type", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_chars", pa.int64(), nullable=False),
        pa.field("metadata", pa.string()),  # the task's metadata, JSON
    ]
)

RESULT_COLUMNS = [
    "task_id",
    "route",
    "model",
    "requested_model",
    "stop_reason",
    "stop_details",
    "complete",
    "output_text",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cost_usd",
    "sync_cost_usd",
]
"""The result columns a consumer reads back (``task_id`` first: the join key)."""


def asset_factory(workload: str, owners: list[str]) -> Callable[..., Any]:
    """``dg.asset`` preset with what every asset of one workload shares: daily partitions, the
    workload's group, its owners and a ``workload`` tag. Each asset adds kinds, deps and its
    description."""
    return functools.partial(
        dg.asset,
        partitions_def=DAILY,
        group_name=workload,
        owners=owners,
        tags={"workload": workload},
    )


def table_path(lake: Lake, area: str, name: str, partition: str) -> str:
    """``<area>/<name>/dt=<partition>/<name>.parquet`` (tasks records: ``tasks.parquet``)."""
    file = "tasks.parquet" if area == WORKLOAD_TASKS else f"{name}.parquet"
    return lake.path(f"{area}/{name}", partition, file)


def existing_table_path(lake: Lake, area: str, name: str, partition: str) -> str:
    """:func:`table_path`, with a clear error if the asset that writes it has not run."""
    path = table_path(lake, area, name, partition)
    if not lake.exists(path):
        raise FileNotFoundError(f"{path} does not exist: materialize {name} for {partition} first")
    return path


def read_table(lake: Lake, area: str, name: str, partition: str) -> pa.Table:
    """One (day-sized) workload table of a partition."""
    return lake.read_table([existing_table_path(lake, area, name, partition)])


def write_table(lake: Lake, area: str, name: str, partition: str, table: pa.Table) -> str:
    """Write one workload table atomically (a re-run replaces it) and return its path."""
    path = table_path(lake, area, name, partition)
    lake.write_table(path, table)
    return path


# -- producing ---------------------------------------------------------------------------------


@dataclass
class Landed:
    """What a producer landed."""

    tasks: int
    landing_files: int
    prompt_chars: int
    models: dict[str, int]

    def metadata(self) -> dict[str, Any]:
        """Numeric metadata for the producer's materialization."""
        return {
            "tasks": self.tasks,
            "landing_files": self.landing_files,
            "prompt_chars": self.prompt_chars,
            "est_prompt_tokens": self.prompt_chars // 4,
            **{f"tasks_{model}": n for model, n in sorted(self.models.items())},
            "dagster/row_count": self.tasks,
        }


def land_tasks(
    lake: Lake, partition: str, producer: str, tasks: Iterable[tuple[str, LLMTask]]
) -> Landed:
    """Land ``(source_key, task)`` pairs and record them under ``workload_tasks/<producer>``.

    The landing flush is named after the producer and partition, so re-running the producer
    replaces its landing files instead of landing every task twice. Tasks are streamed: the
    record is written alongside the landing file, in bounded chunks.
    """
    flush = f"{producer}-{partition}"
    models: dict[str, int] = {}
    chars = 0
    record = table_path(lake, WORKLOAD_TASKS, producer, partition)

    with write_rows(lake, record, PRODUCED_SCHEMA, keep_empty=True) as rows:

        def tee() -> Iterator[LLMTask]:
            nonlocal chars
            for source_key, task in tasks:
                assert task.task_id is not None, "workload tasks carry their own task_id"
                size = prompt_chars(task.request_params())
                chars += size
                models[task.model] = models.get(task.model, 0) + 1
                rows.add(
                    {
                        "task_id": task.task_id,
                        "source_key": source_key,
                        "task_type": task.task_type,
                        "model": task.model,
                        "prompt_chars": size,
                        "metadata": orjson.dumps(task.metadata).decode(),
                    }
                )
                yield task

        written = LandingZone(lake).append(tee(), partition=partition, flush_id=flush)
    # A smaller re-run writes fewer files: remove this producer's files it did not rewrite.
    for path in lake.files(LANDING, partition, ".jsonl"):
        if path.rsplit("/", 1)[1].startswith(f"{flush}-") and path not in written:
            lake.delete(path)
    return Landed(sum(models.values()), len(written), chars, models)


def land_source_rows(
    lake: Lake,
    partition: str,
    producer: str,
    *,
    source: str,
    key: str,
    make_task: Callable[[dict[str, Any]], LLMTask],
) -> Landed:
    """Land one task per row of a source table (``make_task(row)``, keyed by ``row[key]``),
    reading the table in bounded record batches."""
    path = existing_table_path(lake, SOURCES, source, partition)

    def pairs() -> Iterator[tuple[str, LLMTask]]:
        for batch in lake.iter_batches([path]):
            for row in batch.to_pylist():
                yield str(row[key]), make_task(row)

    return land_tasks(lake, partition, producer, pairs())


def workload_metadata(workload: str, source_key: str, **extra: str) -> dict[str, str]:
    """The metadata every workload task carries: whose it is and which source row it serves."""
    return {"workload": workload, "source_key": source_key, **extra}


# -- reading outcomes back -----------------------------------------------------------------------


class Stage:
    """Where a workload's task is in the shared pipeline (finer than its status)."""

    RESULT = "result"
    DEAD_LETTER = "dead_letter"
    IN_FLIGHT = "in_flight"  # in a submitted batch that has not been collected
    ROUTED = "routed"  # routed, not yet submitted or answered
    LANDED = "landed"  # in the landing zone, not yet through intake


def _filtered(
    lake: Lake, paths: list[str], columns: list[str], ids: pa.Array, schema: pa.Schema
) -> pa.Table:
    # Stream every file, keep only this workload's rows: memory follows the workload's size,
    # not the partition's.
    chunks = [
        chunk.filter(pc.is_in(chunk["task_id"], value_set=ids))
        for chunk in lake.iter_batches(paths, columns)
    ]
    if not chunks:
        return pa.schema([schema.field(c) for c in columns]).empty_table()
    return pa.Table.from_batches(chunks).combine_chunks()


def _rejected_at_intake(lake: Lake, partition: str, ids: pa.Array) -> pa.Table:
    """Intake dead letters of these tasks. Intake rejects a line before it has a task id, so
    the id is read back from the payload (a workload task always carries its own)."""
    found: dict[str, list[str]] = {"task_id": [], "stage": [], "reason": []}
    wanted = set(ids.to_pylist())
    path = dead_letter_path(lake, partition, "intake", "partition")
    batches = lake.iter_batches([path], ["payload", "reason"]) if lake.exists(path) else ()
    for batch in batches:
        for payload, reason in zip(
            batch["payload"].to_pylist(), batch["reason"].to_pylist(), strict=True
        ):
            try:
                task_id = orjson.loads(payload or "").get("task_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue  # not JSON, or not an object: not one of ours
            if task_id in wanted:
                found["task_id"].append(task_id)
                found["stage"].append("intake")
                found["reason"].append(reason)
    fields = [DEAD_LETTER_SCHEMA.field(name) for name in found]
    return pa.table(found, schema=pa.schema(fields))


def _first_per_id(table: pa.Table) -> pa.Table:
    """One row per task id (the first), should a task ever have two."""
    if table.num_rows == 0:
        return table
    unique = pc.unique(table["task_id"])
    return table.take(pc.index_in(unique, value_set=table["task_id"]))


def task_outcomes(
    lake: Lake, partition: str, task_ids: pa.Array, result_columns: Sequence[str] = RESULT_COLUMNS
) -> pa.Table:
    """For every id in ``task_ids`` (in that order): its stage, status, detail and result.

    ``status`` is ``succeeded`` (a result row), ``failed`` (a dead letter; ``detail`` holds
    its stage and reason) or ``missing`` (``detail`` says where the task is waiting).
    ``result_columns`` are joined from the result row (null unless succeeded); pass
    ``["task_id"]`` to learn only where tasks are.
    """
    ids = task_ids.cast(pa.string())
    columns = list(dict.fromkeys(["task_id", *result_columns]))
    results = _first_per_id(
        _filtered(lake, lake.files(RESULTS, partition, ".parquet"), columns, ids, RESULTS_SCHEMA)
    )
    dead = _filtered(
        lake,
        lake.files(DEAD_LETTER, partition, ".parquet"),
        ["task_id", "stage", "reason"],
        ids,
        DEAD_LETTER_SCHEMA,
    )
    rejected = _rejected_at_intake(lake, partition, ids)
    dead = _first_per_id(pa.concat_tables([dead, rejected], promote_options="default"))
    flying_ids: list[str] = []
    flying_batches: list[str] = []
    for manifest in in_flight(lake, partition):
        covered = sidecar_ids(lake, manifest)
        covered = covered.filter(pc.is_in(covered, value_set=ids))
        flying_ids += covered.to_pylist()
        flying_batches += [manifest.provider_batch_id or manifest.key] * len(covered)
    routed_path = lake.path(TASKS, partition, TASKS_FILE)
    routed = (
        _filtered(lake, [routed_path], ["task_id", "route"], ids, TASKS_SCHEMA)
        if lake.exists(routed_path)
        else TASKS_SCHEMA.empty_table().select(["task_id", "route"])
    )

    outcome = pa.table({"task_id": ids, "_order": pa.array(range(len(ids)), pa.int64())})
    outcome = outcome.join(results, "task_id", join_type="left outer")
    outcome = outcome.join(
        dead.rename_columns(["task_id", "dead_stage", "dead_reason"]),
        "task_id",
        join_type="left outer",
    )
    outcome = outcome.join(
        pa.table(
            {
                "task_id": pa.array(flying_ids, pa.string()),
                "batch": pa.array(flying_batches, pa.string()),
            }
        ),
        "task_id",
        join_type="left outer",
    )
    outcome = outcome.join(
        _first_per_id(routed).rename_columns(["task_id", "routed_as"]),
        "task_id",
        join_type="left outer",
    ).sort_by("_order")

    has_result = pc.is_in(outcome["task_id"], value_set=results["task_id"])
    # The first true condition decides: a result beats a dead letter beats being in flight.
    where = pc.make_struct(
        has_result,
        pc.is_valid(outcome["dead_stage"]),
        pc.is_valid(outcome["batch"]),
        pc.is_valid(outcome["routed_as"]),
    )
    stage = pc.case_when(
        where, Stage.RESULT, Stage.DEAD_LETTER, Stage.IN_FLIGHT, Stage.ROUTED, Stage.LANDED
    )
    detail = pc.case_when(
        where,
        pa.nulls(len(ids), pa.string()),
        pc.binary_join_element_wise(outcome["dead_stage"], outcome["dead_reason"], ": "),
        pc.binary_join_element_wise("in flight in batch", outcome["batch"], " "),
        pc.binary_join_element_wise("routed", outcome["routed_as"], " to "),
        "landed, not yet through intake",
    )
    status = pc.if_else(
        pc.equal(stage, Stage.RESULT),
        SUCCEEDED,
        pc.if_else(pc.equal(stage, Stage.DEAD_LETTER), FAILED, MISSING),
    )
    keep = [c for c in columns if c != "task_id"]
    return pa.table(
        {
            "task_id": outcome["task_id"],
            "status": status,
            "stage": stage,
            "detail": detail,
            **{c: outcome[c] for c in keep},
        }
    )


@dataclass(frozen=True)
class Progress:
    """How far a workload's tasks of one partition have come."""

    expected: int
    counts: dict[str, int]

    @classmethod
    def of(cls, outcomes: pa.Table) -> Progress:
        """Count the stages of :func:`task_outcomes` rows."""
        counts = pc.value_counts(outcomes["stage"])
        return cls(
            outcomes.num_rows,
            dict(
                zip(
                    counts.field("values").to_pylist(),
                    counts.field("counts").to_pylist(),
                    strict=True,
                )
            ),
        )

    def count(self, stage: str) -> int:
        """Tasks at ``stage``."""
        return self.counts.get(stage, 0)

    @property
    def settled(self) -> bool:
        """Nothing in flight or waiting to be sent, and at least one task done: the consumer
        can run. (Tasks still only landed are reported missing by the consumer.)"""
        done = self.count(Stage.RESULT) + self.count(Stage.DEAD_LETTER)
        return done > 0 and self.count(Stage.IN_FLIGHT) == 0 and self.count(Stage.ROUTED) == 0

    @property
    def key(self) -> str:
        """A short, readable fingerprint for run keys: changes whenever a count changes."""
        return "-".join(f"{label}{self.count(s)}" for s, label in _KEY_LABELS if self.count(s))


_KEY_LABELS = (
    (Stage.RESULT, "ok"),
    (Stage.DEAD_LETTER, "failed"),
    (Stage.IN_FLIGHT, "flying"),
    (Stage.ROUTED, "routed"),
    (Stage.LANDED, "landed"),
)


def produced_ids(lake: Lake, producer: str, partition: str) -> pa.Array | None:
    """The task ids a producer landed for a partition, or ``None`` if it has not run."""
    path = table_path(lake, WORKLOAD_TASKS, producer, partition)
    if not lake.exists(path):
        return None
    return lake.read_table([path], ["task_id"])["task_id"].combine_chunks()


def producer_progress(lake: Lake, producer: str, partition: str) -> Progress | None:
    """Where a producer's tasks are, or ``None`` if it has not run for the partition."""
    ids = produced_ids(lake, producer, partition)
    if ids is None:
        return None
    return Progress.of(task_outcomes(lake, partition, ids, ["task_id"]))


def count_by(column: pa.ChunkedArray | pa.Array, values: Sequence[str]) -> dict[str, int]:
    """How many rows hold each of ``values`` (zero included, so the UI plots a flat line)."""
    counts = dict.fromkeys(values, 0)
    for entry in pc.value_counts(column).to_pylist():
        counts[entry["values"]] = entry["counts"]
    return counts


def coverage_check(
    check_name: str, table: pa.Table, keys: Sequence[str], expected: int
) -> dg.AssetCheckResult:
    """One output row per expected source row: none dropped (rows == expected), none doubled
    (as many distinct ``keys`` as rows)."""
    unique = table.group_by(list(keys)).aggregate([]).num_rows
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=table.num_rows == expected == unique,
        metadata={"rows": table.num_rows, "expected": expected, "unique": unique},
    )


def cost_metadata(
    table: pa.Table, prefix: str = "", cost: str = "cost_usd", sync: str = "sync_cost_usd"
) -> dict[str, float]:
    """What the answers cost, against the same tokens on the synchronous path, and (when the
    token columns are there) how much of the prompt was read from the cache."""
    spent = pc.sum(table[cost]).as_py() or 0.0
    all_sync = pc.sum(table[sync]).as_py() or 0.0
    metadata = {
        f"{prefix}cost_usd": round(spent, 6),
        f"{prefix}all_sync_cost_usd": round(all_sync, 6),
        f"{prefix}saved_usd": round(all_sync - spent, 6),
        f"{prefix}savings_pct": round(100 * (all_sync - spent) / all_sync, 2) if all_sync else 0.0,
    }
    if {"input_tokens", "cache_read_tokens"} <= set(table.column_names):
        cached = pc.sum(table["cache_read_tokens"]).as_py() or 0
        prompt = (pc.sum(table["input_tokens"]).as_py() or 0) + cached
        metadata[f"{prefix}cache_read_share_pct"] = (
            round(100 * cached / prompt, 2) if prompt else 0.0
        )
    return metadata


def problems_markdown(table: pa.Table, key: str, limit: int = 10) -> str:
    """The first rows that did not succeed, as a markdown table for the UI."""
    bad = table.filter(pc.not_equal(table["status"], SUCCEEDED))
    if bad.num_rows == 0:
        return "Every row succeeded."
    lines = [f"| {key} | status | detail |", "|---|---|---|"]
    for row in bad.select([key, "status", "detail"]).slice(0, limit).to_pylist():
        detail = (row["detail"] or "").replace("|", "/")[:160]
        lines.append(f"| {row[key]} | {row['status']} | {detail} |")
    if bad.num_rows > limit:
        lines.append(f"\n…and {bad.num_rows - limit} more; see the table's status column.")
    return "\n".join(lines)


# -- structured answers --------------------------------------------------------------------------

Model = TypeVar("Model", bound=BaseModel)


def parse_answer(text: str | None, model: type[Model]) -> tuple[Model | None, str | None]:
    """Parse a JSON answer into ``model``; on failure return why, never raise.

    Tolerates what models add around JSON (markdown fences, a sentence before the object):
    the first ``{`` to the last ``}`` is parsed.
    """
    if not text:
        return None, "empty answer"
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None, "no JSON object in the answer"
    try:
        return model.model_validate_json(text[start : end + 1]), None
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        return None, f"{where}: {first['msg']}"


def json_output(model: type[BaseModel]) -> dict[str, Any]:
    """``output_config`` asking the Messages API for JSON that follows ``model``'s JSON Schema
    (structured outputs): the answer is that JSON, with no schema pasted into the prompt."""
    return {"format": {"type": "json_schema", "schema": model.model_json_schema()}}


# -- the consumer's sensor -----------------------------------------------------------------------

WATCHED_ASSETS = (dg.AssetKey("batch_results"), dg.AssetKey("realtime_results"))
"""New results of a partition are what make a workload's consumer worth a look."""
EVENTS_PER_PAGE = 500


def run_key(asset: str, partition: str, progress: Progress) -> str:
    """A run key that changes only when the outcomes of the consumer's inputs change."""
    return f"{asset}-{partition}-{progress.key}"


def when_settled(producer: str, asset: str, job: str) -> Callable[[Lake, str], list[dg.RunRequest]]:
    """A sensor plan: run ``job`` for a partition once ``producer``'s tasks have all settled
    (none in flight or waiting to be sent), keyed so the same outcomes never run twice."""

    def plan(lake: Lake, partition: str) -> list[dg.RunRequest]:
        progress = producer_progress(lake, producer, partition)
        if progress is None or not progress.settled:
            return []
        return [
            dg.RunRequest(
                run_key=run_key(asset, partition, progress), job_name=job, partition_key=partition
            )
        ]

    return plan


def results_sensor(
    *,
    name: str,
    description: str,
    jobs: Sequence[dg.UnresolvedAssetJobDefinition | dg.JobDefinition],
    plan: Callable[[Lake, str], list[dg.RunRequest]],
    also_watch: Sequence[dg.AssetKey] = (),
) -> dg.SensorDefinition:
    """A sensor that reacts to new results and asks ``plan`` what to run for each partition.

    The cursor is the newest event-log storage id seen, so each tick reads only new
    materializations of ``batch_results`` / ``realtime_results`` (plus ``also_watch``);
    ``plan`` returns run requests with run keys derived from the state of the lake, so a
    partition looked at twice never runs the same work twice.
    """

    @dg.sensor(
        name=name,
        jobs=list(jobs),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
    def _sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        newest = after
        partitions: set[str] = set()
        for key in (*WATCHED_ASSETS, *also_watch):
            page: str | None = None
            while True:
                found = context.instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, after_storage_id=after),
                    limit=EVENTS_PER_PAGE,
                    cursor=page,
                    ascending=True,
                )
                for record in found.records:
                    newest = max(newest or 0, record.storage_id)
                    if record.partition_key:
                        partitions.add(record.partition_key)
                if not found.has_more:
                    break
                page = found.cursor
        store = lake.lake()
        requests = [r for p in sorted(partitions) for r in plan(store, p)]
        skip = None
        if not requests:
            skip = "no new results" if not partitions else "waiting: nothing settled yet"
        cursor = str(newest) if newest is not None else None
        return dg.SensorResult(run_requests=requests, cursor=cursor, skip_reason=skip)

    return _sensor


def stable_digest(*parts: str) -> str:
    """A short, stable hex digest of some strings (for ids derived from content)."""
    digest = hashlib.blake2b(digest_size=6)
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def outcomes_for(
    lake: Lake,
    partition: str,
    producer: str,
    source: pa.Table,
    key: str,
    result_columns: Sequence[str] = RESULT_COLUMNS,
) -> pa.Table:
    """Every row of ``source`` with the outcome of the task ``producer`` made for it.

    A left join on ``source[key]`` = the task's ``source_key``, then on ``task_id``: a source
    row whose task has no result is kept with status ``missing`` or ``failed`` and a detail
    that says why, and a row for which no task was produced is ``missing`` too.
    """
    record = read_table(lake, WORKLOAD_TASKS, producer, partition).select(["source_key", "task_id"])
    outcomes = task_outcomes(lake, partition, record["task_id"].combine_chunks(), result_columns)
    ordered = source.append_column("_order", pa.array(range(source.num_rows), pa.int64()))
    joined = (
        ordered.join(record.rename_columns([key, "task_id"]), key, join_type="left outer")
        .join(outcomes, "task_id", join_type="left outer")
        .sort_by("_order")
        .drop_columns(["_order"])
    )
    no_task = pc.is_null(joined["status"])
    joined = replace_column(joined, "status", pc.if_else(no_task, MISSING, joined["status"]))
    return replace_column(
        joined, "detail", pc.if_else(no_task, "no task was produced for this row", joined["detail"])
    )


def replace_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """``table`` with column ``name`` replaced in place."""
    return table.set_column(table.schema.get_field_index(name), name, values)


@dataclass(frozen=True)
class WorkloadJobs:
    """A workload's two jobs and its nightly schedule."""

    produce: dg.UnresolvedAssetJobDefinition
    consume: dg.UnresolvedAssetJobDefinition
    nightly: dg.ScheduleDefinition


def workload_jobs(
    workload: str,
    *,
    produce: Sequence[dg.AssetsDefinition],
    consume: Sequence[dg.AssetsDefinition],
    minute_past_one: int,
    tasks: str,
) -> WorkloadJobs:
    """``<workload>_produce`` (source + tasks), ``<workload>_consume`` (outputs, launched by
    ``<workload>_sensor``) and ``<workload>_nightly``, which lands the day's ``tasks`` at
    01:``minute_past_one`` UTC, before the 02:00 batch cycle sends them."""
    produce_job = dg.define_asset_job(
        f"{workload}_produce",
        selection=dg.AssetSelection.assets(*produce),
        partitions_def=DAILY,
        description=f"Land the day's {tasks}; the nightly batch cycle picks them up.",
    )
    outputs = ", ".join(a.key.to_user_string() for a in consume)
    consume_job = dg.define_asset_job(
        f"{workload}_consume",
        selection=dg.AssetSelection.assets(*consume),
        partitions_def=DAILY,
        description=f"Read the day's results back into {outputs}; launched by {workload}_sensor.",
    )
    nightly = dg.build_schedule_from_partitioned_job(
        produce_job,
        hour_of_day=1,
        minute_of_hour=minute_past_one,
        name=f"{workload}_nightly",
        description=(
            f"At 01:{minute_past_one:02d} UTC, before the 02:00 batch cycle, land the day's "
            f"{tasks}."
        ),
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return WorkloadJobs(produce_job, consume_job, nightly)
