"""Cancel a partition's in-flight batches; their unfinished requests come back to be retried."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_pipelines.crashpoints import crash_point
from llm_pipelines.dispatch.state import PartitionState
from llm_pipelines.providers.base import BatchProvider
from llm_pipelines.storage.datasets import utcnow, write_manifest
from llm_pipelines.storage.lake import Lake


@dataclass
class CancelStats:
    """What one cancel pass asked for."""

    canceled: list[str] = field(default_factory=list)
    already_ended: list[str] = field(default_factory=list)
    requests: int = 0


def cancel_partition_batches(
    lake: Lake, provider: BatchProvider, partition: str, batch_ids: list[str] | None = None
) -> CancelStats:
    """Ask the provider to cancel in-flight batches of a partition (all, or ``batch_ids``).

    Nothing else changes here: a canceled batch ends, ``batch_completion_sensor`` collects it
    like any other, and requests it had not run come back ``canceled``, which collection
    sends to ``retries/`` for a later batch (until they run out of attempts). Requests it had
    already answered keep their results. Safe to repeat: cancelling is idempotent.
    """
    stats = CancelStats()
    wanted = set(batch_ids or [])
    for manifest in PartitionState.load(lake, partition).in_flight:
        assert manifest.provider_batch_id is not None
        if wanted and manifest.provider_batch_id not in wanted:
            continue
        status = provider.cancel_batch(manifest.provider_batch_id)
        crash_point("cancel.after_cancel")
        if status.ended:
            stats.already_ended.append(status.id)
            continue
        manifest.cancel_requested_at = utcnow()
        write_manifest(lake, manifest)
        stats.canceled.append(status.id)
        stats.requests += manifest.request_count
    return stats
