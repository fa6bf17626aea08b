"""The conservation ledger: where every valid task of a partition is right now."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.dispatch.state import PartitionState, live_dead_letters, pending_retry_pairs
from llm_pipelines.intake import EVENTS_FILE
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    EVENTS,
    EVENTS_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    TASKS,
    TASKS_SCHEMA,
)
from llm_pipelines.storage.lake import Lake

EMPTY_IDS_TYPE = pa.string()
"""No ids: built per call as ``pa.array([], EMPTY_IDS_TYPE)``, since building an array at
import would make pyarrow import pandas (a second) when the definitions load."""


@dataclass(frozen=True)
class Ledger:
    """Counts of valid tasks by state, and the three ways the invariant can break.

    Every valid task should be in exactly one state: ``succeeded`` (a result row),
    ``dead_lettered`` (a standing dead letter), ``in_flight`` (in a batch not yet collected),
    ``retrying`` (waiting to be submitted again) or ``pending`` (routed, never yet submitted
    or answered). ``lost`` tasks are in none, ``duplicated`` tasks have more than one terminal
    row, ``conflicted`` tasks are in more than one state at once (say, answered and still in
    flight, or in two batches in flight). All three must be zero.
    """

    valid: int
    succeeded: int
    dead_lettered: int
    in_flight: int
    retrying: int
    pending: int
    lost: int
    duplicated: int
    conflicted: int
    intake_rejected: int

    @property
    def holds(self) -> bool:
        """Whether conservation holds: nothing lost, nothing twice."""
        return self.lost == 0 and self.duplicated == 0 and self.conflicted == 0

    @property
    def open(self) -> int:
        """Tasks not yet in a terminal state."""
        return self.in_flight + self.retrying + self.pending

    def as_dict(self) -> dict[str, int]:
        """Plain dict, for metadata and JSON output."""
        return asdict(self)


def _column(lake: Lake, paths: list[str], column: str, schema: pa.Schema) -> pa.Array:
    return lake.read_table(paths, [column], schema=schema)[column].combine_chunks()


def _repeated(ids: pa.Array) -> int:
    """How many distinct values occur more than once."""
    if not len(ids):
        return 0
    counts = pc.value_counts(ids)
    return int(pc.sum(pc.greater(counts.field("counts"), 1)).as_py() or 0)


def partition_ledger(lake: Lake, partition: str, routed: pa.Array | None = None) -> Ledger:
    """Account for every valid task of a partition (``routed``: the tasks file's ids)."""
    events_path = lake.path(EVENTS, partition, EVENTS_FILE)
    valid = (
        _column(lake, [events_path], "task_id", EVENTS_SCHEMA)
        if lake.exists(events_path)
        else pa.array([], EMPTY_IDS_TYPE)
    )
    if routed is None:
        tasks_path = lake.path(TASKS, partition, TASKS_FILE)
        routed = (
            _column(lake, [tasks_path], "task_id", TASKS_SCHEMA)
            if lake.exists(tasks_path)
            else pa.array([], EMPTY_IDS_TYPE)
        )
    state = PartitionState.load(lake, partition)
    results = _column(lake, lake.files(RESULTS, partition, ".parquet"), "task_id", RESULTS_SCHEMA)
    dead = live_dead_letters(lake, state)["task_id"].combine_chunks()
    flying = state.in_flight_ids(lake)
    retrying = pending_retry_pairs(lake, state)["task_id"].combine_chunks()
    ever_submitted = state.submitted_pairs(lake)["task_id"].combine_chunks()
    intake_rejected = (
        lake.read_table(
            lake.files(DEAD_LETTER, partition, ".parquet"), ["stage"], schema=DEAD_LETTER_SCHEMA
        )
        .filter(pc.equal(pc.field("stage"), "intake"))
        .num_rows
    )

    terminal = pa.concat_arrays([results, dead])
    # One entry per (task, state), except that two batches in flight count twice.
    placed = pa.concat_arrays([pc.unique(terminal), flying, pc.unique(retrying)])
    accounted = pc.unique(placed)
    unaccounted = valid.filter(pc.invert(pc.is_in(valid, value_set=accounted)))
    # Routed and never submitted is work still to do; anything else unaccounted is lost.
    waiting = pc.and_(
        pc.is_in(unaccounted, value_set=routed),
        pc.invert(pc.is_in(unaccounted, value_set=ever_submitted)),
    )
    pending = int(pc.sum(waiting).as_py() or 0)
    return Ledger(
        valid=len(valid),
        succeeded=len(pc.unique(results)),
        dead_lettered=len(pc.unique(dead)),
        in_flight=len(pc.unique(flying)),
        retrying=len(pc.unique(retrying)),
        pending=pending,
        lost=len(unaccounted) - pending,
        duplicated=_repeated(terminal),
        conflicted=_repeated(placed),
        intake_rejected=intake_rejected,
    )


def dead_letter_reasons(lake: Lake, partition: str, top: int = 5) -> list[tuple[str, int]]:
    """The commonest kinds of standing dead letter: ``stage: reason head`` and a count."""
    state = PartitionState.load(lake, partition)
    rows = live_dead_letters(lake, state, ["reason"]).select(["stage", "reason"])
    intake = lake.read_table(
        lake.files(DEAD_LETTER, partition, ".parquet"),
        ["stage", "reason"],
        schema=DEAD_LETTER_SCHEMA,
    )
    narrow = pa.schema([("stage", pa.string()), ("reason", pa.string())])
    rows = pa.concat_tables(
        [rows.cast(narrow), intake.filter(pc.equal(intake["stage"], "intake")).cast(narrow)]
    )
    if not rows.num_rows:
        return []
    # The text before the first colon names the field or error type: a useful grouping.
    head = pc.utf8_slice_codeunits(
        pc.list_element(pc.split_pattern(rows["reason"], ":", max_splits=1), 0), 0, 80
    )
    kinds = pc.binary_join_element_wise(rows["stage"], head, ": ")
    counts = pc.value_counts(kinds)
    pairs = zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    return sorted(pairs, key=lambda pair: -pair[1])[:top]
