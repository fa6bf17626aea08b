"""Submit batch-routed tasks: intent first, then the provider call, then the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.dispatch.packing import Oversized, PackedBatch, pack
from llm_pipelines.providers.base import BatchLimits, BatchProvider
from llm_pipelines.routing import BATCH
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import (
    BATCHES,
    DEAD_LETTER_SCHEMA,
    TASKS,
    BatchManifest,
    dead_letter_path,
    dead_letter_row,
    read_manifests,
    utcnow,
    write_manifest,
    write_rows,
)
from llm_pipelines.storage.lake import Lake

SIDECAR_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("task_type", pa.string(), nullable=False),
        pa.field("requested_model", pa.string(), nullable=False),
    ]
)


@dataclass
class SubmitStats:
    """What one submission pass did."""

    batches: int = 0
    requests: int = 0
    payload_bytes: int = 0
    already_submitted: int = 0
    oversized: int = 0
    abandoned_intents: int = 0
    batch_ids: list[str] = field(default_factory=list)


def sidecar_ids(lake: Lake, manifest: BatchManifest) -> pa.Array:
    """The task ids a manifest covers."""
    path = lake.path(BATCHES, manifest.partition, manifest.tasks_name)
    return lake.read_table([path], ["task_id"]).column("task_id").combine_chunks()


def reconcile_intents(lake: Lake, partition: str) -> list[BatchManifest]:
    """Drop intents that never reached the provider, so their tasks are packed again.

    An intent without a provider id means the process died between writing the intent and
    recording the created batch. The provider may hold that batch (at most one per crash);
    we never collect a batch no manifest names, so its results cannot be doubled.
    """
    abandoned = [m for m in read_manifests(lake, partition) if m.provider_batch_id is None]
    for manifest in abandoned:
        lake.delete(lake.path(BATCHES, partition, manifest.manifest_name))
        lake.delete(lake.path(BATCHES, partition, manifest.tasks_name))
    return abandoned


def batch_key(custom_ids: list[str], attempt: int) -> str:
    """A deterministic manifest key: the same tasks packed again get the same name."""
    digest = hashlib.blake2b(digest_size=8)
    for custom_id in custom_ids:
        digest.update(custom_id.encode())
        digest.update(b"\x00")
    return f"a{attempt}-{digest.hexdigest()}"


def _unsubmitted(
    lake: Lake, partition: str, submitted: pa.Array, stats: SubmitStats
) -> Iterator[pa.RecordBatch]:
    """Batch-routed tasks not yet named by a manifest, chunk by chunk, ready for :func:`pack`."""
    path = lake.path(TASKS, partition, TASKS_FILE)
    columns = ["task_id", "route", "request", "task_type", "requested_model", "prefix_key"]
    for chunk in lake.iter_batches([path], columns):
        chunk = chunk.filter(pc.equal(chunk["route"], BATCH))
        # Requests sharing a cached prefix sit together, so one cache write serves the rest.
        order = pc.sort_indices(chunk, [("prefix_key", "ascending", "at_end")])
        chunk = chunk.take(order)
        if len(submitted):
            fresh = pc.invert(pc.is_in(chunk["task_id"], value_set=submitted))
            stats.already_submitted += chunk.num_rows - pc.sum(fresh).as_py()
            chunk = chunk.filter(fresh)
        yield chunk.select(["task_id", "request", *SIDECAR_SCHEMA.names[1:]])


def batch_payloads(
    lake: Lake,
    partition: str,
    limits: BatchLimits,
    submitted: pa.Array | None = None,
    stats: SubmitStats | None = None,
) -> Iterator[PackedBatch | Oversized]:
    """The partition's batch-routed tasks not in ``submitted``, packed into request bodies.

    Streams: one chunk of tasks and one (spooled) body at a time, whatever the partition size.
    """
    pending = _unsubmitted(
        lake,
        partition,
        submitted if submitted is not None else pa.array([], pa.string()),
        stats if stats is not None else SubmitStats(),
    )
    return pack(pending, limits, id_column="task_id", params_column="request")


def submit_partition(
    lake: Lake, provider: BatchProvider, partition: str, *, attempt: int = 1
) -> SubmitStats:
    """Pack every batch-routed task not yet submitted and send it to the provider.

    Safe to re-run: tasks already named by a manifest are skipped, and intents left by a
    crash are packed again.
    """
    stats = SubmitStats(abandoned_intents=len(reconcile_intents(lake, partition)))
    manifests = read_manifests(lake, partition)
    submitted = (
        pa.concat_arrays([sidecar_ids(lake, m) for m in manifests])
        if manifests
        else pa.array([], pa.string())
    )
    dead_path = dead_letter_path(lake, partition, "submit", f"a{attempt}")
    with write_rows(lake, dead_path, DEAD_LETTER_SCHEMA) as dead:
        for item in batch_payloads(lake, partition, provider.limits, submitted, stats):
            if isinstance(item, Oversized):
                stats.oversized += 1
                dead.add(
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
            _submit_one(lake, provider, partition, item, attempt, stats)
    return stats


def _submit_one(
    lake: Lake,
    provider: BatchProvider,
    partition: str,
    packed: PackedBatch,
    attempt: int,
    stats: SubmitStats,
) -> None:
    body = packed.close()
    sidecar = packed.rows.select(SIDECAR_SCHEMA.names).cast(SIDECAR_SCHEMA)
    manifest = BatchManifest(
        key=batch_key(sidecar["task_id"].to_pylist(), attempt),
        partition=partition,
        provider=provider.name,
        attempt=attempt,
        request_count=sidecar.num_rows,
        payload_bytes=len(body),
        intent_at=utcnow(),
    )
    lake.write_table(lake.path(BATCHES, partition, manifest.tasks_name), sidecar)
    write_manifest(lake, manifest)  # the intent: written before the provider knows
    try:
        status = provider.create_batch(body)
    finally:
        body.discard()
    manifest.provider_batch_id = status.id
    manifest.submitted_at = utcnow()
    write_manifest(lake, manifest)
    stats.batches += 1
    stats.requests += manifest.request_count
    stats.payload_bytes += manifest.payload_bytes
    stats.batch_ids.append(status.id)
