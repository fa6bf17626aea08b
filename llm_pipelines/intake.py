"""Intake: landing lines → validated, deduplicated events; everything else → dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
import pyarrow as pa
from pydantic import ValidationError

from llm_pipelines.costs import default_price_table
from llm_pipelines.storage.datasets import (
    DEAD_LETTER_SCHEMA,
    EVENTS,
    EVENTS_SCHEMA,
    LANDING,
    dead_letter_path,
    dead_letter_row,
    utf8_array,
    write_rows,
)
from llm_pipelines.storage.lake import Lake
from llm_pipelines.streams import iter_lines, read_blocks
from llm_pipelines.tasks import LLMTask, TaskFields, canonical_json, content_task_id, fast_task

EVENTS_FILE = "events.parquet"
MAX_REASON_CHARS = 600
CHUNK_ROWS = 4_096
CHUNK_BYTES = 16 * 1024 * 1024
"""An events chunk is written at this many rows or request bytes, whichever comes first."""
READ_BLOCK_BYTES = 8 * 1024 * 1024


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


def validate_line(
    line: bytes, known_models: frozenset[str] | None = None
) -> tuple[TaskFields | None, str | None]:
    """Decode and validate one landing line; return its fields or the reason it was rejected.

    The common shape is checked by :func:`~llm_pipelines.tasks.fast_task`; everything else,
    and every reject, goes through :class:`LLMTask`, whose rules and wording decide.
    ``known_models`` (default: the price table's) rejects a model nobody can price or serve.
    """
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return None, f"not valid JSON: {error}"
    if not isinstance(raw, dict):
        return None, f"expected a JSON object, got {type(raw).__name__}"
    fields = fast_task(raw)
    if fields is None:
        try:
            fields = LLMTask.model_validate(raw).fields()
        except ValidationError as error:
            return None, explain(error)
    models = known_models if known_models is not None else _default_models()
    if fields.model not in models:
        return None, (
            f"model: {fields.model!r} is not in the price table "
            f"(known: {', '.join(sorted(models))})"
        )
    return fields, None


def parse_line(
    line: bytes, known_models: frozenset[str] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """Decode one landing line; return the event row (without ``source``) or the reason."""
    fields, reason = validate_line(line, known_models)
    if fields is None:
        return None, reason
    request = canonical_json(fields.params)
    return {
        "task_id": fields.task_id or content_task_id(fields.task_type, request),
        "task_type": fields.task_type,
        "model": fields.model,
        "max_tokens": fields.max_tokens,
        "priority": fields.priority,
        "deadline": fields.deadline,
        "requires_realtime": fields.requires_realtime,
        "prompt_chars": fields.prompt_chars,
        "request": request.decode(),
        "metadata": orjson.dumps(fields.metadata).decode() if fields.metadata else None,
    }, None


@cache
def _default_models() -> frozenset[str]:
    return frozenset(default_price_table().models)


def iter_landing_lines(lake: Lake, path: str) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of one landing file, with their line numbers."""
    with lake.fs.open(path, "rb") as handle:
        for number, line in enumerate(iter_lines(read_blocks(handle, READ_BLOCK_BYTES)), 1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


class EventChunk:
    """Validated events gathered column by column, then handed to parquet as one batch.

    Columns (not a dict per row) because building arrow arrays from lists is several times
    cheaper; the request column arrives as canonical JSON bytes and is joined in one copy.
    """

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in EVENTS_SCHEMA.names}
        self._requests = self.columns["request"]
        self._request_bytes = 0
        # Bound once: appending is the per-row cost of the chunk.
        self._appends = tuple(self.columns[name].append for name in EVENTS_SCHEMA.names)

    def __len__(self) -> int:
        return len(self._requests)

    @property
    def full(self) -> bool:
        """Whether the chunk reached :data:`CHUNK_ROWS` rows or :data:`CHUNK_BYTES` bytes."""
        return len(self._requests) >= CHUNK_ROWS or self._request_bytes >= CHUNK_BYTES

    def add(self, task_id: str, fields: TaskFields, request: bytes, source: str) -> None:
        """Append one event."""
        (
            add_task_id,
            add_task_type,
            add_model,
            add_max_tokens,
            add_priority,
            add_deadline,
            add_realtime,
            add_prompt_chars,
            add_request,
            add_metadata,
            add_source,
        ) = self._appends
        add_task_id(task_id)
        add_task_type(fields.task_type)
        add_model(fields.model)
        add_max_tokens(fields.max_tokens)
        add_priority(fields.priority)
        add_deadline(fields.deadline)
        add_realtime(fields.requires_realtime)
        add_prompt_chars(fields.prompt_chars)
        add_request(request)
        add_metadata(orjson.dumps(fields.metadata).decode() if fields.metadata else None)
        add_source(source)
        self._request_bytes += len(request)

    def take(self) -> pa.RecordBatch:
        """The gathered events as a record batch; the chunk starts empty again."""
        arrays = []
        for field in EVENTS_SCHEMA:
            values = self.columns[field.name]
            if field.name == "request":
                arrays.append(utf8_array(values))  # orjson's output is valid UTF-8
            else:
                arrays.append(pa.array(values, field.type))
            values.clear()
        self._request_bytes = 0
        return pa.RecordBatch.from_arrays(arrays, schema=EVENTS_SCHEMA)


def ingest_partition(lake: Lake, partition: str) -> IntakeStats:
    """Validate and deduplicate one partition's landing zone into ``events/``.

    Streams line by line and writes in bounded chunks; the set of task ids seen (about 100
    bytes per task) is the only state that grows with the partition. Re-running replaces
    both the events file and the intake dead letters for the partition.
    """
    landing = lake.files(LANDING, partition, ".jsonl")
    stats = IntakeStats(landing_files=len(landing))
    models = _default_models()
    seen: set[str] = set()
    chunk = EventChunk()
    events_path = lake.path(EVENTS, partition, EVENTS_FILE)
    dead_path = dead_letter_path(lake, partition, "intake", "partition")
    with (
        write_rows(lake, events_path, EVENTS_SCHEMA, keep_empty=True) as events,
        write_rows(lake, dead_path, DEAD_LETTER_SCHEMA) as dead,
    ):
        for path in landing:
            name = path.rsplit("/", 1)[1]
            for number, line in iter_landing_lines(lake, path):
                stats.lines += 1
                stats.landing_bytes += len(line) + 1
                fields, reason = validate_line(line, models)
                if fields is None:
                    stats.invalid += 1
                    dead.add(
                        dead_letter_row(
                            stage="intake",
                            reason=reason or "invalid",
                            payload=line.decode("utf-8", errors="replace"),
                            source=f"{name}:{number}",
                        )
                    )
                    continue
                request = canonical_json(fields.params)
                task_id = fields.task_id or content_task_id(fields.task_type, request)
                if task_id in seen:
                    # At-least-once producers: a repeat of a task already taken is not new work.
                    stats.duplicates += 1
                    continue
                seen.add(task_id)
                chunk.add(task_id, fields, request, f"{name}:{number}")
                if chunk.full:
                    events.add_batch(chunk.take())
        events.add_batch(chunk.take())
    stats.valid = events.rows
    return stats
