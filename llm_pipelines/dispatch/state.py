"""Where a partition's batch work stands, derived from the lake alone.

There is no second database: manifests say what was submitted, results files say what was
collected, retry rows say what waits to be submitted again, dead letters say what gave up.

The commit rule that keeps this exact across crashes: collecting a batch writes its dead
letters (``dead_letter/collect-<key>``) and retry rows (``retries/batch-<key>``) first and
its results file (``results/batch-<key>``) last. The results file is the commit: until it
exists the batch is in flight and those other files do not count; a crash in between is
repaired by collecting again, which rewrites the same names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llm_pipelines.storage.datasets import (
    BATCHES,
    DEAD_LETTER,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    RETRIES,
    RETRIES_SCHEMA,
    TASKS,
    TASKS_FILE,
    BatchManifest,
    read_manifests,
)
from llm_pipelines.storage.lake import Lake

REPLAY_PREFIX = "replay-"
"""Retry files written by the replay job (committed as soon as they exist)."""
PAIR_SCHEMA = pa.schema([pa.field("task_id", pa.string()), pa.field("attempt", pa.int16())])


@dataclass
class NotYetDone:
    """A :meth:`~llm_pipelines.storage.lake.Lake.select_rows` predicate over ``task_id`` and
    ``route``: the tasks of ``route`` whose id is not in ``done``; it counts those that are.
    """

    route: str
    done: pa.Array
    skipped: int = 0
    """Tasks of the route already done, once the predicate has run."""

    def __call__(self, narrow: pa.Table) -> pa.Array:
        on_route = pc.equal(narrow["route"], self.route)
        if not len(self.done):
            return on_route
        done = pc.and_(on_route, pc.is_in(narrow["task_id"], value_set=self.done))
        self.skipped += pc.sum(done).as_py() or 0
        return pc.and_(on_route, pc.invert(done))


@contextmanager
def open_tasks(lake: Lake, partition: str) -> Iterator[pq.ParquetFile]:
    """The partition's routed tasks file, open; refused if an older routing wrote it."""
    path = lake.path(TASKS, partition, TASKS_FILE)
    with lake.fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        if "dispatch_position" not in parquet.schema_arrow.names:
            raise ValueError(
                f"{path} was written by an older routing, without dispatch positions: "
                "materialize routed_tasks for this partition again, then dispatch it"
            )
        yield parquet


def results_name(key: str) -> str:
    """The results (and retry) file name of the batch with manifest key ``key``."""
    return f"batch-{key}.parquet"


def collect_dead_letter_name(key: str) -> str:
    """The dead-letter file name collection writes for the batch with manifest key ``key``."""
    return f"collect-{key}.parquet"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


@dataclass
class PartitionState:
    """A partition's manifests, split by what the lake says about each."""

    partition: str
    submitted: list[BatchManifest]  # the provider holds these batches
    intents: list[BatchManifest]  # written before a provider call that has not been recorded
    collected: set[str]  # manifest keys whose results file exists

    @classmethod
    def load(cls, lake: Lake, partition: str) -> PartitionState:
        """Read the manifests and the results listing of one partition."""
        manifests = read_manifests(lake, partition)
        names = {_name(p) for p in lake.files(RESULTS, partition, ".parquet")}
        return cls(
            partition=partition,
            submitted=[m for m in manifests if m.provider_batch_id is not None],
            intents=[m for m in manifests if m.provider_batch_id is None],
            collected={m.key for m in manifests if m.results_name in names},
        )

    @property
    def in_flight(self) -> list[BatchManifest]:
        """Submitted batches whose results are not in the lake yet."""
        return [m for m in self.submitted if m.key not in self.collected]

    def committed_retry_files(self, lake: Lake) -> list[str]:
        """Retry files that count: the replay job's, and those of collected batches."""
        names = {results_name(key) for key in self.collected}
        return [
            path
            for path in lake.files(RETRIES, self.partition, ".parquet")
            if _name(path).startswith(REPLAY_PREFIX) or _name(path) in names
        ]

    def committed_dead_letter_files(self, lake: Lake) -> list[str]:
        """Dead-letter files that count: all but those of batches not yet collected."""
        uncommitted = {collect_dead_letter_name(m.key) for m in self.in_flight}
        return [
            path
            for path in lake.files(DEAD_LETTER, self.partition, ".parquet")
            if _name(path) not in uncommitted
        ]

    def submitted_pairs(self, lake: Lake, attempt: int | None = None) -> pa.Table:
        """``(task_id, attempt)`` of every task the provider was given (at ``attempt``)."""
        chosen = [m for m in self.submitted if attempt is None or m.attempt == attempt]
        return _pairs(lake, chosen)

    def dispatched_ids(self, lake: Lake) -> pa.Array:
        """Task ids a dispatch path has already taken, whatever their route says today.

        A result row, a committed dead letter past intake, or a place in a batch (submitted
        or an intent). Real-time answering, first submission and reuse skip these, so
        routing a day again (a new "now" moves a deadline; late events re-sort the file)
        can never send a task a second time or give it a second terminal row.
        """
        results = lake.read_table(
            lake.files(RESULTS, self.partition, ".parquet"), ["task_id"], schema=RESULTS_SCHEMA
        )["task_id"]
        dead = lake.read_table(
            self.committed_dead_letter_files(lake),
            ["task_id", "stage"],
            schema=DEAD_LETTER_SCHEMA,
        )
        dead = dead.filter(pc.not_equal(dead["stage"], "intake"))["task_id"]
        batched = _pairs(lake, self.submitted + self.intents)["task_id"]
        parts = [c.combine_chunks().cast(pa.string()) for c in (results, dead, batched)]
        return pc.drop_null(pc.unique(pa.concat_arrays(parts)))

    def in_flight_ids(self, lake: Lake) -> pa.Array:
        """Task ids in batches not yet collected (a task twice in flight appears twice)."""
        return _pairs(lake, self.in_flight)["task_id"].combine_chunks()


def sidecar_ids(lake: Lake, manifest: BatchManifest) -> pa.Array:
    """The task ids a manifest covers."""
    path = lake.path(BATCHES, manifest.partition, manifest.tasks_name)
    return lake.read_table([path], ["task_id"]).column("task_id").combine_chunks()


def _pairs(lake: Lake, manifests: list[BatchManifest]) -> pa.Table:
    tables = []
    for manifest in manifests:
        ids = sidecar_ids(lake, manifest)
        attempts = pa.array([manifest.attempt] * len(ids), pa.int16())
        tables.append(pa.Table.from_arrays([ids, attempts], schema=PAIR_SCHEMA))
    return pa.concat_tables(tables) if tables else PAIR_SCHEMA.empty_table()


def pending_retry_pairs(lake: Lake, state: PartitionState) -> pa.Table:
    """``(task_id, attempt)`` of retries not yet taken up by a batch of that attempt.

    A retry is also taken up if submission dead-lettered it at that attempt (a request too
    large for any batch), so it does not wait forever.
    """
    retries = lake.read_table(
        state.committed_retry_files(lake), ["task_id", "attempt"], schema=RETRIES_SCHEMA
    )
    if not retries.num_rows:
        return PAIR_SCHEMA.empty_table()
    retries = retries.group_by(["task_id", "attempt"]).aggregate([])  # one row per pair
    refused = lake.read_table(
        [p for p in state.committed_dead_letter_files(lake) if _name(p).startswith("submit-")],
        ["task_id", "attempt"],
        schema=DEAD_LETTER_SCHEMA,
    )
    taken = pa.concat_tables([state.submitted_pairs(lake), refused.cast(PAIR_SCHEMA)])
    return retries.join(taken, ["task_id", "attempt"], join_type="left anti").select(
        ["task_id", "attempt"]
    )


def live_dead_letters(
    lake: Lake, state: PartitionState, columns: list[str] | None = None
) -> pa.Table:
    """Dead letters of valid tasks that still stand: committed, and not replayed since.

    A replayed dead letter (attempt *a*) is superseded by its retry row (attempt *a*+1); if the
    replay fails again, the new dead letter stands instead. Intake rejections (no task id)
    are not included.
    """
    wanted = list(dict.fromkeys(["task_id", "attempt", "stage", *(columns or [])]))
    dead = lake.read_table(
        state.committed_dead_letter_files(lake), wanted, schema=DEAD_LETTER_SCHEMA
    )
    dead = dead.filter(pc.and_(pc.not_equal(dead["stage"], "intake"), pc.is_valid(dead["task_id"])))
    retries = lake.read_table(
        state.committed_retry_files(lake), ["task_id", "attempt"], schema=RETRIES_SCHEMA
    )
    if retries.num_rows and dead.num_rows:
        latest = retries.group_by("task_id").aggregate([("attempt", "max")])
        joined = dead.join(latest, "task_id", join_type="left outer")
        standing = pc.or_kleene(
            pc.is_null(joined["attempt_max"]),
            pc.less_equal(joined["attempt_max"], joined["attempt"]),
        )
        dead = joined.filter(standing).select(wanted)
    return dead.select(wanted)
