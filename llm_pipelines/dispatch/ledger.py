"""The conservation ledger: where every valid task of a partition is right now."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.dispatch.collect import in_flight
from llm_pipelines.dispatch.submit import sidecar_ids
from llm_pipelines.intake import EVENTS_FILE
from llm_pipelines.storage.datasets import (
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    EVENTS,
    RESULTS,
    RESULTS_SCHEMA,
)
from llm_pipelines.storage.lake import Lake


@dataclass(frozen=True)
class Ledger:
    """Counts of valid tasks by state, plus the two ways the invariant can break.

    ``lost`` tasks are valid yet in no state; ``duplicated`` tasks have more than one terminal
    row (result or dead letter). Both must be zero. ``pending`` tasks are routed but not yet
    submitted or answered; they are not lost, just not done.
    """

    valid: int
    succeeded: int
    dead_lettered: int
    in_flight: int
    pending: int
    lost: int
    duplicated: int
    intake_rejected: int

    def as_dict(self) -> dict[str, int]:
        """Plain dict, for metadata and JSON output."""
        return asdict(self)


def _ids(
    lake: Lake, dataset: str, partition: str, schema: pa.Schema, where: str | None = None
) -> pa.ChunkedArray:
    columns = ["task_id"] + ([where] if where else [])
    table = lake.read_table(lake.files(dataset, partition, ".parquet"), columns, schema=schema)
    if where:
        table = table.filter(pc.not_equal(table[where], "intake"))
    return pc.drop_null(table["task_id"])


def _distinct(ids: pa.ChunkedArray) -> int:
    return int(pc.count_distinct(ids).as_py()) if len(ids) else 0


def partition_ledger(lake: Lake, partition: str, routed: pa.Array | None = None) -> Ledger:
    """Account for every valid task of a partition.

    Works on id columns only (chunked, never copied whole), and lets each go as soon as it
    has been used: at a million tasks a partition this needs a few hundred MB at most.
    """
    events_path = lake.path(EVENTS, partition, EVENTS_FILE)
    valid = (
        lake.read_table([events_path], ["task_id"])["task_id"]
        if lake.exists(events_path)
        else pa.chunked_array([], pa.string())
    )
    results = _ids(lake, RESULTS, partition, RESULTS_SCHEMA)
    dead = _ids(lake, DEAD_LETTER, partition, DEAD_LETTER_SCHEMA, where="stage")
    succeeded, dead_lettered = _distinct(results), _distinct(dead)
    intake_rejected = len(
        lake.read_table(
            lake.files(DEAD_LETTER, partition, ".parquet"), ["stage"], schema=DEAD_LETTER_SCHEMA
        ).filter(pc.equal(pc.field("stage"), "intake"))
    )
    flying = [sidecar_ids(lake, m) for m in in_flight(lake, partition)]
    terminal = pa.chunked_array([*results.chunks, *dead.chunks], pa.string())
    del results, dead
    duplicated = 0
    if len(terminal):
        counts = pc.value_counts(terminal).field("counts")
        duplicated = int(pc.sum(pc.greater(counts, 1)).as_py() or 0)
        del counts
    accounted = pc.unique(pa.chunked_array([*terminal.chunks, *flying], pa.string()))
    del terminal
    unaccounted = pc.drop_null(valid.filter(pc.invert(pc.is_in(valid, value_set=accounted))))
    del accounted
    pending = 0
    if routed is not None and len(unaccounted):
        # Tasks routed but not yet submitted/answered are work to do, not losses. (The few
        # unaccounted ids are the hashed set, not the partition's routed ids.)
        unaccounted_ids = unaccounted.combine_chunks()
        pending = int(pc.sum(pc.is_in(routed, value_set=unaccounted_ids)).as_py() or 0)
    return Ledger(
        valid=len(valid),
        succeeded=succeeded,
        dead_lettered=dead_lettered,
        in_flight=sum(len(ids) for ids in flying),
        pending=pending,
        lost=len(unaccounted) - pending,
        duplicated=duplicated,
        intake_rejected=intake_rejected,
    )
