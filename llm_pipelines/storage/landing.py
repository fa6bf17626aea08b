"""The producer API: append tasks to the landing zone, the pipeline's queue."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date

import orjson

from llm_pipelines.storage.datasets import LANDING, utcnow
from llm_pipelines.storage.lake import Lake
from llm_pipelines.tasks import LLMTask

FLUSH_ROWS = 50_000
"""Tasks per landing file: large enough for few files, small enough to write quickly."""


class LandingZone:
    """Append-only, at-least-once intake: each flush is one JSON-lines file, written atomically.

    Producers may deliver the same task more than once (give it a ``task_id`` as its
    idempotency key); ``raw_llm_events`` keeps the first copy of each id.
    """

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def append(
        self,
        tasks: Iterable[LLMTask | dict[str, object] | str | bytes],
        *,
        partition: date | str | None = None,
        flush_id: str | None = None,
        flush_rows: int = FLUSH_ROWS,
    ) -> list[str]:
        """Write tasks for one day and return the files written.

        ``tasks`` may be :class:`LLMTask` objects, plain dicts or already-serialised JSON
        lines; validation happens at intake, so a bad item is dead-lettered there rather than
        lost here. ``flush_id`` names the flush: retrying a flush with the same id replaces
        its files instead of landing the tasks twice.
        """
        day = str(partition or utcnow().date())
        flush = flush_id or f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        written: list[str] = []
        items = iter(tasks)
        # Stream each file: memory stays at one line, whatever the flush size.
        while True:
            first = next(items, None)
            if first is None:
                return written
            path = self.lake.path(LANDING, day, f"{flush}-{len(written):05d}.jsonl")
            with self.lake.open_atomic(path) as handle:
                handle.write(_as_line(first) + b"\n")
                for _, task in zip(range(flush_rows - 1), items, strict=False):
                    handle.write(_as_line(task) + b"\n")
            written.append(path)


def _as_line(task: LLMTask | dict[str, object] | str | bytes) -> bytes:
    if isinstance(task, LLMTask):
        return task.model_dump_json(exclude_none=True, exclude_defaults=True).encode()
    if isinstance(task, dict):
        return orjson.dumps(task)
    raw = task.encode() if isinstance(task, str) else task
    # One task per line: a newline inside would split it into two broken events.
    return raw.replace(b"\n", b" ")
