"""Submit batch work: intent first, then the provider call, then the manifest.

One pass (:func:`submit_partition`) holds the partition's lease and submits everything not
yet with the provider: batch-routed tasks never submitted (attempt 1) and retries waiting
in ``retries/`` (attempt *n*, packed apart so each batch has one attempt number). Before
that it reconciles what a crashed pass left behind: intents with no provider id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llm_pipelines.crashpoints import crash_point
from llm_pipelines.dispatch.collect import STREAM_ATTEMPTS, stream_cut_errors
from llm_pipelines.dispatch.packing import (
    ENTRY_OVERHEAD_BYTES,
    OVERSIZED,
    Oversized,
    PackedBatch,
    assign_batches,
    pack,
    pack_assigned,
)
from llm_pipelines.dispatch.state import (
    NotYetDone,
    PartitionState,
    open_tasks,
    pending_retry_pairs,
    sidecar_ids,
)
from llm_pipelines.providers.base import BatchLimits, BatchProvider, BatchStatus
from llm_pipelines.routing import BATCH
from llm_pipelines.storage.datasets import (
    BATCHES,
    DEAD_LETTER_SCHEMA,
    ORPHANS,
    BatchManifest,
    dead_letter_path,
    dead_letter_row,
    read_manifests,
    utcnow,
    write_manifest,
)
from llm_pipelines.storage.lake import Lake, read_row_groups, row_group_bounds
from llm_pipelines.storage.lease import DEFAULT_LEASE_TTL_S, PartitionLease, partition_lease
from llm_pipelines.tasks import ids_digest

__all__ = ["SIDECAR_SCHEMA", "SubmitStats", "batch_key", "sidecar_ids", "submit_partition"]

SIDECAR_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("task_type", pa.string(), nullable=False),
        pa.field("requested_model", pa.string(), nullable=False),
    ]
)
CLOCK_SKEW = timedelta(seconds=5)
"""How far the provider's clock may be behind ours when matching a batch to an intent."""
ORPHAN_SAMPLE = 50
"""Result lines of an ended candidate checked against the intent's tasks."""
NEIGHBOUR_DAYS = 2
"""Batches named by manifests this many partitions either side are never taken for orphans."""
CREATE_WINDOW = timedelta(hours=1)
"""A batch created for an intent exists within this long of it (one call, SDK retries included)."""

PACKED_COLUMNS = ["task_id", "request", "task_type", "requested_model"]
"""What the packer is given per task: id and request, plus the sidecar's metadata."""
_ASSIGN_COLUMNS = ["task_id", "route", "dispatch_position", "request_bytes"]
"""What batches are assigned from, for the whole partition at once."""


@dataclass
class SubmitStats:
    """What one submission pass did."""

    batches: int = 0
    requests: int = 0
    retry_requests: int = 0
    payload_bytes: int = 0
    already_submitted: int = 0
    oversized: int = 0
    abandoned_intents: int = 0
    orphans_found: int = 0
    orphans_adopted: int = 0
    orphans_canceled: int = 0
    batch_ids: list[str] = field(default_factory=list)


def batch_key(custom_ids: list[str], attempt: int) -> str:
    """A deterministic manifest key: the same tasks packed again get the same name."""
    digest = hashlib.blake2b(digest_size=8)
    for custom_id in custom_ids:
        digest.update(custom_id.encode())
        digest.update(b"\x00")
    return f"a{attempt}-{digest.hexdigest()}"


# -- reconciliation ----------------------------------------------------------------------------


def _total(status: BatchStatus) -> int:
    return sum(status.request_counts.values())


def _holds_intent(
    lake: Lake, provider: BatchProvider, intent: BatchManifest, batch: BatchStatus
) -> bool:
    """Whether an ended batch's results name the intent's tasks (a running one: assume so)."""
    if not batch.ended:
        return True  # the API cannot show what a running batch holds
    ids = set(sidecar_ids(lake, intent).to_pylist())
    for _ in range(STREAM_ATTEMPTS):  # a cut stream is read again, as collection does
        try:
            for seen, result in enumerate(provider.iter_results(batch.id), start=1):
                if result.custom_id not in ids:
                    return False
                if seen >= ORPHAN_SAMPLE:
                    break
            return True
        except stream_cut_errors():
            continue
    return False


def _match_orphans(
    lake: Lake, provider: BatchProvider, intents: list[BatchManifest], candidates: list[BatchStatus]
) -> list[tuple[BatchManifest, BatchStatus]]:
    """Pair each abandoned intent with the provider batch a crash may have left for it.

    A candidate must have the intent's request count and have been created just after it
    (the intent is written before the call; :data:`CLOCK_SKEW` allows for the provider's
    clock). An ended candidate must also name the intent's tasks in its results. A running
    one cannot be looked into: a wrong match there is a batch no manifest of this partition
    or its neighbours names, created within seconds of the intent with the same count;
    cancelling it sends its unfinished requests back to be retried: wasteful, never lossy.
    """
    matches = []
    left = list(candidates)
    for intent in sorted(intents, key=lambda m: m.intent_at):
        fits = sorted(
            (
                c
                for c in left
                if _total(c) == intent.request_count
                and intent.intent_at - CLOCK_SKEW <= c.created_at
                and c.created_at <= intent.intent_at + CREATE_WINDOW
            ),
            key=lambda c: c.created_at,
        )
        for candidate in fits:
            if _holds_intent(lake, provider, intent, candidate):
                left.remove(candidate)
                matches.append((intent, candidate))
                break
    return matches


def reconcile_intents(
    lake: Lake, provider: BatchProvider, state: PartitionState, stats: SubmitStats
) -> None:
    """Settle the intents a crashed pass left: adopt or cancel the batch each call made.

    An intent without a provider id means the process died between writing the intent and
    recording the created batch (we hold the lease, so nobody is mid-call). The provider may
    have created that batch: it is looked for in the batch listing (newest first, back to the
    oldest intent; see :func:`_match_orphans`) and recorded in ``orphans/``. Then:

    - **ended**: its results were seen to name the intent's tasks, so they are the answers to
      exactly the intent's requests. It is *adopted*: the intent becomes its manifest, and
      collection takes it like any other batch (retrying or dead-lettering what it did not
      answer). Nothing of it is sent again.
    - **still running**: it is canceled and the intent dropped; the pass packs its tasks again
      at the same attempt. The API cannot show what a running batch holds, so it was matched
      on size and creation time alone; adopting it on that would, if it were someone else's,
      leave the tasks waiting up to a day on a stranger's batch and then cost each an attempt
      (reported missing; at the last attempt, dead-lettered never sent). Cancelling costs at
      most the requests it ran before the cancel, soon after the crash.
    - **not found**: the call made no batch; the intent is dropped and its tasks packed again.
    """
    if not state.intents:
        return
    stats.abandoned_intents = len(state.intents)
    known = _known_batch_ids(lake, state)
    earliest = min(m.intent_at for m in state.intents) - CLOCK_SKEW
    candidates = []
    for status in provider.list_batches():
        if status.created_at < earliest:
            break
        if status.id not in known:
            candidates.append(status)
    adopted: list[BatchManifest] = []
    for intent, batch in _match_orphans(lake, provider, state.intents, candidates):
        stats.orphans_found += 1
        if batch.ended:
            adopted.append(_adopt(lake, intent, batch))
            stats.orphans_adopted += 1
            action = "adopted"
        else:
            provider.cancel_batch(batch.id)
            stats.orphans_canceled += 1
            action = "canceled"
        # Written after the adopted manifest: from then on the manifest names the batch (so
        # no later pass takes it for an orphan again); a crash in between loses this record
        # of it only.
        lake.write_json(
            lake.path(ORPHANS, state.partition, f"{batch.id}.json"),
            {
                "provider_batch_id": batch.id,
                "intent_key": intent.key,
                "intent_at": intent.intent_at.isoformat(),
                "batch_created_at": batch.created_at.isoformat(),
                "request_count": intent.request_count,
                "status_when_found": batch.processing_status,
                "request_counts_when_found": batch.request_counts,
                "action": action,
                "found_at": utcnow().isoformat(),
            },
        )
    kept = {m.key for m in adopted}
    for intent in state.intents:
        if intent.key not in kept:
            lake.delete(lake.path(BATCHES, state.partition, intent.manifest_name))
            lake.delete(lake.path(BATCHES, state.partition, intent.tasks_name))
    # The rest of the pass sees adopted tasks as submitted: not packed again, nor retried.
    state.submitted.extend(adopted)
    state.intents = []


def _adopt(lake: Lake, intent: BatchManifest, batch: BatchStatus) -> BatchManifest:
    """Turn the intent into the manifest of the ended batch its interrupted call created."""
    manifest = intent.model_copy(
        update={
            "provider_batch_id": batch.id,
            "submitted_at": batch.created_at,
            "ended_at": batch.ended_at,
            "note": (
                f"adopted {utcnow().isoformat()}: the pass that created this batch died before "
                "recording it; found ended in the provider's listing (see orphans/)"
            ),
        }
    )
    write_manifest(lake, manifest)
    return manifest


def _known_batch_ids(lake: Lake, state: PartitionState) -> set[str]:
    """Provider batches that are certainly not orphans of this partition's intents.

    Those named by its manifests or already recorded in its ``orphans/`` (canceled, or
    adopted and so named by a manifest as well), and the same for
    the partitions a few days either side: batches of neighbouring days are the likeliest
    to have been created around the same time with the same request count.
    """
    known = {m.provider_batch_id for m in state.submitted}
    day = date.fromisoformat(state.partition)
    for offset in range(-NEIGHBOUR_DAYS, NEIGHBOUR_DAYS + 1):
        partition = str(day + timedelta(days=offset))
        if offset:
            known |= {m.provider_batch_id for m in read_manifests(lake, partition)}
        known |= {p.rsplit("/", 1)[1].removesuffix(".json") for p in lake.files(ORPHANS, partition)}
    return {k for k in known if k}


# -- what to submit ----------------------------------------------------------------------------


def _fresh(
    lake: Lake, partition: str, limits: BatchLimits, taken: pa.Array, stats: SubmitStats
) -> Iterator[PackedBatch | Oversized]:
    """Batch-routed tasks not yet in an attempt-1 batch, packed in dispatch order.

    Batches are assigned from narrow columns of the whole partition (ids, routes, dispatch
    positions, request sizes), filling them in dispatch order: tasks sharing a cached prefix
    share a batch or consecutive ones. Then the row groups holding a task to send are read
    once each, in dispatch order of their first task: routing groups rows by stretch of
    dispatch order, so each batch fills from a few row groups read one after another, and is
    handed on once whole while the next fills. The order depends on the file alone, so a
    batch packed again after a crash holds the same requests in the same order. A pass with
    nothing new to send (a retry pass) reads no request at all.
    """
    # One open file for the sizes and the requests: a re-routing that replaces the file
    # meanwhile must not pair the batch numbers of one file with the rows of another.
    with open_tasks(lake, partition) as parquet:
        plan = _assign(parquet, limits, taken, stats)
        if plan is None:
            return
        parts = read_row_groups(parquet, plan.groups, PACKED_COLUMNS)
        yield from pack_assigned(
            _wanted_rows(parts, plan),
            limits,
            plan.counts,
            id_column="task_id",
            params_column="request",
        )


_NOT_SENT = OVERSIZED - 1
"""The batch number of a row that is not to be sent (another route, or already in a batch)."""


@dataclass(frozen=True)
class _Assignment:
    """Where each row of the tasks file goes, and the order to read its row groups in."""

    numbers: np.ndarray
    """Every row's batch number, in file order (:data:`_NOT_SENT`: none)."""
    counts: np.ndarray
    """Rows of each batch."""
    groups: list[int]
    """The row groups holding a row to send, in the order to read them."""
    task_ids: pa.ChunkedArray
    """Every row's id, to check the rows read against."""


def _assign(
    parquet: pq.ParquetFile, limits: BatchLimits, taken: pa.Array, stats: SubmitStats
) -> _Assignment | None:
    """Batch numbers for the file's batch-routed rows not in ``taken`` (None: none to send)."""
    narrow = parquet.read(columns=_ASSIGN_COLUMNS)
    unsent = NotYetDone(BATCH, taken)
    send = unsent(narrow).to_numpy(zero_copy_only=False)
    stats.already_submitted += unsent.skipped
    if not send.any():
        return None
    kept = narrow.filter(pa.array(send))
    entry_bytes = (
        pc.binary_length(kept["task_id"]).to_numpy()
        + kept["request_bytes"].to_numpy()
        + ENTRY_OVERHEAD_BYTES
    )
    order = np.argsort(kept["dispatch_position"].to_numpy(), kind="stable")
    in_order = assign_batches(entry_bytes[order], limits)
    numbers = np.full(len(send), _NOT_SENT, dtype=np.int64)
    numbers[np.flatnonzero(send)[order]] = in_order

    bounds = row_group_bounds(parquet)
    positions = narrow["dispatch_position"].to_numpy()
    first_position = {}  # row group -> dispatch position of its first row, of any route
    for group, (start, stop) in enumerate(pairwise(bounds.tolist())):
        if (numbers[start:stop] != _NOT_SENT).any():
            first_position[group] = int(positions[start:stop].min())
    return _Assignment(
        numbers=numbers,
        counts=np.bincount(in_order[in_order >= 0]),
        groups=sorted(first_position, key=first_position.__getitem__),
        task_ids=narrow["task_id"],
    )


def _wanted_rows(
    parts: Iterator[tuple[int, pa.RecordBatch]], plan: _Assignment
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Each part read, without the rows not to send, with its rows' batch numbers.

    Raises if a part's ids are not those the batches were assigned for: the file is not the
    one that was read.
    """
    for first_row, part in parts:
        if not part["task_id"].equals(
            plan.task_ids.slice(first_row, part.num_rows).combine_chunks()
        ):
            raise RuntimeError(
                "the tasks file changed while its batches were being packed (routed again?); "
                "nothing more was sent: submit the partition again"
            )
        held = plan.numbers[first_row : first_row + part.num_rows]
        wanted = held != _NOT_SENT
        if wanted.all():
            yield part, held
        elif wanted.any():
            yield part.filter(pa.array(wanted)), held[wanted]


def _retries(
    lake: Lake, files: list[str], pending: pa.Table, attempt: int, stats: SubmitStats
) -> Iterator[pa.RecordBatch]:
    """Retry rows waiting for a batch of ``attempt``, each task once."""
    wanted = pending.filter(pc.equal(pending["attempt"], attempt))["task_id"].combine_chunks()
    columns = ["task_id", "attempt", "request", "task_type", "requested_model"]
    seen: set[str] = set()  # retries are few: a set of their ids is small
    for chunk in lake.iter_batches(files, columns):
        chunk = chunk.filter(
            pc.and_(
                pc.equal(chunk["attempt"], attempt), pc.is_in(chunk["task_id"], value_set=wanted)
            )
        )
        rows = []
        for row, task_id in enumerate(chunk["task_id"].to_pylist()):
            if task_id not in seen:
                seen.add(task_id)
                rows.append(row)
        if rows:
            stats.retry_requests += len(rows)
            yield chunk.take(pa.array(rows, pa.int64())).select(PACKED_COLUMNS)


def batch_payloads(
    lake: Lake,
    partition: str,
    limits: BatchLimits,
    taken: pa.Array | None = None,
    stats: SubmitStats | None = None,
) -> Iterator[PackedBatch | Oversized]:
    """The partition's batch-routed tasks not in ``taken``, packed into request bodies.

    Memory holds narrow columns and one chunk of requests; bodies are spooled to local disk.
    """
    return _fresh(
        lake,
        partition,
        limits,
        taken if taken is not None else pa.array([], pa.string()),
        stats if stats is not None else SubmitStats(),
    )


# -- submission ----------------------------------------------------------------------------------


def submit_partition(
    lake: Lake,
    provider: BatchProvider,
    partition: str,
    *,
    owner: str = "llm_pipelines",
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
) -> SubmitStats:
    """Submit everything of a partition the provider does not hold yet, under its lease.

    Safe to re-run and to run twice at once: tasks a batch of the same attempt already
    holds are skipped, intents left by a crash are reconciled, and a second concurrent pass
    fails with :class:`~llm_pipelines.storage.lease.LeaseHeld` instead of sending anything.
    """
    stats = SubmitStats()
    with partition_lease(
        lake, partition, owner=owner, purpose="submit", ttl_s=lease_ttl_s
    ) as lease:
        state = PartitionState.load(lake, partition)
        reconcile_intents(lake, provider, state, stats)
        # Anything already in a batch, answered or dead-lettered is not sent again, whatever
        # route a later routing pass gave it.
        taken = state.dispatched_ids(lake)
        fresh = _fresh(lake, partition, provider.limits, taken, stats)
        _submit_stream(lake, provider, partition, 1, fresh, lease, stats)
        pending = pending_retry_pairs(lake, state)
        files = state.committed_retry_files(lake)
        for attempt in sorted(set(pending["attempt"].to_pylist())):
            retries = _retries(lake, files, pending, attempt, stats)
            items = pack(retries, provider.limits, id_column="task_id", params_column="request")
            _submit_stream(lake, provider, partition, attempt, items, lease, stats)
    return stats


def _submit_stream(
    lake: Lake,
    provider: BatchProvider,
    partition: str,
    attempt: int,
    items: Iterator[PackedBatch | Oversized],
    lease: PartitionLease,
    stats: SubmitStats,
) -> None:
    oversized: list[dict[str, Any]] = []  # rare: requests over the whole batch limit
    for item in items:
        if isinstance(item, Oversized):
            stats.oversized += 1
            oversized.append(
                dead_letter_row(
                    stage="submit",
                    task_id=item.custom_id,
                    attempt=attempt,
                    reason=(
                        f"request is {item.size:,} bytes serialised; a batch holds at most "
                        f"{provider.limits.max_bytes:,}"
                    ),
                    payload=None,
                    source=f"tasks/dt={partition}",
                )
            )
            continue
        _submit_one(lake, provider, partition, item, attempt, lease, stats)
    if oversized:
        # Named by the tasks it holds: a later pass (which skips them) never overwrites it.
        unit = f"a{attempt}-{ids_digest(row['task_id'] for row in oversized)}"
        lake.write_table(
            dead_letter_path(lake, partition, "submit", unit),
            pa.Table.from_pylist(oversized, schema=DEAD_LETTER_SCHEMA),
        )


def _submit_one(
    lake: Lake,
    provider: BatchProvider,
    partition: str,
    packed: PackedBatch,
    attempt: int,
    lease: PartitionLease,
    stats: SubmitStats,
) -> None:
    body = packed.close()
    sidecar = packed.rows.select(SIDECAR_SCHEMA.names).cast(SIDECAR_SCHEMA)
    custom_ids = sidecar["task_id"].to_pylist()
    manifest = BatchManifest(
        key=batch_key(custom_ids, attempt),
        partition=partition,
        provider=provider.name,
        attempt=attempt,
        request_count=len(custom_ids),
        payload_bytes=len(body),
        intent_at=utcnow(),
    )
    lake.write_table(lake.path(BATCHES, partition, manifest.tasks_name), sidecar)
    write_manifest(lake, manifest)  # the intent: written before the provider knows
    crash_point("submit.after_intent")
    lease.check()  # never call the provider once another pass may have taken over
    try:
        status = provider.create_batch(body)
    finally:
        body.discard()
    crash_point("submit.after_create")
    manifest.provider_batch_id = status.id
    manifest.submitted_at = utcnow()
    write_manifest(lake, manifest)
    stats.batches += 1
    stats.requests += manifest.request_count
    stats.payload_bytes += manifest.payload_bytes
    stats.batch_ids.append(status.id)
