"""Intake: landing lines → validated, deduplicated events; everything else → dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from llm_pipelines.costs import default_price_table
from llm_pipelines.storage.datasets import (
    DEAD_LETTER_SCHEMA,
    EVENTS,
    EVENTS_SCHEMA,
    LANDING,
    dead_letter_path,
    dead_letter_row,
    write_rows,
)
from llm_pipelines.storage.lake import Lake
from llm_pipelines.tasks import LLMTask, canonical_json, prompt_chars

EVENTS_FILE = "events.parquet"
MAX_REASON_CHARS = 600


@dataclass
class IntakeStats:
    """What one intake pass saw."""

    landing_files: int = 0
    lines: int = 0
    valid: int = 0
    duplicates: int = 0
    invalid: int = 0
    landing_bytes: int = 0


def explain(error: ValidationError) -> str:
    """A validation error as one line a person can act on: ``field: problem; …``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "task"
        parts.append(f"{where}: {item['msg']}")
    text = "; ".join(parts)
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def parse_line(
    line: bytes, known_models: frozenset[str] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """Decode one landing line; return the event row or the reason it was rejected.

    ``known_models`` (default: the price table's) rejects a model nobody can price or serve.
    """
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return None, f"not valid JSON: {error}"
    if not isinstance(raw, dict):
        return None, f"expected a JSON object, got {type(raw).__name__}"
    try:
        task = LLMTask.model_validate(raw)
    except ValidationError as error:
        return None, explain(error)
    models = known_models if known_models is not None else _default_models()
    if task.model not in models:
        return None, (
            f"model: {task.model!r} is not in the price table (known: {', '.join(sorted(models))})"
        )
    params = task.request_params()
    request = canonical_json(params)
    return {
        "task_id": task.resolved_task_id(request),
        "task_type": task.task_type,
        "model": task.model,
        "max_tokens": task.max_tokens,
        "priority": task.priority,
        "deadline": task.deadline,
        "requires_realtime": task.requires_realtime,
        "prompt_chars": prompt_chars(params),
        "request": request.decode(),
        "metadata": orjson.dumps(task.metadata).decode() if task.metadata else None,
    }, None


def _default_models() -> frozenset[str]:
    return frozenset(default_price_table().models)


def iter_landing_lines(lake: Lake, partition: str) -> Iterator[tuple[str, int, bytes]]:
    """Every non-blank line of a partition's landing files, with its file and line number."""
    for path in lake.files(LANDING, partition, ".jsonl"):
        with lake.fs.open(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                stripped = line.strip()
                if stripped:
                    yield path.rsplit("/", 1)[1], number, stripped


def ingest_partition(lake: Lake, partition: str) -> IntakeStats:
    """Validate and deduplicate one partition's landing zone into ``events/``.

    Streams line by line; only the set of task ids seen is kept in memory. Re-running
    replaces both the events file and the intake dead letters for the partition.
    """
    stats = IntakeStats(landing_files=len(lake.files(LANDING, partition, ".jsonl")))
    seen: set[str] = set()
    events_path = lake.path(EVENTS, partition, EVENTS_FILE)
    dead_path = dead_letter_path(lake, partition, "intake", "partition")
    with (
        write_rows(lake, events_path, EVENTS_SCHEMA, keep_empty=True) as events,
        write_rows(lake, dead_path, DEAD_LETTER_SCHEMA) as dead,
    ):
        for name, number, line in iter_landing_lines(lake, partition):
            stats.lines += 1
            stats.landing_bytes += len(line) + 1
            source = f"{name}:{number}"
            row, reason = parse_line(line)
            if row is None:
                stats.invalid += 1
                dead.add(
                    dead_letter_row(
                        stage="intake",
                        reason=reason or "invalid",
                        payload=line.decode("utf-8", errors="replace"),
                        source=source,
                    )
                )
                continue
            if row["task_id"] in seen:
                # At-least-once producers: a repeat of a task already taken is not new work.
                stats.duplicates += 1
                continue
            seen.add(row["task_id"])
            row["source"] = source
            events.add(row)
            stats.valid += 1
    return stats
