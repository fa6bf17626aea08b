"""Which failures deserve another attempt, and re-enqueuing dead letters a person chose.

A request that fails for a reason a later batch can fix (the API overloaded, an internal
error, the batch expired or was canceled before the request ran) is written to ``retries/``
with the number of the attempt still to make; the next submission pass packs it into a batch
of that attempt. One that fails for a reason a retry cannot fix (the request is invalid, the
model does not exist), or that has used up its attempts, is dead-lettered with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from llm_pipelines.crashpoints import crash_point
from llm_pipelines.dispatch.state import REPLAY_PREFIX, PartitionState, live_dead_letters
from llm_pipelines.providers.base import RequestResult
from llm_pipelines.routing.route import TASKS_FILE
from llm_pipelines.storage.datasets import RETRIES, RETRIES_SCHEMA, TASKS, utcnow, write_rows
from llm_pipelines.storage.lake import Lake

DEFAULT_MAX_ATTEMPTS = 3
"""Attempts a batch request gets (the first one included) before it is dead-lettered."""

RETRYABLE_ERROR_TYPES = frozenset(
    {"api_error", "overloaded_error", "rate_limit_error", "timeout_error", "missing_result"}
)
"""Request errors that say "try again later", not "this request is wrong"."""

REPLAYABLE_STAGES = ("collect", "realtime", "submit")
"""Dead-letter stages a replay can re-enqueue (those rows name a valid task)."""


def retryable(result: RequestResult) -> bool:
    """Whether a failed request may succeed in a later batch."""
    if result.outcome in ("expired", "canceled"):
        return True
    return result.outcome == "errored" and result.error_type in RETRYABLE_ERROR_TYPES


def failure_reason(result: RequestResult) -> str:
    """Why a request did not succeed, in the provider's words where it gave any."""
    if result.outcome == "errored":
        return f"{result.error_type}: {result.error_message}"
    if result.outcome == "expired":
        return "expired: the batch reached its 24-hour limit before this request ran"
    return "canceled: the batch was canceled before this request ran"


def retry_row(
    *,
    task_id: str,
    attempt: int,
    task_type: str,
    requested_model: str,
    request: str,
    reason: str,
    source: str,
) -> dict[str, Any]:
    """A row of ``retries/``: the task, the attempt still to make, and why."""
    return {
        "task_id": task_id,
        "attempt": attempt,
        "task_type": task_type,
        "requested_model": requested_model,
        "request": request,
        "reason": reason,
        "source": source,
        "requested_at": utcnow(),
    }


@dataclass
class ReplayStats:
    """What one replay chose and re-enqueued."""

    matched: int = 0
    replayed: int = 0
    not_routed: int = 0
    path: str | None = None


def choose_dead_letters(
    lake: Lake,
    partition: str,
    *,
    stages: list[str],
    reason_contains: str = "",
    task_ids: list[str] | None = None,
) -> pa.Table:
    """The standing dead letters of a partition that match the selection.

    Intake rejections cannot be replayed: they never became valid tasks. Fix the input (or
    the price table) and re-materialize ``raw_llm_events``; the landing zone keeps the line.
    """
    refused = set(stages) - set(REPLAYABLE_STAGES)
    if refused:
        raise ValueError(
            f"stages {sorted(refused)} cannot be replayed (only {', '.join(REPLAYABLE_STAGES)}):"
            " intake rejections are not valid tasks; fix the input and re-run raw_llm_events"
        )
    state = PartitionState.load(lake, partition)
    dead = live_dead_letters(lake, state, ["reason"])
    keep = pc.is_in(dead["stage"], value_set=pa.array(stages, pa.string()))
    if reason_contains:
        keep = pc.and_(keep, pc.match_substring(dead["reason"], reason_contains, ignore_case=True))
    if task_ids:
        keep = pc.and_(keep, pc.is_in(dead["task_id"], value_set=pa.array(task_ids, pa.string())))
    chosen = dead.filter(keep)
    # A task stands dead-lettered once; keep its latest row if the lake holds more.
    return chosen.group_by("task_id", use_threads=False).aggregate(
        [("attempt", "max"), ("reason", "last")]
    )


def replay_dead_letters(
    lake: Lake,
    partition: str,
    *,
    run_id: str,
    stages: list[str],
    reason_contains: str = "",
    task_ids: list[str] | None = None,
    dry_run: bool = False,
) -> ReplayStats:
    """Re-enqueue chosen dead letters as retries (one more attempt each).

    Writes ``retries/dt=<partition>/replay-<run_id>.parquet``; the dead letters it covers stop
    counting as terminal, and the next submission pass packs the tasks into new batches.
    The caller holds the partition's lease, so a submission pass cannot read half a replay.
    """
    chosen = choose_dead_letters(
        lake, partition, stages=stages, reason_contains=reason_contains, task_ids=task_ids
    )
    stats = ReplayStats(matched=chosen.num_rows)
    if dry_run or not chosen.num_rows:
        return stats
    attempts = dict(
        zip(chosen["task_id"].to_pylist(), chosen["attempt_max"].to_pylist(), strict=True)
    )
    reasons = dict(
        zip(chosen["task_id"].to_pylist(), chosen["reason_last"].to_pylist(), strict=True)
    )
    wanted = chosen["task_id"].combine_chunks()
    stats.path = lake.path(RETRIES, partition, f"{REPLAY_PREFIX}{run_id}.parquet")
    crash_point("replay.before_write")
    columns = ["task_id", "task_type", "requested_model", "request"]
    with write_rows(lake, stats.path, RETRIES_SCHEMA) as out:
        tasks = lake.path(TASKS, partition, TASKS_FILE)
        chosen_rows = lake.select_rows(
            tasks, ["task_id"], lambda ids: pc.is_in(ids["task_id"], value_set=wanted), columns
        )
        for chunk in chosen_rows:
            for task_id, task_type, requested, request in zip(
                *(chunk[c].to_pylist() for c in columns), strict=True
            ):
                out.add(
                    retry_row(
                        task_id=task_id,
                        attempt=attempts[task_id] + 1,
                        task_type=task_type,
                        requested_model=requested,
                        request=request,
                        reason=f"replayed by run {run_id}: {reasons[task_id]}",
                        source=f"replay:{run_id}",
                    )
                )
    stats.replayed = out.rows
    stats.not_routed = stats.matched - out.rows
    return stats
