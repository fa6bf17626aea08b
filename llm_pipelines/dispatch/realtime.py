"""The real-time path: synchronous Messages calls with bounded concurrency.

Tasks come in dispatch order (shared prefix, then arrival), in chunks of
:data:`REALTIME_CHUNK`, so the tasks of a prefix go out together. Within a chunk, requests
go out in *waves*: first one request per new shared prefix, which writes the prompt cache,
then the requests that can read it. Sent all at once, every request of a group would miss
the cache and pay to write it.
At most ``concurrency`` calls are in flight; 429/5xx/529 and connection errors are retried
by the SDK itself (``max_retries`` on the client); what still fails is dead-lettered.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from llm_pipelines.costs import PriceTable
from llm_pipelines.crashpoints import crash_point
from llm_pipelines.dispatch.results import ResultTotals, success_row, write_results
from llm_pipelines.dispatch.state import NotYetDone, PartitionState, open_tasks
from llm_pipelines.providers.base import BatchProvider
from llm_pipelines.routing import REALTIME
from llm_pipelines.storage.datasets import (
    DEAD_LETTER_SCHEMA,
    RESULTS,
    dead_letter_path,
    dead_letter_row,
    utcnow,
    write_rows,
)
from llm_pipelines.storage.lake import Lake, read_row_groups, row_group_bounds
from llm_pipelines.storage.lease import (
    DEFAULT_LEASE_TTL_S,
    REALTIME_LEASE,
    PartitionLease,
    partition_lease,
)
from llm_pipelines.tasks import ids_digest

REALTIME_CHUNK = 500
"""Tasks per realtime results file: the unit that a crash can make us redo."""


@dataclass
class RealtimeStats:
    """What one pass over a partition's real-time tasks did."""

    tasks: int = 0
    answered: int = 0
    dead_lettered: int = 0
    already_answered: int = 0
    chunks_written: int = 0
    totals: ResultTotals | None = None


def _realtime_chunks(
    lake: Lake, partition: str, done: pa.Array, stats: RealtimeStats
) -> Iterator[pa.Table]:
    """Real-time tasks not yet dispatched (``done``), in dispatch order, in chunks of
    :data:`REALTIME_CHUNK`."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    unanswered = NotYetDone(REALTIME, done)
    for batch in _in_dispatch_order(lake, partition, unanswered):
        pending.append(batch)
        rows += batch.num_rows
        while rows >= REALTIME_CHUNK:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, REALTIME_CHUNK)
            rest = table.slice(REALTIME_CHUNK)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending)
    stats.already_answered += unanswered.skipped


def _in_dispatch_order(lake: Lake, partition: str, wanted: NotYetDone) -> Iterator[pa.RecordBatch]:
    """The tasks ``wanted`` selects, in dispatch order, a stretch at a time.

    Routing writes each stretch of dispatch order as row groups of one route, each sorted,
    whose position ranges overlap; so row groups are read a cluster of overlapping ranges
    (one stretch) at a time, and a cluster is sorted in memory. Requests are read only from
    row groups holding a wanted task: not the batch-routed majority's.
    """
    with open_tasks(lake, partition) as parquet:
        narrow = parquet.read(columns=["task_id", "route", "dispatch_position"])
        mask = wanted(narrow).to_numpy(zero_copy_only=False)
        positions = narrow["dispatch_position"].to_numpy()
        del narrow
        ranges = []  # (first, last position, row group) of the row groups holding one
        for group, (start, stop) in enumerate(pairwise(row_group_bounds(parquet).tolist())):
            if mask[start:stop].any():
                held = positions[start:stop]
                ranges.append((int(held.min()), int(held.max()), group))
        ranges.sort()
        cluster: list[int] = []
        reach = -1
        for first, last, group in [*ranges, (np.iinfo(np.int64).max, 0, -1)]:
            if cluster and first > reach:  # no later row group overlaps this cluster
                yield from _sorted_rows(parquet, cluster, mask)
                cluster = []
            cluster.append(group)
            reach = max(reach, last)


def _sorted_rows(
    parquet: pq.ParquetFile, groups: list[int], mask: np.ndarray
) -> Iterator[pa.RecordBatch]:
    """The masked rows of ``groups``, sorted by dispatch position."""
    parts = [
        part.filter(pa.array(mask[first_row : first_row + part.num_rows]))
        for first_row, part in read_row_groups(parquet, groups, [*_COLUMNS, "dispatch_position"])
    ]
    table = pa.Table.from_batches(parts).sort_by("dispatch_position")
    yield from table.select(_COLUMNS).to_batches()


_COLUMNS = ["task_id", "task_type", "requested_model", "request", "route", "prefix_key"]
"""What the real-time path reads of each task."""


_Answer = tuple[dict[str, Any] | None, str | None]
"""A message, or the reason there is none."""


def _call(provider: BatchProvider, request: str) -> _Answer:
    import anthropic  # loaded by the provider's client already; not when the definitions load

    try:
        return provider.create_message(orjson.loads(request)), None
    except anthropic.APIStatusError as error:
        # The SDK has already retried 429/5xx/529; what reaches us is final.
        return None, f"{error.status_code} {type(error).__name__}: {error.message}"
    except anthropic.APIConnectionError as error:
        return None, f"connection failed after retries: {error}"
    except TypeError as error:
        # A request routed before intake checked requests against the SDK's types (one with
        # temperature, say): the SDK refuses it before any call. One dead letter, not a
        # crashed chunk.
        return None, f"the installed anthropic SDK refuses this request: {error}"


def cache_waves(prefix_keys: list[str | None]) -> list[list[int]]:
    """Positions of a chunk's requests grouped into waves sent one after the other.

    A ``prefix_key`` lists a request's cached prefixes, shortest first (``system.document``).
    A request goes in the wave of the first of its prefixes no earlier request has: the
    first request of a new system prompt in wave 0, the first of a new document under a
    known system prompt in wave 1, and requests whose prefixes are all cached already (or
    that have none) in the last wave.
    """
    levels = max((key.count(".") + 1 for key in prefix_keys if key), default=0)
    waves: list[list[int]] = [[] for _ in range(levels + 1)]
    seen: set[str] = set()
    for position, key in enumerate(prefix_keys):
        wave = levels
        if key:
            parts = key.split(".")
            for level in range(len(parts)):
                prefix = ".".join(parts[: level + 1])
                if prefix not in seen:
                    wave = min(wave, level)
                    seen.add(prefix)
        waves[wave].append(position)
    return [wave for wave in waves if wave]


def answer_partition(
    lake: Lake,
    provider: BatchProvider,
    partition: str,
    prices: PriceTable,
    concurrency: int,
    *,
    owner: str = "llm_pipelines",
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
) -> RealtimeStats:
    """Answer every real-time task of a partition, one results file per chunk, under its
    real-time lease.

    Tasks that already have a result or a dead letter, or sit in a batch, are skipped: a
    re-run (or a retry after a crash) asks only what is still unanswered, and a task
    re-routed after it was dispatched is never answered twice. Each chunk's files are named
    by a digest of its task ids, so new real-time tasks of a day get new files.

    A second pass over the partition while this one runs fails with
    :class:`~llm_pipelines.storage.lease.LeaseHeld` before reading anything, so no task is
    asked twice by overlapping runs; what is answered is read only once the lease is held.
    The lease is checked (and so renewed) before every call: a pass that lost it stops with
    :class:`~llm_pipelines.storage.lease.LeaseLost` and writes nothing more. The one repeat
    left: a process killed between a chunk's calls and its files (at most
    :data:`REALTIME_CHUNK` answers) is asked those tasks again by the next run, as nothing
    recorded that they were answered.
    """
    stats = RealtimeStats(totals=ResultTotals())
    with (
        partition_lease(
            lake, partition, owner=owner, purpose="realtime", ttl_s=lease_ttl_s, kind=REALTIME_LEASE
        ) as lease,
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="realtime") as pool,
    ):
        done = PartitionState.load(lake, partition).dispatched_ids(lake)
        for chunk in _realtime_chunks(lake, partition, done, stats):
            answers = _ask(provider, lease, pool, chunk)
            crash_point("realtime.after_calls")
            _write_chunk(lake, partition, prices, chunk, answers, stats)
            crash_point("realtime.after_chunk")
    return stats


def _ask(
    provider: BatchProvider, lease: PartitionLease, pool: ThreadPoolExecutor, chunk: pa.Table
) -> list[_Answer]:
    """Each request of a chunk asked once, wave after wave; the answers in chunk order."""
    requests = chunk["request"].to_pylist()
    answers: list[_Answer] = [(None, None)] * len(requests)

    def call(request: str) -> _Answer:
        lease.check()  # never call the provider once another pass may have taken over
        return _call(provider, request)

    for wave in cache_waves(chunk["prefix_key"].to_pylist()):
        for position, answer in zip(wave, pool.map(call, [requests[i] for i in wave]), strict=True):
            answers[position] = answer
    return answers


def _write_chunk(
    lake: Lake,
    partition: str,
    prices: PriceTable,
    chunk: pa.Table,
    answers: list[_Answer],
    stats: RealtimeStats,
) -> None:
    """A chunk's results file and dead-letter file, named by its task ids."""
    assert stats.totals is not None
    stats.tasks += chunk.num_rows
    unit = ids_digest(chunk["task_id"].to_pylist())
    results_path = lake.path(RESULTS, partition, f"realtime-{unit}.parquet")
    collected_at = utcnow()
    dead_path = dead_letter_path(lake, partition, "realtime", unit)
    with (
        write_results(lake, results_path, prices) as results,
        write_rows(lake, dead_path, DEAD_LETTER_SCHEMA) as dead,
    ):
        for task_id, task_type, requested, request, (message, error) in zip(
            chunk["task_id"].to_pylist(),
            chunk["task_type"].to_pylist(),
            chunk["requested_model"].to_pylist(),
            chunk["request"].to_pylist(),
            answers,
            strict=True,
        ):
            if message is None:
                dead.add(
                    dead_letter_row(
                        stage="realtime",
                        task_id=task_id,
                        reason=error or "no answer",
                        payload=request,
                        source=f"tasks/dt={partition}",
                    )
                )
                continue
            results.add(
                success_row(
                    task_id=task_id,
                    task_type=task_type,
                    route=REALTIME,
                    batch_id=None,
                    attempt=1,
                    requested_model=requested,
                    message=message,
                    request=request,
                    collected_at=collected_at,
                )
            )
    stats.chunks_written += 1
    stats.answered += results.totals.rows
    stats.dead_lettered += dead.rows
    stats.totals.rows += results.totals.rows
    stats.totals.cost_usd += results.totals.cost_usd
    stats.totals.sync_cost_usd += results.totals.sync_cost_usd
