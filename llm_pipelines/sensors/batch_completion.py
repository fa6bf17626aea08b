"""The sensor that waits for batches: polls in-flight batches, launches one collection each."""

import json
from dataclasses import asdict, dataclass

import dagster as dg

from llm_pipelines.dispatch.collect import in_flight
from llm_pipelines.resources import AnthropicResource, LakeResource
from llm_pipelines.sensors.jobs import collect_batch_results
from llm_pipelines.storage.datasets import BATCHES

FULL_SCAN_EVERY = 30
"""Every this many ticks, look at every partition, not only from the oldest open one: a
backfill that submits into an old partition is picked up within that many ticks."""


@dataclass
class CompletionCursor:
    """Where to start looking: the oldest partition that still had batches in flight."""

    oldest_open: str | None = None
    ticks: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> "CompletionCursor":
        """Read a cursor written by :meth:`dump` (an empty or foreign cursor starts afresh)."""
        try:
            return cls(**json.loads(raw)) if raw else cls()
        except (TypeError, ValueError):
            return cls()

    def dump(self) -> str:
        """Serialise for ``SensorResult(cursor=...)``."""
        return json.dumps(asdict(self))


def collection_run_key(batch_id: str) -> str:
    """The run_key of the collection run of one batch: collected at most once."""
    return f"collect-{batch_id}"


@dg.sensor(
    job=collect_batch_results,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Polls in-flight Message Batches (manifests without results) and launches one "
        "collection run per ended batch, keyed by batch id so none is collected twice."
    ),
)
def batch_completion_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource, anthropic: AnthropicResource
) -> dg.SensorResult:
    cursor = CompletionCursor.parse(context.cursor)
    store = lake.lake()
    partitions = store.partitions(BATCHES)
    full_scan = cursor.ticks % FULL_SCAN_EVERY == 0 or cursor.oldest_open is None
    if not full_scan:
        partitions = [p for p in partitions if p >= (cursor.oldest_open or "")]
    provider = None
    requests: list[dg.RunRequest] = []
    oldest_open: str | None = None
    running = 0
    for partition in partitions:
        flying = in_flight(store, partition)
        if not flying:
            continue
        oldest_open = oldest_open or partition
        provider = provider or anthropic.provider(context.log)
        for manifest in flying:
            assert manifest.provider_batch_id is not None
            status = provider.get_batch(manifest.provider_batch_id)
            if not status.ended:
                running += 1
                continue
            requests.append(
                dg.RunRequest(
                    run_key=collection_run_key(status.id),
                    partition_key=partition,
                    run_config={"ops": {"batch_results": {"config": {"batch_ids": [status.id]}}}},
                    tags={"llm_pipelines/batch_id": status.id},
                )
            )
    # Nothing open: start next time from the newest partition, where new batches appear.
    next_start = oldest_open or (partitions[-1] if partitions else cursor.oldest_open)
    new_cursor = CompletionCursor(oldest_open=next_start, ticks=cursor.ticks + 1)
    skip = None if requests else f"{running} batches still running; none ended"
    return dg.SensorResult(run_requests=requests, cursor=new_cursor.dump(), skip_reason=skip)
