"""Intake: landing lines → validated, deduplicated events; everything else → dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from llm_pipelines.costs import default_price_table
from llm_pipelines.routing.caching import (
    RequestShape,
    canonical_request,
    plain_shape,
    shape_array,
)
from llm_pipelines.storage.datasets import (
    DEAD_LETTER_SCHEMA,
    EVENTS,
    EVENTS_SCHEMA,
    LANDING,
    Utf8Builder,
    dead_letter_path,
    dead_letter_row,
    write_rows,
)
from llm_pipelines.storage.lake import Lake
from llm_pipelines.streams import paused_gc
from llm_pipelines.tasks import LLMTask, TaskFields, content_task_id, fast_task

EVENTS_FILE = "events.parquet"
MAX_REASON_CHARS = 600
PIECE_BYTES = 8 * 1024 * 1024
"""Landing lines are validated in pieces of about this many bytes (a few thousand tasks)."""


@dataclass
class IntakeStats:
    """What one intake pass saw."""

    landing_files: int = 0
    lines: int = 0
    """Landing lines that are not blank (whitespace only)."""
    valid: int = 0
    duplicates: int = 0
    invalid: int = 0
    landing_bytes: int = 0
    """Bytes of those lines, as landed, each with its newline."""


def explain(error: ValidationError) -> str:
    """A validation error as one line a person can act on: ``field: problem; …``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "task"
        parts.append(f"{where}: {item['msg']}")
    text = "; ".join(parts)
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


class ValidTask(NamedTuple):
    """A landing line that passed intake: its fields, canonical request and request shape."""

    fields: TaskFields
    request: bytes
    shape: RequestShape


def validate_line(
    line: bytes | memoryview, known_models: frozenset[str] | None = None
) -> tuple[ValidTask | None, str | None]:
    """Decode and validate one landing line; return the task or the reason it was rejected.

    The common shape is decoded and checked in C by :func:`~llm_pipelines.tasks.fast_task`;
    everything else, and every reject, goes through :class:`LLMTask`, whose rules and wording
    decide. ``known_models`` (default: the price table's) rejects a model nobody can price or
    serve.
    """
    models = known_models if known_models is not None else _default_models()
    fast = _fast_valid(line, models)
    return (fast, None) if fast is not None else _model_valid(line, models)


def _fast_valid(line: bytes | memoryview, models: frozenset[str]) -> ValidTask | None:
    """The task, if msgspec's fast path takes the line and its model is known; else None."""
    fast = fast_task(line)
    if fast is None or fast.fields.model not in models:
        return None
    fields, request = fast.fields, fast.request
    return ValidTask(
        fields, request, plain_shape(request, fields.model, fast.system, fast.temperature)
    )


def _model_valid(
    line: bytes | memoryview, models: frozenset[str]
) -> tuple[ValidTask | None, str | None]:
    """The task as :class:`LLMTask` validates it, or the reason the line was rejected."""
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
    if task.model not in models:
        return None, (
            f"model: {task.model!r} is not in the price table (known: {', '.join(sorted(models))})"
        )
    request, shape = canonical_request(task.request_params())
    return ValidTask(task.fields(), request, shape), None


def parse_line(
    line: bytes, known_models: frozenset[str] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """Decode one landing line; return the event row (without ``source``) or the reason."""
    valid, reason = validate_line(line, known_models)
    if valid is None:
        return None, reason
    fields, request, shape = valid
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
        "shape": shape._asdict(),
    }, None


@cache
def _default_models() -> frozenset[str]:
    return frozenset(default_price_table().models)


def landing_pieces(lake: Lake, paths: list[str]) -> Iterator[LandingPiece]:
    """The landing files' lines, a piece of about :data:`PIECE_BYTES` at a time."""
    for path in paths:
        name = path.rsplit("/", 1)[1]
        first_line = 1
        rest = b""
        with lake.fs.open(path, "rb") as handle:
            # One read per piece, and lines as views of it: no copy of each line.
            while block := handle.read(PIECE_BYTES):
                lines, rest = _whole_lines(rest, block)
                yield LandingPiece(name, first_line, lines)
                first_line += len(lines)
        if rest:
            yield LandingPiece(name, first_line, [rest])


def _whole_lines(rest: bytes, block: bytes) -> tuple[list[bytes | memoryview], bytes]:
    """The whole lines of ``rest + block`` without their newlines, and the unfinished one.

    All but the first are views of ``block`` (the first begins in ``rest``).
    """
    find = block.find
    end = find(b"\n")
    if end < 0:
        return [], rest + block
    lines: list[bytes | memoryview] = [rest + block[:end]]
    view = memoryview(block)
    start = end + 1
    while (end := find(b"\n", start)) >= 0:
        lines.append(view[start:end])
        start = end + 1
    return lines, block[start:]


@dataclass(frozen=True)
class LandingPiece:
    """Lines of one landing file (without their newlines), and the number of the first."""

    file: str
    first_line: int
    lines: list[bytes | memoryview]


@dataclass
class ParsedPiece:
    """A piece's valid events in line order (not yet deduplicated) and its rejects."""

    events: pa.RecordBatch
    dead: list[dict[str, Any]]
    lines: int
    invalid: int
    landing_bytes: int


def parse_piece(piece: LandingPiece) -> ParsedPiece:
    """Validate every line of a piece into a columnar batch of events and dead-letter rows."""
    models = _default_models()
    chunk = EventChunk(piece.file)
    dead: list[dict[str, Any]] = []
    lines = invalid = landing_bytes = 0
    for number, line in enumerate(piece.lines, piece.first_line):
        if not line:
            continue
        # Most lines are decoded straight from the landing bytes (msgspec takes surrounding
        # whitespace as JSON does); the rest are stripped first, and blank ones skipped.
        valid = _fast_valid(line, models)
        if valid is None:
            stripped = bytes(line).strip()
            if not stripped:
                continue
            valid, reason = _model_valid(stripped, models)
            if valid is None:
                lines += 1
                landing_bytes += len(line) + 1
                invalid += 1
                dead.append(
                    dead_letter_row(
                        stage="intake",
                        reason=reason or "invalid",
                        payload=stripped.decode("utf-8", errors="replace"),
                        source=f"{piece.file}:{number}",
                    )
                )
                continue
        lines += 1
        landing_bytes += len(line) + 1
        fields, request, shape = valid
        task_id = fields.task_id or content_task_id(fields.task_type, request)
        chunk.add(task_id, fields, request, shape, number)
    return ParsedPiece(chunk.take(), dead, lines, invalid, landing_bytes)


class EventChunk:
    """Validated events gathered row by row, then handed to parquet as one batch.

    Each row is kept as the tuples intake already has (its fields, its request shape) and
    transposed into columns once per chunk: building arrow arrays from lists is several times
    cheaper than per-row work. The request column arrives as canonical JSON bytes and is
    copied into one buffer as it comes.
    """

    def __init__(self, source_file: str) -> None:
        self.source_file = source_file
        self._rows: list[tuple[str, TaskFields, RequestShape, int]] = []
        self._requests = Utf8Builder()

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self,
        task_id: str,
        fields: TaskFields,
        request: bytes,
        shape: RequestShape,
        line_number: int,
    ) -> None:
        """Append one event (``request`` is its canonical JSON; the line is in the source)."""
        self._rows.append((task_id, fields, shape, line_number))
        self._requests.append(request)

    def take(self) -> pa.RecordBatch:
        """The gathered events as a record batch; the chunk starts empty again."""
        rows, self._rows = self._rows, []
        if rows:
            task_ids, fields, shapes, numbers = zip(*rows, strict=True)
            by_name = dict(zip(TaskFields._fields, zip(*fields, strict=True), strict=True))
        else:
            task_ids = shapes = numbers = ()
            by_name = {name: () for name in TaskFields._fields}
        dumps = orjson.dumps
        columns: dict[str, Any] = {
            **by_name,
            "task_id": task_ids,
            "request": self._requests.finish(),  # orjson's and msgspec's output: valid UTF-8
            "metadata": [dumps(meta).decode() if meta else None for meta in by_name["metadata"]],
            # "<file>:<line>", joined in arrow, not per row
            "source": pc.binary_join_element_wise(
                self.source_file, pc.cast(pa.array(numbers, pa.int64()), pa.string()), ":"
            ),
            "shape": shape_array(list(shapes)),
        }
        arrays = []
        for field in EVENTS_SCHEMA:
            values = columns[field.name]
            arrays.append(values if isinstance(values, pa.Array) else pa.array(values, field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=EVENTS_SCHEMA)


def ingest_partition(lake: Lake, partition: str) -> IntakeStats:
    """Validate and deduplicate one partition's landing zone into ``events/``.

    Streams piece by piece (events are written in one chunk per piece, on a writer thread);
    the set of task ids seen (about 100 bytes per task) is the only state that grows with
    the partition. Re-running replaces both the events file and the intake dead letters.
    """
    landing = lake.files(LANDING, partition, ".jsonl")
    stats = IntakeStats(landing_files=len(landing))
    seen: set[str] = set()
    events_path = lake.path(EVENTS, partition, EVENTS_FILE)
    dead_path = dead_letter_path(lake, partition, "intake", "partition")
    with (
        paused_gc(),
        write_rows(lake, events_path, EVENTS_SCHEMA, keep_empty=True) as events,
        write_rows(lake, dead_path, DEAD_LETTER_SCHEMA) as dead,
    ):
        for parsed in map(parse_piece, landing_pieces(lake, landing)):
            stats.lines += parsed.lines
            stats.invalid += parsed.invalid
            stats.landing_bytes += parsed.landing_bytes
            for row in parsed.dead:
                dead.add(row)
            repeats = []
            for row, task_id in enumerate(parsed.events["task_id"].to_pylist()):
                # At-least-once producers: a repeat of a task already taken is not new work.
                if task_id in seen:
                    repeats.append(row)
                else:
                    seen.add(task_id)
            stats.duplicates += len(repeats)
            events.add_batch(_without_rows(parsed.events, repeats))
    stats.valid = events.rows
    return stats


def _without_rows(batch: pa.RecordBatch, rows: list[int]) -> pa.Table:
    """``batch`` less ``rows`` (ascending), as slices of it: repeats are few, and copying a
    piece's requests to drop them cost more than the rest of deduplication."""
    pieces, start = [], 0
    for row in rows:
        if row > start:
            pieces.append(batch.slice(start, row - start))
        start = row + 1
    if start < batch.num_rows:
        pieces.append(batch.slice(start))
    return pa.Table.from_batches(pieces, schema=batch.schema)
