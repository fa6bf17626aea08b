"""Collect ended batches: stream results into parquet, dead-letter what did not succeed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.costs import PriceTable
from llm_pipelines.dispatch.results import ResultTotals, success_row, write_results
from llm_pipelines.providers.base import BatchProvider, RequestResult
from llm_pipelines.routing import BATCH
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import (
    BATCHES,
    DEAD_LETTER_SCHEMA,
    RESULTS,
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
    for chunk in lake.iter_batches([path], ["task_id", "request"]):
        chunk = chunk.filter(pc.is_in(chunk["task_id"], value_set=wanted))
        found.update(zip(chunk["task_id"].to_pylist(), chunk["request"].to_pylist(), strict=True))
    return found


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
    expected = dict(
        zip(
            sidecar["task_id"].to_pylist(),
            zip(
                sidecar["task_type"].to_pylist(),
                sidecar["requested_model"].to_pylist(),
                strict=True,
            ),
            strict=True,
        )
    )
    stats = CollectStats(batch_id=manifest.provider_batch_id)
    seen: set[str] = set()
    failed: list[RequestResult] = []
    collected_at = utcnow()
    results_path = lake.path(RESULTS, manifest.partition, manifest.results_name)
    with write_results(lake, results_path, prices) as results:
        for result in provider.iter_results(manifest.provider_batch_id):
            meta = expected.get(result.custom_id)
            if meta is None:
                stats.unexpected += 1
                continue
            if result.custom_id in seen:
                stats.duplicates += 1
                continue
            seen.add(result.custom_id)
            stats.counts[result.outcome] = stats.counts.get(result.outcome, 0) + 1
            if result.outcome != "succeeded" or result.message is None:
                failed.append(result)
                continue
            results.add(
                success_row(
                    task_id=result.custom_id,
                    task_type=meta[0],
                    route=BATCH,
                    batch_id=manifest.provider_batch_id,
                    attempt=manifest.attempt,
                    requested_model=meta[1],
                    message=result.message,
                    collected_at=collected_at,
                )
            )
        missing = [task_id for task_id in expected if task_id not in seen]
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
