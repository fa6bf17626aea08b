"""Collect ended batches: results into parquet; retry or dead-letter what did not succeed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.costs import PriceTable
from llm_pipelines.crashpoints import crash_point
from llm_pipelines.dispatch.results import ResultsWriter, ResultTotals, write_results
from llm_pipelines.dispatch.retries import (
    DEFAULT_MAX_ATTEMPTS,
    failure_reason,
    retry_row,
    retryable,
)
from llm_pipelines.dispatch.state import PartitionState
from llm_pipelines.dispatch.structured import may_have_asked, structured_columns
from llm_pipelines.providers.base import RESULT_COLUMNS, BatchProvider, RequestResult
from llm_pipelines.routing import BATCH
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import (
    BATCHES,
    DEAD_LETTER_SCHEMA,
    RESULTS,
    RETRIES,
    RETRIES_SCHEMA,
    TASKS,
    TIMESTAMP,
    BatchManifest,
    dead_letter_path,
    dead_letter_row,
    utcnow,
    write_manifest,
    write_rows,
)
from llm_pipelines.storage.lake import Lake

_MESSAGE_COLUMNS = [
    "message_id",
    "stop_reason",
    "stop_sequence",
    "stop_details",
    "output_text",
    "content_json",
    "tool_calls",
    "input_tokens",
    "output_tokens",
    "thinking_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
]
_FAILURE_COLUMNS = ["custom_id", "outcome", "error_type", "error_message"]
_OUTCOME = RESULT_COLUMNS.get_field_index("outcome")
MALFORMED = "malformed"
"""The outcome counted for a result line without one."""

HELD_BYTES = 64 * 1024 * 1024
"""Answers that may be structured output (:func:`may_have_asked`) wait, up to this many bytes
of them, for their requests to be read in one pass over the tasks file (with the batch's
failures' when they fit), not one per chunk of result lines."""

STREAM_ATTEMPTS = 8
"""Times a results stream is read from the start when the connection drops mid-body."""


@cache
def stream_cut_errors() -> tuple[type[Exception], ...]:
    """What a results stream cut off mid-way raises (after the SDK's own retries of the call).

    A function, not a constant: the SDK is imported (seconds) only when a run handles an error,
    never when the definitions load (an ``except`` clause is evaluated only on an exception).
    """
    import anthropic
    import httpx2

    return (httpx2.TransportError, anthropic.APIConnectionError)


@dataclass
class CollectStats:
    """What collecting one batch found."""

    batch_id: str
    counts: dict[str, int] = field(default_factory=dict)
    totals: ResultTotals = field(default_factory=ResultTotals)
    missing: int = 0
    unexpected: int = 0
    duplicates: int = 0
    retrying: int = 0
    dead_lettered: int = 0
    stream_restarts: int = 0


def in_flight(lake: Lake, partition: str) -> list[BatchManifest]:
    """Submitted batches whose results are not yet in the lake."""
    return PartitionState.load(lake, partition).in_flight


def task_requests(lake: Lake, partition: str, task_ids: list[str]) -> dict[str, str]:
    """The original requests of a few tasks, for dead-letter rows that can be replayed."""
    if not task_ids:
        return {}
    wanted = pa.array(sorted(set(task_ids)), pa.string())
    found: dict[str, str] = {}
    path = lake.path(TASKS, partition, TASKS_FILE)
    # Only row groups holding one of them are decompressed: a batch's tasks sit in the row
    # groups of a stretch or two of dispatch order, so collecting every batch does not read
    # the whole file each time.
    rows = lake.select_rows(
        path,
        ["task_id"],
        lambda ids: pc.is_in(ids["task_id"], value_set=wanted),
        ["task_id", "request"],
    )
    for chunk in rows:
        found.update(zip(chunk["task_id"].to_pylist(), chunk["request"].to_pylist(), strict=True))
    return found


def collect_batch(
    lake: Lake,
    provider: BatchProvider,
    manifest: BatchManifest,
    prices: PriceTable,
    ended_at: datetime | None = None,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    log: logging.Logger | None = None,
) -> CollectStats:
    """Collect one ended batch: results, retries and dead letters, published atomically.

    Every file is written under a name fixed by the manifest, and the results file (the
    commit, see :mod:`llm_pipelines.dispatch.state`) last, so collecting the same batch twice
    (a retry after a crash, a second sensor run) replaces, never doubles. A results stream
    cut off part-way publishes nothing and is read again from the start, up to
    :data:`STREAM_ATTEMPTS` times; the SDK has already retried the request itself.
    """
    for stream_attempt in range(1, STREAM_ATTEMPTS + 1):
        try:
            stats = _collect_once(lake, provider, manifest, prices, ended_at, max_attempts)
        except stream_cut_errors() as error:
            if stream_attempt == STREAM_ATTEMPTS:
                raise
            if log is not None:
                log.warning(
                    f"batch {manifest.provider_batch_id}: results stream cut off ({error}); "
                    f"reading it again ({stream_attempt}/{STREAM_ATTEMPTS})"
                )
            continue
        stats.stream_restarts = stream_attempt - 1
        return stats
    raise AssertionError("unreachable")  # pragma: no cover


def _collect_once(
    lake: Lake,
    provider: BatchProvider,
    manifest: BatchManifest,
    prices: PriceTable,
    ended_at: datetime | None,
    max_attempts: int,
) -> CollectStats:
    assert manifest.provider_batch_id is not None
    sidecar = lake.read_table([lake.path(BATCHES, manifest.partition, manifest.tasks_name)])
    task_ids = sidecar["task_id"].combine_chunks()
    # Built once per batch: index_in would hash the batch's ids again for every chunk.
    position = {task_id: row for row, task_id in enumerate(task_ids.to_pylist())}
    lookup = position.get
    seen = np.zeros(len(task_ids), dtype=bool)  # by the task's row in the sidecar
    stats = CollectStats(batch_id=manifest.provider_batch_id)
    failed: list[RequestResult] = []
    held: list[pa.Table] = []  # answers whose requests are read before they are written
    held_bytes = 0
    collected_at = utcnow()
    results_path = lake.path(RESULTS, manifest.partition, manifest.results_name)
    with write_results(lake, results_path, prices) as results:
        # Columnar: each chunk of result lines is matched, counted and written with compute
        # kernels; only failures (a few) become Python objects.
        for chunk in provider.iter_result_chunks(manifest.provider_batch_id):
            chunk = chunk.set_column(_OUTCOME, "outcome", pc.fill_null(chunk["outcome"], MALFORMED))
            row = np.fromiter(
                (lookup(custom_id, -1) for custom_id in chunk["custom_id"].to_pylist()),
                dtype=np.int64,
                count=chunk.num_rows,
            )
            known = row >= 0
            stats.unexpected += int(len(row) - known.sum())
            chunk, row = _where(chunk, known), row[known]
            # The first line for a task counts; a repeat (here or in an earlier chunk) not.
            _, first = np.unique(row, return_index=True)
            fresh = np.zeros(len(row), dtype=bool)
            fresh[first] = True
            fresh &= ~seen[row]
            stats.duplicates += int(len(row) - fresh.sum())
            chunk, row = _where(chunk, fresh), row[fresh]
            seen[row] = True
            outcomes = pc.value_counts(chunk["outcome"])
            for outcome, count in zip(
                outcomes.field("values").to_pylist(),
                outcomes.field("counts").to_pylist(),
                strict=True,
            ):
                stats.counts[outcome] = stats.counts.get(outcome, 0) + count
            succeeded = pc.fill_null(
                pc.and_(pc.equal(chunk["outcome"], "succeeded"), chunk["has_message"]), False
            ).to_numpy(zero_copy_only=False)
            rows = _result_rows(
                _where(chunk, succeeded), sidecar.take(row[succeeded]), manifest, collected_at
            )
            asked = may_have_asked(rows["output_text"], rows["stop_reason"])
            results.add_table(_with_structured(_where(rows, ~asked)))
            maybe = _where(rows, asked)
            if maybe.num_rows:
                held.append(maybe)
                held_bytes += maybe.nbytes
            if held_bytes > HELD_BYTES:
                _add_checked(results, held, task_requests(lake, manifest.partition, _ids(held)))
                held, held_bytes = [], 0
            failed.extend(_failures(_where(chunk, ~succeeded)))
        crash_point("collect.after_read")
        missing = task_ids.filter(pa.array(~seen)).to_pylist()
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
        failed_ids = [result.custom_id for result in failed]
        # One read of the tasks file for the requests of both.
        requests = task_requests(lake, manifest.partition, failed_ids + _ids(held))
        _add_checked(results, held, requests)
        expected = _expected_meta(sidecar, failed_ids)
        # Published before the results file leaves this block: see the commit rule.
        stats.retrying, stats.dead_lettered = _settle_failures(
            lake, manifest, failed, expected, requests, max_attempts
        )
    crash_point("collect.after_results")
    stats.totals = results.totals
    manifest.collected_at = collected_at
    manifest.ended_at = ended_at or manifest.ended_at
    manifest.counts = stats.counts
    write_manifest(lake, manifest)
    return stats


def _result_rows(
    chunk: pa.Table, tasks: pa.Table, manifest: BatchManifest, collected_at: datetime
) -> pa.Table:
    """Result rows (costs excepted) of succeeded lines; ``tasks`` are their sidecar rows."""
    rows = chunk.num_rows
    return pa.table(
        {
            "task_id": chunk["custom_id"],
            "task_type": tasks["task_type"],
            "route": pa.repeat(pa.scalar(BATCH), rows),
            "batch_id": pa.repeat(pa.scalar(manifest.provider_batch_id), rows),
            "attempt": pa.repeat(pa.scalar(manifest.attempt, pa.int16()), rows),
            "model": chunk["model"],
            "requested_model": pc.coalesce(tasks["requested_model"], chunk["model"]),
            **{name: chunk[name] for name in _MESSAGE_COLUMNS},
            "collected_at": pa.repeat(pa.scalar(collected_at, TIMESTAMP), rows),
        }
    )


def _where(table: pa.Table, mask: np.ndarray) -> pa.Table:
    """The rows of ``table`` that ``mask`` keeps: without a copy when it keeps all or none
    (as it mostly does), since a chunk holds every answer's content twice over."""
    if mask.all():
        return table
    return table.filter(pa.array(mask)) if mask.any() else table.slice(0, 0)


def _with_structured(
    rows: pa.Table, outputs: pa.Array | None = None, errors: pa.Array | None = None
) -> pa.Table:
    """Result rows with their structured output columns (null: no format was asked for)."""
    nulls = pa.nulls(rows.num_rows, pa.string())
    return rows.append_column(
        "structured_output", outputs if outputs is not None else nulls
    ).append_column("structured_output_error", errors if errors is not None else nulls)


def _add_checked(results: ResultsWriter, held: list[pa.Table], requests: dict[str, str]) -> None:
    """Write held answers, their structured output checked against their requests."""
    for rows in held:
        outputs, errors = structured_columns(
            rows["output_text"].to_pylist(),
            rows["stop_reason"].to_pylist(),
            [requests.get(task_id) for task_id in rows["task_id"].to_pylist()],
        )
        results.add_table(_with_structured(rows, outputs, errors))


def _ids(tables: list[pa.Table]) -> list[str]:
    return [task_id for table in tables for task_id in table["task_id"].to_pylist()]


def _failures(chunk: pa.Table) -> list[RequestResult]:
    """Lines that did not succeed, as results to retry or dead-letter."""
    failures = []
    for custom_id, outcome, error_type, error_message in zip(
        *(chunk[name].to_pylist() for name in _FAILURE_COLUMNS), strict=True
    ):
        if outcome == "errored":
            failures.append(RequestResult(custom_id, outcome, None, error_type, error_message))
        elif outcome in ("expired", "canceled"):
            failures.append(RequestResult(custom_id, outcome))
        else:  # success without a message, or no outcome: nothing to store, nothing to retry
            failures.append(
                RequestResult(
                    custom_id,
                    "errored",
                    error_type="malformed_result",
                    error_message=f"the provider's result line had {outcome!r} and no message",
                )
            )
    return failures


def _expected_meta(sidecar: pa.Table, task_ids: list[str]) -> dict[str, tuple[str, str]]:
    """(task type, requested model) of a few of the batch's tasks."""
    wanted = sidecar.filter(pc.is_in(sidecar["task_id"], pa.array(task_ids, pa.string())))
    metas = zip(wanted["task_type"].to_pylist(), wanted["requested_model"].to_pylist(), strict=True)
    return dict(zip(wanted["task_id"].to_pylist(), metas, strict=True))


def _settle_failures(
    lake: Lake,
    manifest: BatchManifest,
    failed: list[RequestResult],
    expected: dict[str, tuple[str, str]],
    requests: dict[str, str],
    max_attempts: int,
) -> tuple[int, int]:
    """Retry what a later batch can fix, dead-letter the rest; return (retrying, dead).

    ``requests`` holds the failed tasks' requests (to resend, or to replay a dead letter).
    """
    assert manifest.provider_batch_id is not None
    attempt = manifest.attempt
    with (
        write_rows(
            lake, lake.path(RETRIES, manifest.partition, manifest.results_name), RETRIES_SCHEMA
        ) as retries,
        write_rows(
            lake,
            dead_letter_path(lake, manifest.partition, "collect", manifest.key),
            DEAD_LETTER_SCHEMA,
        ) as dead,
    ):
        for result in failed:
            reason = failure_reason(result)
            request = requests.get(result.custom_id)
            if retryable(result) and attempt < max_attempts and request is not None:
                task_type, requested_model = expected[result.custom_id]
                retries.add(
                    retry_row(
                        task_id=result.custom_id,
                        attempt=attempt + 1,
                        task_type=task_type,
                        requested_model=requested_model,
                        request=request,
                        reason=reason,
                        source=manifest.provider_batch_id,
                    )
                )
                continue
            if retryable(result):
                reason = f"{reason} (gave up after attempt {attempt} of {max_attempts})"
            dead.add(
                dead_letter_row(
                    stage="collect",
                    task_id=result.custom_id,
                    attempt=attempt,
                    reason=reason,
                    payload=request,
                    source=manifest.provider_batch_id,
                )
            )
    return retries.rows, dead.rows


def pending_manifests(
    lake: Lake, partition: str, batch_ids: list[str] | None
) -> list[BatchManifest]:
    """In-flight manifests of a partition, narrowed to ``batch_ids`` when given."""
    flying = in_flight(lake, partition)
    if batch_ids:
        wanted = set(batch_ids)
        flying = [m for m in flying if m.provider_batch_id in wanted]
    return flying
