"""The sensor that keeps batch work moving: collects ended batches, resubmits what waits.

Each tick, for every partition with open batch work, it asks for:

- one ``collect_batch_results`` run per ended batch (run_key ``collect-<batch id>``), and
- one ``resubmit_batch_retries`` run when retries wait in ``retries/`` or a crashed run left
  intents behind and nobody holds the partition's lease (run_key ``resubmit-<day>-<digest of
  that work>``, so new work gets a new key and the same work is not submitted twice).

The sensor writes nothing and keeps only a scan cursor: a tick that dies half-way is simply
done again by the next. A run that failed (or died) is asked for again under a fresh run_key,
since Dagster never relaunches a key it has seen.
"""

import hashlib
import json
from dataclasses import asdict, dataclass

import dagster as dg

from llm_pipelines.crashpoints import crash_point
from llm_pipelines.dispatch.state import PartitionState, pending_retry_pairs
from llm_pipelines.resources import AnthropicResource, LakeResource
from llm_pipelines.sensors.jobs import collect_batch_results, resubmit_batch_retries
from llm_pipelines.storage.datasets import BATCHES, RETRIES
from llm_pipelines.storage.lake import Lake
from llm_pipelines.storage.lease import live_lease

FULL_SCAN_EVERY = 30
"""Every this many ticks, look at every partition, not only from the oldest open one: a
backfill that submits into an old partition is picked up within that many ticks."""
WORK_TAG = "llm_pipelines/work"
"""Run tag naming the unit of work (collecting one batch, resubmitting one state)."""
FINISHED_BADLY = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


@dataclass
class CompletionCursor:
    """Where to start looking: the oldest partition that still had open batch work."""

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
    """The base run_key of the collection run of one batch: collected at most once."""
    return f"collect-{batch_id}"


def resubmission_run_key(partition: str, work: list[str]) -> str:
    """The base run_key of a resubmission of ``work`` (retry files and intent keys)."""
    digest = hashlib.blake2b("\n".join(sorted(work)).encode(), digest_size=6).hexdigest()
    return f"resubmit-{partition}-{digest}"


def launch_key(instance: dg.DagsterInstance, base: str) -> str:
    """The run_key to request for a unit of work.

    ``base`` until a run for it exists; that run's own key while it is queued, running or
    succeeded (the daemon skips a key it has seen); a new key once the latest run for it
    failed or was canceled, so the work is tried again instead of waiting forever.
    """
    filters = dg.RunsFilter(tags={WORK_TAG: base})
    records = instance.get_run_records(filters=filters, limit=1)
    if not records:
        return base
    latest = records[0].dagster_run
    if latest.status in FINISHED_BADLY:
        return f"{base}-retry{instance.get_runs_count(filters)}"
    return latest.tags.get("dagster/run_key", base)


def _request(
    instance: dg.DagsterInstance,
    base: str,
    job: str,
    partition: str,
    run_config: dict[str, object] | None = None,
    tags: dict[str, str] | None = None,
) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=launch_key(instance, base),
        job_name=job,
        partition_key=partition,
        run_config=run_config or {},
        tags={WORK_TAG: base, **(tags or {})},
    )


@dg.sensor(
    jobs=[collect_batch_results, resubmit_batch_retries],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Polls in-flight Message Batches (manifests without results) and launches one "
        "collection run per ended batch, keyed by batch id so none is collected twice; "
        "launches a resubmission when retries wait or a crashed run left intents behind."
    ),
)
def batch_completion_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource, anthropic: AnthropicResource
) -> dg.SensorResult:
    cursor = CompletionCursor.parse(context.cursor)
    store = lake.lake()
    partitions = sorted(set(store.partitions(BATCHES)) | set(store.partitions(RETRIES)))
    full_scan = cursor.ticks % FULL_SCAN_EVERY == 0 or cursor.oldest_open is None
    if not full_scan:
        partitions = [p for p in partitions if p >= (cursor.oldest_open or "")]
    provider = None
    requests: list[dg.RunRequest] = []
    oldest_open: str | None = None
    running = 0
    for partition in partitions:
        state = PartitionState.load(store, partition)
        waiting = _resubmittable_work(store, state)
        if not state.in_flight and not waiting:
            continue
        oldest_open = oldest_open or partition
        for manifest in state.in_flight:
            assert manifest.provider_batch_id is not None
            provider = provider or anthropic.provider(context.log)
            status = provider.get_batch(manifest.provider_batch_id)
            if not status.ended:
                running += 1
                continue
            requests.append(
                _request(
                    context.instance,
                    collection_run_key(status.id),
                    collect_batch_results.name,
                    partition,
                    {"ops": {"batch_results": {"config": {"batch_ids": [status.id]}}}},
                    {"llm_pipelines/batch_id": status.id},
                )
            )
            crash_point("sensor.mid_tick")
        if waiting and live_lease(store, partition) is None:
            base = resubmission_run_key(partition, waiting)
            requests.append(
                _request(context.instance, base, resubmit_batch_retries.name, partition)
            )
    # Nothing open: start next time from the newest partition, where new batches appear.
    next_start = oldest_open or (partitions[-1] if partitions else cursor.oldest_open)
    new_cursor = CompletionCursor(oldest_open=next_start, ticks=cursor.ticks + 1)
    skip = None if requests else f"{running} batches still running; none ended"
    return dg.SensorResult(run_requests=requests, cursor=new_cursor.dump(), skip_reason=skip)


def _resubmittable_work(store: Lake, state: PartitionState) -> list[str]:
    """Names of what a resubmission would take up: retry files with waiting rows, intents."""
    work = [f"intent:{m.key}" for m in state.intents]
    files = state.committed_retry_files(store)
    if files and len(pending_retry_pairs(store, state)):
        work += [f"retries:{path.rsplit('/', 1)[1]}" for path in files]
    return work
