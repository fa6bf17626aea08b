"""Collect ended batches: stream results into parquet, dead-letter what did not succeed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.costs import PriceTable
from llm_pipelines.dispatch.results import ResultTotals, write_results
from llm_pipelines.providers.base import BatchProvider, RequestResult
from llm_pipelines.routing import BATCH
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import (
    BATCHES,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    TASKS,
    TIMESTAMP,
    BatchManifest,
    dead_letter_path,
    dead_letter_row,
    read_manifests,
    utcnow,
    write_manifest,
    write_rows,
)
from llm_pipelines.storage.lake import Lake


@dataclass
class CollectStats:
    """What collecting one batch found."""

    batch_id: str
    counts: dict[str, int] = field(default_factory=dict)
    totals: ResultTotals = field(default_factory=ResultTotals)
    missing: int = 0
    unexpected: int = 0
    duplicates: int = 0


def in_flight(lake: Lake, partition: str) -> list[BatchManifest]:
    """Submitted batches whose results are not yet in the lake."""
    collected = {p.rsplit("/", 1)[1] for p in lake.files(RESULTS, partition, ".parquet")}
    return [
        m
        for m in read_manifests(lake, partition)
        if m.provider_batch_id is not None and m.results_name not in collected
    ]


def task_requests(lake: Lake, partition: str, task_ids: list[str]) -> dict[str, str]:
    """The original requests of a few tasks, for dead-letter rows that can be replayed."""
    if not task_ids:
        return {}
    wanted = pa.array(sorted(set(task_ids)), pa.string())
    found: dict[str, str] = {}
    path = lake.path(TASKS, partition, TASKS_FILE)
    # A batch's tasks sit together in the tasks file: only their row groups are decompressed.
    for chunk in lake.find_rows(path, "task_id", wanted, ["request"]):
        found.update(zip(chunk["task_id"].to_pylist(), chunk["request"].to_pylist(), strict=True))
    return found


MESSAGE_COLUMNS = (
    "model",
    "stop_reason",
    "output_text",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
)
"""Result-row columns that come from the provider's message (see ``RESULT_COLUMNS``)."""


def _first_sightings(positions: pa.Array, seen: bytearray, stats: CollectStats) -> pa.Array:
    """Rows whose task is expected (a position in the sidecar) and not seen before.

    The provider may repeat a line or send one nobody asked for: the first of each counts.
    """
    fresh = []
    for row, position in enumerate(positions.to_pylist()):
        if position is None:
            stats.unexpected += 1
        elif seen[position]:
            stats.duplicates += 1
        else:
            seen[position] = 1
            fresh.append(row)
    return pa.array(fresh, pa.int64())


def _result_rows(
    answered: pa.Table, meta: pa.Table, manifest: BatchManifest, collected_at: datetime
) -> pa.Table:
    """Result rows (costs excepted) for a chunk's succeeded requests."""
    rows = answered.num_rows
    return pa.table(
        {
            **{name: answered[name] for name in MESSAGE_COLUMNS},
            "task_id": answered["custom_id"],
            "task_type": meta["task_type"],
            "route": pa.repeat(BATCH, rows),
            "batch_id": pa.repeat(manifest.provider_batch_id, rows),
            "attempt": pa.repeat(pa.scalar(manifest.attempt, pa.int16()), rows),
            "requested_model": pc.coalesce(meta["requested_model"], answered["model"]),
            "collected_at": pa.repeat(pa.scalar(collected_at, TIMESTAMP), rows),
        }
    )


def _failure(row: dict[str, Any]) -> RequestResult:
    """A result chunk's row that did not succeed, as the request result it stands for."""
    if row["outcome"] == "errored":
        return RequestResult(
            row["custom_id"],
            "errored",
            error_type=row["error_type"],
            error_message=row["error_message"],
        )
    return RequestResult(row["custom_id"], row["outcome"])


def _reason(result: RequestResult) -> str:
    if result.outcome == "errored":
        return f"{result.error_type}: {result.error_message}"
    if result.outcome == "expired":
        return "expired: the batch reached its 24-hour limit before this request ran"
    return "canceled: the batch was canceled before this request ran"


def collect_batch(
    lake: Lake,
    provider: BatchProvider,
    manifest: BatchManifest,
    prices: PriceTable,
    ended_at: datetime | None = None,
) -> CollectStats:
    """Stream one ended batch's results into ``results/`` and its failures into ``dead_letter/``.

    The results file is written atomically under a name fixed by the manifest, so collecting
    the same batch twice (a retry after a crash, a second sensor run) replaces, never doubles.
    """
    assert manifest.provider_batch_id is not None
    sidecar = lake.read_table([lake.path(BATCHES, manifest.partition, manifest.tasks_name)])
    expected = sidecar["task_id"].combine_chunks()
    stats = CollectStats(batch_id=manifest.provider_batch_id)
    seen = bytearray(len(expected))  # by position in the sidecar
    failed: list[RequestResult] = []
    collected_at = utcnow()
    results_path = lake.path(RESULTS, manifest.partition, manifest.results_name)
    with write_results(lake, results_path, prices) as results:
        for chunk in provider.iter_result_chunks(manifest.provider_batch_id):
            positions = pc.index_in(chunk["custom_id"], value_set=expected)
            fresh = _first_sightings(positions, seen, stats)
            chunk, positions = chunk.take(fresh), positions.take(fresh)
            counts = pc.value_counts(chunk["outcome"])
            for outcome, count in zip(
                counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
            ):
                stats.counts[outcome] = stats.counts.get(outcome, 0) + count
            succeeded = pc.and_(pc.equal(chunk["outcome"], "succeeded"), chunk["has_message"])
            failed.extend(_failure(row) for row in chunk.filter(pc.invert(succeeded)).to_pylist())
            meta = sidecar.take(positions.filter(succeeded))
            results.add_table(_result_rows(chunk.filter(succeeded), meta, manifest, collected_at))
        missing = [
            task_id for task_id, got in zip(expected.to_pylist(), seen, strict=True) if not got
        ]
        stats.missing = len(missing)
        failed.extend(
            RequestResult(
                task_id,
                "errored",
                error_type="missing_result",
                error_message="the provider returned no result for this request",
            )
            for task_id in missing
        )
        requests = task_requests(lake, manifest.partition, [r.custom_id for r in failed])
        with write_rows(
            lake,
            dead_letter_path(lake, manifest.partition, "collect", manifest.key),
            DEAD_LETTER_SCHEMA,
        ) as dead:
            for result in failed:
                dead.add(
                    dead_letter_row(
                        stage="collect",
                        task_id=result.custom_id,
                        attempt=manifest.attempt,
                        reason=_reason(result),
                        payload=requests.get(result.custom_id),
                        source=manifest.provider_batch_id,
                    )
                )
    stats.totals = results.totals
    manifest.collected_at = collected_at
    manifest.ended_at = ended_at or manifest.ended_at
    manifest.counts = stats.counts
    write_manifest(lake, manifest)
    return stats


def pending_manifests(
    lake: Lake, partition: str, batch_ids: list[str] | None
) -> list[BatchManifest]:
    """In-flight manifests of a partition, narrowed to ``batch_ids`` when given."""
    flying = in_flight(lake, partition)
    if batch_ids:
        wanted = set(batch_ids)
        flying = [m for m in flying if m.provider_batch_id in wanted]
    return flying
