"""Reuse: an identical request already answered is not paid for twice.

Identity is the request as it will be sent: the sha-256 of its canonical JSON as the producer
wrote it (first 16 bytes) XOR a hash of the model it is sent to after right-sizing
(``request_key`` in ``tasks/``). Two requests with equal keys are byte-identical on the same
model; two that differ only in the model they asked for, right-sized to the same one, are
not recognised as equal (a missed reuse, never a wrong one). Two places reuse an answer:

- **Within a partition**, routing keeps one task of each request key (a real-time one if
  any, else the first) and routes the others to ``reuse``, naming that task in ``reuse_of``.
- **Across partitions**, each answered request is recorded in a compact index,
  ``reuse_index/dt=D/<results file>`` (request key → task id, one index file per results
  file, written once), and routing looks a task's key up in the indexes of the
  ``reuse.lookback_days`` partitions before it; a hit is routed to ``reuse`` with
  ``reuse_partition`` and ``reuse_of`` naming the answered task.

:func:`resolve_reuse` (the ``reused_results`` asset, after every collection) then gives
each waiting ``reuse`` task its result row: the answer of the task it reuses, with
``route = reuse``, the same token usage, ``cost_usd = 0`` and ``sync_cost_usd`` what the
request would have cost on its own. If that task was dead-lettered instead, the reusing
task is dead-lettered too (stage ``reuse``) with its own request as the payload, so it can
be replayed. Either way it ends in exactly one result or dead-letter row: conservation holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llm_pipelines.costs import PriceTable
from llm_pipelines.dispatch.results import completed
from llm_pipelines.dispatch.state import PartitionState
from llm_pipelines.routing.policy import REUSE
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    TASKS,
    TASKS_FILE,
    dead_letter_path,
    utcnow,
    with_missing_columns,
)
from llm_pipelines.storage.lake import Lake
from llm_pipelines.tasks import ids_digest

REUSE_INDEX = "reuse_index"
"""Dataset of answered requests: ``reuse_index/dt=D/<results file name>``."""
INDEX_SCHEMA = pa.schema(
    [
        pa.field("request_key", pa.binary(16), nullable=False),
        pa.field("task_id", pa.string(), nullable=False),
    ]
)
REUSE_PREFIX = "reuse-"
"""Results and dead-letter files written by reuse start with this."""


@dataclass
class ReuseStats:
    """What one resolution pass did."""

    waiting_before: int = 0
    reused: int = 0
    dead_lettered: int = 0
    indexed_files: int = 0
    saved_usd: float = 0.0

    @property
    def still_waiting(self) -> int:
        """Reuse tasks whose source has no result or dead letter yet."""
        return self.waiting_before - self.reused - self.dead_lettered


def answered_partitions(lake: Lake, partition: str, lookback_days: int) -> list[str]:
    """Earlier partitions within the lookback that have an index, newest first."""
    if lookback_days <= 0:
        return []
    start = str(date.fromisoformat(partition) - timedelta(days=lookback_days))
    return [p for p in reversed(lake.partitions(REUSE_INDEX)) if start <= p < partition]


def answered_keys(lake: Lake, partition: str) -> pa.Array:
    """Every request key answered in ``partition`` (the key column only: 16 bytes a task)."""
    table = lake.read_table(
        lake.files(REUSE_INDEX, partition, ".parquet"), ["request_key"], schema=INDEX_SCHEMA
    )
    return pc.unique(table["request_key"].combine_chunks())


def source_tasks(lake: Lake, partition: str, keys: pa.Array) -> pa.Table:
    """For each of ``keys`` answered in ``partition``: one answered task (the least id)."""
    wanted = pc.unique(keys)
    parts = []
    for chunk in lake.iter_batches(lake.files(REUSE_INDEX, partition, ".parquet")):
        parts.append(chunk.filter(pc.is_in(chunk["request_key"], value_set=wanted)))
    table = pa.Table.from_batches(parts, INDEX_SCHEMA) if parts else INDEX_SCHEMA.empty_table()
    return table.group_by("request_key").aggregate([("task_id", "min")])


def _primary_results(lake: Lake, partition: str) -> list[str]:
    return [
        path
        for path in lake.files(RESULTS, partition, ".parquet")
        if not path.rsplit("/", 1)[1].startswith(REUSE_PREFIX)
    ]


def _routed_with_keys(lake: Lake, partition: str) -> str | None:
    """The partition's tasks file, if it exists and records request keys.

    A partition routed before reuse existed has no keys: it neither reuses nor is indexed.
    """
    path = lake.path(TASKS, partition, TASKS_FILE)
    if not lake.exists(path):
        return None
    with lake.fs.open(path, "rb") as handle:
        names = pq.read_schema(handle).names
    return path if {"request_key", "reuse_of", "reuse_partition"} <= set(names) else None


def index_answers(lake: Lake, partition: str) -> int:
    """Index the request keys of results files not indexed yet; returns files indexed."""
    tasks_path = _routed_with_keys(lake, partition)
    todo = [
        path
        for path in _primary_results(lake, partition)
        if not lake.exists(lake.path(REUSE_INDEX, partition, path.rsplit("/", 1)[1]))
    ]
    if not todo or tasks_path is None:
        return 0
    answered = {
        path: lake.read_table([path], ["task_id"], schema=RESULTS_SCHEMA)["task_id"]
        for path in todo
    }
    every = pa.concat_arrays([ids.combine_chunks() for ids in answered.values()])
    keys = _keys_of(lake, tasks_path, every)
    for path, ids in answered.items():
        rows = keys.filter(pc.is_in(keys["task_id"], value_set=ids.combine_chunks()))
        lake.write_table(
            lake.path(REUSE_INDEX, partition, path.rsplit("/", 1)[1]),
            rows.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA),
        )
    return len(todo)


def _keys_of(lake: Lake, tasks_path: str, task_ids: pa.Array) -> pa.Table:
    """``task_id`` and ``request_key`` of the given tasks, streamed from ``tasks/``."""
    parts = []
    for chunk in lake.iter_batches([tasks_path], ["task_id", "request_key"]):
        parts.append(chunk.filter(pc.is_in(chunk["task_id"], value_set=task_ids)))
    return pa.Table.from_batches(parts) if parts else INDEX_SCHEMA.empty_table()


def waiting_reuse(lake: Lake, partition: str) -> pa.Table:
    """Reuse tasks of the partition that no dispatch path has taken yet."""
    tasks_path = _routed_with_keys(lake, partition)
    if tasks_path is None:
        return pa.table({})
    columns = ["task_id", "task_type", "requested_model", "request", "route"]
    columns += ["reuse_of", "reuse_partition"]
    parts = [
        chunk.filter(pc.equal(chunk["route"], REUSE))
        for chunk in lake.iter_batches([tasks_path], columns)
    ]
    table = pa.Table.from_batches(parts) if parts else pa.table({})
    if table.num_rows == 0:
        return table
    # Answered, dead-lettered or in a batch: a task routed here only after it was dispatched
    # elsewhere (the day was routed again) must not get a second row.
    done = PartitionState.load(lake, partition).dispatched_ids(lake)
    return table.filter(pc.invert(pc.is_in(table["task_id"], value_set=done)))


def resolve_reuse(lake: Lake, partition: str, prices: PriceTable) -> ReuseStats:
    """Index this partition's new answers, then answer every reuse task whose source is done."""
    stats = ReuseStats(indexed_files=index_answers(lake, partition))
    waiting = waiting_reuse(lake, partition)
    stats.waiting_before = waiting.num_rows
    if waiting.num_rows == 0:
        return stats
    resolved: list[pa.Array] = []
    for source_partition in pc.unique(waiting["reuse_partition"]).to_pylist():
        group = waiting.filter(pc.equal(waiting["reuse_partition"], source_partition))
        resolved += _reuse_from(lake, partition, source_partition, group, prices, stats)
    if resolved:
        # A source with an answer is reused even if it was also dead-lettered once.
        done = pa.concat_arrays(resolved)
        waiting = waiting.filter(pc.invert(pc.is_in(waiting["task_id"], value_set=done)))
    _dead_letter_failed_sources(lake, partition, waiting, stats)
    return stats


def _reuse_from(
    lake: Lake,
    partition: str,
    source_partition: str,
    waiting: pa.Table,
    prices: PriceTable,
    stats: ReuseStats,
) -> list[pa.Array]:
    """Write result rows for the waiting tasks whose source in ``source_partition`` answered.

    Returns the ids of the tasks given a result.
    """
    resolved: list[pa.Array] = []
    sources = pc.unique(waiting["reuse_of"])
    for index_path in lake.files(REUSE_INDEX, source_partition, ".parquet"):
        indexed = lake.read_table([index_path], ["task_id"], schema=INDEX_SCHEMA)["task_id"]
        indexed = indexed.combine_chunks()
        here = pc.filter(sources, pc.is_in(sources, value_set=indexed))
        if len(here) == 0:
            continue
        name = index_path.rsplit("/", 1)[1]
        answers = with_missing_columns(
            lake.read_table([lake.path(RESULTS, source_partition, name)], schema=RESULTS_SCHEMA),
            RESULTS_SCHEMA,
        )
        answers = answers.filter(pc.is_in(answers["task_id"], value_set=here))
        # The answer's own identity and price make way for the reusing task's.
        answers = answers.drop_columns(
            ["task_type", "requested_model", "cost_usd", "sync_cost_usd"]
        )
        answers = answers.rename_columns(
            ["reuse_of" if c == "task_id" else c for c in answers.column_names]
        )
        takers = waiting.filter(pc.is_in(waiting["reuse_of"], value_set=here))
        # Each taker's answer row by position: a join cannot carry list columns (tool_calls).
        joined = answers.take(pc.index_in(takers["reuse_of"], value_set=answers["reuse_of"]))
        for name in ("task_id", "task_type", "requested_model"):
            joined = joined.append_column(name, takers[name])
        _write_reused(lake, partition, source_partition, name, joined, prices, stats)
        resolved.append(joined["task_id"].combine_chunks())
    return resolved


def _write_reused(
    lake: Lake,
    partition: str,
    source_partition: str,
    source_name: str,
    joined: pa.Table,
    prices: PriceTable,
    stats: ReuseStats,
) -> None:
    rows = joined.num_rows
    columns = {name: joined[name] for name in joined.column_names if name != "reuse_of"}
    columns.update(
        complete=completed(joined["stop_reason"]),  # also for rows of files from before it
        route=pa.array([REUSE] * rows, pa.string()),
        batch_id=pa.nulls(rows, pa.string()),
        attempt=pa.array([1] * rows, pa.int16()),
        collected_at=pa.array([utcnow()] * rows, RESULTS_SCHEMA.field("collected_at").type),
    )
    uncosted = pa.table(columns)
    priced = prices.with_cost_columns(uncosted).select(RESULTS_SCHEMA.names).cast(RESULTS_SCHEMA)
    # Named by source file and by the exact set of tasks: writing the same set again (a
    # re-run, or two collection runs at once) replaces the file rather than doubling rows.
    stem = source_name.removesuffix(".parquet")
    digest = ids_digest(priced["task_id"].to_pylist())
    name = f"{REUSE_PREFIX}{source_partition}-{stem}-{digest}.parquet"
    lake.write_table(lake.path(RESULTS, partition, name), priced)
    stats.reused += rows
    stats.saved_usd += pc.sum(priced["sync_cost_usd"]).as_py() or 0.0


def _dead_letter_failed_sources(
    lake: Lake, partition: str, waiting: pa.Table, stats: ReuseStats
) -> None:
    """A reuse task whose source (in this partition) was dead-lettered is dead-lettered too."""
    same_day = waiting.filter(pc.equal(waiting["reuse_partition"], partition))
    if same_day.num_rows == 0:
        return
    dead = lake.read_table(
        lake.files(DEAD_LETTER, partition, ".parquet"),
        ["task_id", "stage", "reason"],
        schema=DEAD_LETTER_SCHEMA,
    )
    dead = dead.filter(pc.not_equal(dead["stage"], "intake"))
    failed = same_day.filter(pc.is_in(same_day["reuse_of"], value_set=dead["task_id"]))
    if failed.num_rows == 0:
        return
    dead = dead.filter(pc.is_in(dead["task_id"], value_set=failed["reuse_of"]))
    reasons = dict(zip(dead["task_id"].to_pylist(), dead["reason"].to_pylist(), strict=True))
    now = utcnow()
    ids = failed["task_id"].to_pylist()
    rows = pa.Table.from_pylist(
        [
            {
                "task_id": task_id,
                "stage": "reuse",
                "reason": (
                    f"reuses the answer of task {source}, which failed: {reasons.get(source)}"
                ),
                "attempt": 1,
                "payload": request,
                "source": f"tasks/dt={partition}",
                "dead_lettered_at": now,
            }
            for task_id, source, request in zip(
                ids, failed["reuse_of"].to_pylist(), failed["request"].to_pylist(), strict=True
            )
        ],
        schema=DEAD_LETTER_SCHEMA,
    )
    lake.write_table(dead_letter_path(lake, partition, "reuse", ids_digest(ids)), rows)
    stats.dead_lettered += rows.num_rows
