"""Intake: landing lines → validated, deduplicated events; everything else → dead letters."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import IO, Any, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from fsspec import AbstractFileSystem
from pydantic import ValidationError

from llm_pipelines.costs import default_price_table
from llm_pipelines.providers.fast_contract import generated
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
from llm_pipelines.tasks import (
    LLMTask,
    TaskFields,
    content_digest,
    content_task_id,
    fast_task,
    rich_task,
)
from llm_pipelines.worker_pool import WorkerProcess, available_cores

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
    """Lines repeating a task already taken, word for word: at-least-once delivery."""
    conflicts: int = 0
    """Lines reusing a task id already taken for different content: dead-lettered."""
    invalid: int = 0
    landing_bytes: int = 0
    """Bytes of those lines, as landed, each with its newline."""
    worker_pieces: int = 0
    """Pieces parsed in worker processes (the rest were parsed by intake's own process)."""


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


ModelLimits = Mapping[str, int | str | None]
"""Every model id a task may name → its ``max_tokens`` ceiling (None: none published), or
the reason work for it is refused (a retired model, say).

From the model catalog (:meth:`~llm_pipelines.providers.catalog.ModelCatalog.intake_models`);
without one, the price table's models, with no ceilings."""


def validate_line(
    line: bytes | memoryview, known_models: ModelLimits | None = None
) -> tuple[ValidTask | None, str | None]:
    """Decode and validate one landing line; return the task or the reason it was rejected.

    The common shape is decoded and checked in C by :func:`~llm_pipelines.tasks.fast_task`;
    everything else, and every reject, goes through :class:`LLMTask` (the producer's fields)
    and the installed SDK's request types (:mod:`llm_pipelines.providers.contract`), whose
    rules and wording decide. ``known_models`` (default: the price table's) rejects a model
    nobody can price or serve, and ``max_tokens`` over a model's ceiling.
    """
    models = known_models if known_models is not None else _default_models()
    fast = _fast_valid(line, models)
    return (fast, None) if fast is not None else _model_valid(line, models)


def _fast_valid(line: bytes | memoryview, models: ModelLimits) -> ValidTask | None:
    """The task, if one of msgspec's fast paths takes the line and its model and max_tokens
    are allowed; else None: the common shape (:func:`~llm_pipelines.tasks.fast_task`), then
    any other the SDK's types take (:func:`~llm_pipelines.tasks.rich_task`)."""
    fast = fast_task(line)
    if fast is None:
        rich = rich_task(line)
        if rich is None or _model_problem(rich[0].model, rich[0].max_tokens, models):
            return None
        request, shape = canonical_request(rich[1])
        return ValidTask(rich[0], request, shape)
    fields, request = fast.fields, fast.request
    ceiling = models.get(fields.model, _UNKNOWN)  # inlined _model_problem: once per task
    if ceiling is not None and (type(ceiling) is not int or fields.max_tokens > ceiling):
        return None  # unknown, refused, or over the ceiling: the other path says which
    return ValidTask(fields, request, plain_shape(request, fields.model, fast.system))


def _model_valid(
    line: bytes | memoryview, models: ModelLimits
) -> tuple[ValidTask | None, str | None]:
    """The task as :class:`LLMTask` validates it, or the reason the line was rejected."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return None, _utf8_problem(line) or f"not valid JSON: {error}"
    if not isinstance(raw, dict):
        return None, f"expected a JSON object, got {type(raw).__name__}"
    try:
        task = LLMTask.model_validate(raw)
    except ValidationError as error:
        return None, explain(error)
    if problem := task.request_problem():
        return None, problem
    params = task.request_params()
    if problem := _model_problem(params["model"], params["max_tokens"], models):
        return None, problem
    request, shape = canonical_request(params)
    return ValidTask(task.fields(), request, shape), None


def _utf8_problem(line: bytes | memoryview) -> str | None:
    """Where a line is not UTF-8, said plainly (orjson calls it "surrogates not allowed")."""
    try:
        bytes(line).decode("utf-8")
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        return f"not valid UTF-8: byte {byte:#04x} at offset {error.start} ({error.reason})"
    return None


_UNKNOWN = "unknown"


def _model_problem(model: str, max_tokens: int, models: ModelLimits) -> str | None:
    """Why a task may not ask ``model`` for ``max_tokens`` (None: it may)."""
    if model not in models:
        return f"model: {model!r} is not a model the pipeline can serve and price (known: " + (
            ", ".join(sorted(models)) + ")"
        )
    ceiling = models[model]
    if isinstance(ceiling, str):
        return ceiling
    if ceiling is not None and max_tokens > ceiling:
        return (
            f"max_tokens: {max_tokens:,} is above {model}'s limit of {ceiling:,} output tokens "
            "(the provider's Models API)"
        )
    return None


def parse_line(
    line: bytes, known_models: ModelLimits | None = None
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
def _default_models() -> ModelLimits:
    return dict.fromkeys(default_price_table().models)


@dataclass(frozen=True)
class PieceRange:
    """Bytes ``[start, end)`` of a landing file. Its piece is the lines that begin there.

    A line belongs to the piece its first byte falls in, and is read whole, across the end
    of the range if need be. So pieces can be planned from file sizes alone, and parsed in
    any order, by any process.
    """

    path: str
    start: int
    end: int

    @property
    def file(self) -> str:
        """The landing file's name, as event sources give it."""
        return self.path.rsplit("/", 1)[1]


def plan_pieces(lake: Lake, paths: list[str], piece_bytes: int | None = None) -> list[PieceRange]:
    """The landing files cut into ranges of ``piece_bytes`` (default :data:`PIECE_BYTES`)."""
    size = piece_bytes or PIECE_BYTES
    return [
        PieceRange(path, start, min(start + size, length))
        for path in paths
        for length in [lake.size(path)]
        for start in range(0, length, size)
    ]


UTF8_BOM = b"\xef\xbb\xbf"
TAIL_READ_BYTES = 64 * 1024
"""Reads past a range's end to finish its last line: most lines end within one."""


def read_piece(handle: IO[bytes], piece: PieceRange) -> list[bytes | memoryview]:
    """The lines (without newlines, blank ones included) that begin in ``piece``'s range.

    All but the last are views of one read, not copies of each line.
    """
    begin = max(piece.start - 1, 0)
    handle.seek(begin)
    data = handle.read(piece.end - begin)
    first = 0
    if piece.start == 0 and data.startswith(UTF8_BOM):
        first = len(UTF8_BOM)  # spreadsheet exports start with one; it is not part of a line
    elif piece.start > 0:
        # data[0] is the byte before the range: a line begins after each newline
        first = data.find(b"\n") + 1
        if first == 0 or first == len(data):
            return []  # every byte here belongs to a line that began before the range
    find = data.find
    view = memoryview(data)
    lines: list[bytes | memoryview] = []
    while (end := find(b"\n", first)) >= 0:
        lines.append(view[first:end])
        first = end + 1
    if first < len(data):  # the last line goes on past the range (or the file just ends)
        tail = [data[first:]]
        while block := handle.read(TAIL_READ_BYTES):
            end = block.find(b"\n")
            tail.append(block if end < 0 else block[:end])
            if end >= 0:
                break
        lines.append(b"".join(tail))
    return lines


@dataclass
class PieceReport:
    """What parsing a piece found besides its events: its rejects and its counts.

    Line numbers count from the piece's first line (0): only the pieces before it in its
    file say where that is (see :func:`events_with_source` and :meth:`dead_rows`).
    """

    dead: list[tuple[int, str, str]]
    """(line, reason, payload) of each invalid line."""
    physical_lines: int
    """Every line of the piece, blank ones included."""
    lines: int
    invalid: int
    landing_bytes: int

    def dead_rows(self, file: str, first_line: int) -> list[dict[str, Any]]:
        """The dead-letter rows of the piece's invalid lines, ``first_line`` its first."""
        return [
            dead_letter_row(
                stage="intake", reason=reason, payload=payload, source=f"{file}:{first_line + line}"
            )
            for line, reason, payload in self.dead
        ]


def events_with_source(parsed: pa.RecordBatch, file: str, first_line: int) -> pa.RecordBatch:
    """A parsed piece's events (:data:`PARSED_SCHEMA`) with their ``source``: ``file`` and
    line, the piece's first being ``first_line``."""
    numbers = pc.add(parsed["line"], pa.scalar(first_line, pa.int64()))
    source = pc.binary_join_element_wise(file, pc.cast(numbers, pa.string()), ":")
    columns = [source if name == "source" else parsed[name] for name in EVENTS_SCHEMA.names]
    return pa.RecordBatch.from_arrays(columns, schema=EVENTS_SCHEMA)


PARSED_SCHEMA = pa.schema(
    [
        *(
            pa.field("line", pa.int32(), nullable=False) if field.name == "source" else field
            for field in EVENTS_SCHEMA
        ),
        pa.field("content_digest", pa.uint64(), nullable=False),
    ]
)
"""A parsed piece's events: as :data:`EVENTS_SCHEMA`, with the line within the piece where
the source will be, and each task's :func:`~llm_pipelines.tasks.content_digest` (to tell a
repeat from a conflict; not stored)."""


def parse_range(
    fs: AbstractFileSystem, piece: PieceRange, models: ModelLimits | None = None
) -> tuple[pa.RecordBatch, PieceReport]:
    """Read and parse one piece of a landing file (in a worker process, or here)."""
    with paused_gc(), fs.open(piece.path, "rb") as handle:
        return parse_piece(read_piece(handle, piece), models)


def parse_piece(
    lines: list[bytes | memoryview], models: ModelLimits | None = None
) -> tuple[pa.RecordBatch, PieceReport]:
    """Validate every line of a piece into a columnar batch of events and its rejects."""
    models = models if models is not None else _default_models()
    chunk = EventChunk()
    dead: list[tuple[int, str, str]] = []
    valid_lines = invalid = landing_bytes = 0
    for number, line in enumerate(lines):
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
                valid_lines += 1
                landing_bytes += len(line) + 1
                invalid += 1
                payload = stripped.decode("utf-8", errors="replace")
                dead.append((number, reason or "invalid", payload))
                continue
        valid_lines += 1
        landing_bytes += len(line) + 1
        fields, request, shape = valid
        task_id = fields.task_id or content_task_id(fields.task_type, request)
        chunk.add(task_id, fields, request, shape, number)
    return chunk.take(), PieceReport(dead, len(lines), valid_lines, invalid, landing_bytes)


class EventChunk:
    """Validated events gathered row by row, then handed to parquet as one batch.

    Each row is kept as the tuples intake already has (its fields, its request shape) and
    transposed into columns once per chunk: building arrow arrays from lists is several times
    cheaper than per-row work. The request column arrives as canonical JSON bytes and is
    copied into one buffer as it comes.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[str, TaskFields, RequestShape, int, int]] = []
        self._requests = Utf8Builder()

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self,
        task_id: str,
        fields: TaskFields,
        request: bytes,
        shape: RequestShape,
        line: int,
    ) -> None:
        """Append one event (``request`` is its canonical JSON; ``line`` its piece's line)."""
        self._rows.append((task_id, fields, shape, line, content_digest(fields, request)))
        self._requests.append(request)

    def take(self) -> pa.RecordBatch:
        """The gathered events as a :data:`PARSED_SCHEMA` batch; the chunk starts empty again."""
        rows, self._rows = self._rows, []
        if rows:
            task_ids, fields, shapes, numbers, digests = zip(*rows, strict=True)
            by_name = dict(zip(TaskFields._fields, zip(*fields, strict=True), strict=True))
        else:
            task_ids = shapes = numbers = digests = ()
            by_name = {name: () for name in TaskFields._fields}
        dumps = orjson.dumps
        columns: dict[str, Any] = {
            **by_name,
            "task_id": task_ids,
            "request": self._requests.finish(),  # orjson's and msgspec's output: valid UTF-8
            "metadata": [dumps(meta).decode() if meta else None for meta in by_name["metadata"]],
            "line": numbers,
            "shape": shape_array(list(shapes)),
            "content_digest": digests,
        }
        arrays = []
        for field in PARSED_SCHEMA:
            values = columns[field.name]
            arrays.append(values if isinstance(values, pa.Array) else pa.array(values, field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=PARSED_SCHEMA)


def ingest_partition(
    lake: Lake, partition: str, workers: int | None = None, models: ModelLimits | None = None
) -> IntakeStats:
    """Validate and deduplicate one partition's landing zone into ``events/``.

    Streams piece by piece: pieces are parsed in ``workers`` processes (default: one per
    core, for landing zones of :data:`MIN_PIECES_FOR_WORKERS` pieces or more; 0: here), and
    taken back in landing order; events are written in one chunk per piece, on a writer
    thread. ``models`` are the model ids tasks may name, with their ``max_tokens`` ceilings
    (default: the price table's, no ceilings). The first line of each task id is its event.
    A later line with that id and the same content is a repeat (at-least-once producers)
    and is dropped; one with different content is a producer bug and is dead-lettered,
    naming where the task first landed. The ids seen and a 64-bit digest of each task's
    content (about 110 bytes per task) are the
    only state that grows with the partition. Re-running replaces both the events file and
    the intake dead letters.
    """
    landing = lake.files(LANDING, partition, ".jsonl")
    pieces = plan_pieces(lake, landing)
    stats = IntakeStats(landing_files=len(landing))
    seen: dict[str, int] = {}  # task id -> content digest of its first line
    conflicts: list[dict[str, Any]] = []  # dead-letter rows waiting for the first line's source
    events_path = lake.path(EVENTS, partition, EVENTS_FILE)
    dead_path = dead_letter_path(lake, partition, "intake", "partition")
    first_line: dict[str, int] = {}
    with paused_gc(), write_rows(lake, dead_path, DEAD_LETTER_SCHEMA) as dead:
        with write_rows(lake, events_path, EVENTS_SCHEMA, keep_empty=True) as events:
            for piece, (parsed, report) in zip(
                pieces, parsed_in_order(lake, pieces, workers, models, stats), strict=True
            ):
                line = first_line.get(piece.path, 1)
                first_line[piece.path] = line + report.physical_lines
                stats.lines += report.lines
                stats.invalid += report.invalid
                stats.landing_bytes += report.landing_bytes
                for row in report.dead_rows(piece.file, line):
                    dead.add(row)
                batch = events_with_source(parsed, piece.file, line)
                dropped = []
                digests = parsed["content_digest"].to_pylist()
                for row, task_id in enumerate(parsed["task_id"].to_pylist()):
                    first = seen.get(task_id)
                    if first is None:
                        seen[task_id] = digests[row]
                        continue
                    dropped.append(row)
                    if first != digests[row]:
                        conflicts.append(_conflict_row(batch, row))
                        stats.conflicts += 1
                    else:
                        stats.duplicates += 1
                events.add_batch(_without_rows(batch, dropped))
        stats.valid = events.rows
        for row in _with_first_sources(lake, events_path, conflicts):
            dead.add(row)
    return stats


MIN_PIECES_FOR_WORKERS = 8
"""Below this many pieces (about 64 MB of landing lines), parsing stays in the calling
process: starting a worker would cost more than it saves."""
WORKERS_VARIABLE = "LLM_PIPELINES_INTAKE_WORKERS"
WORKER_DEPTH = 2
"""Pieces sent to a worker and not yet answered, at most: one to parse, one queued."""
PIECES_IN_FLIGHT = 10
"""Pieces parsed or being parsed past the next one to write, at most (bounds memory)."""
PARSE_HERE = True
"""Whether the process that runs intake parses pieces too, beside its workers (tests turn
it off to send every piece to a worker)."""


def intake_workers(pieces: int) -> int:
    """Worker processes that parse beside intake's own: ``$LLM_PIPELINES_INTAKE_WORKERS`` if
    set, else one per core past the first, for :data:`MIN_PIECES_FOR_WORKERS` pieces or more.
    """
    configured = os.environ.get(WORKERS_VARIABLE, "").strip()
    if configured:
        try:
            return max(int(configured), 0)
        except ValueError:
            raise ValueError(
                f"{WORKERS_VARIABLE} must be a whole number of processes, got {configured!r}"
            ) from None
    return available_cores() - 1 if pieces >= MIN_PIECES_FOR_WORKERS else 0


def parsed_in_order(
    lake: Lake,
    pieces: list[PieceRange],
    workers: int | None = None,
    models: ModelLimits | None = None,
    stats: IntakeStats | None = None,
) -> Iterator[tuple[pa.RecordBatch, PieceReport]]:
    """Each piece parsed (:func:`parse_range`), in order, here and in ``workers`` worker
    processes beside (None: :func:`intake_workers`).

    This process writes the events too, on a thread, so it does not hand everything away:
    each worker is kept :data:`WORKER_DEPTH` pieces to parse, and this process parses the
    others itself, never more than :data:`PIECES_IN_FLIGHT` past the next one to yield. The
    split follows the speeds: a worker that answers slowly (its core busy) is given less,
    and one still starting is given nothing. Pieces parsed by workers are counted in
    ``stats.worker_pieces``.
    """
    stats = stats if stats is not None else IntakeStats()
    count = intake_workers(len(pieces)) if workers is None else workers
    if count == 0:
        yield from (parse_range(lake.fs, piece, models) for piece in pieces)
        return
    with contextlib.ExitStack() as stack:
        helpers = {stack.enter_context(WorkerProcess()): deque[int]() for _ in range(count)}
        for helper, sent in helpers.items():
            # A new interpreter takes seconds to import the SDK and build the contracts: it is
            # sent no piece until it has, so this process never waits on one that is starting.
            helper.send(warm_up, (models,))
            sent.append(_WARMING)
        done: dict[int, tuple[pa.RecordBatch, PieceReport]] = {}
        assigned = 0  # pieces sent or parsed so far, in order
        for wanted in range(len(pieces)):
            while wanted not in done:
                for helper, sent in helpers.items():
                    while helper.ready():
                        _take(done, sent.popleft(), helper.receive(), stats)
                    while (
                        helper.pending < WORKER_DEPTH
                        and not (sent and sent[0] == _WARMING)
                        and assigned < len(pieces)
                        and assigned - wanted < PIECES_IN_FLIGHT
                    ):
                        helper.send(parse_range, (lake.fs, pieces[assigned], models))
                        sent.append(assigned)
                        assigned += 1
                if wanted in done:
                    break
                if PARSE_HERE and assigned < len(pieces) and assigned - wanted < PIECES_IN_FLIGHT:
                    done[assigned] = parse_range(lake.fs, pieces[assigned], models)
                    assigned += 1
                    continue
                # Every piece before this one is done, so it is its worker's oldest; or no
                # worker has it yet, because they are all still warming up.
                helper = next(
                    (h for h, sent in helpers.items() if sent and sent[0] == wanted), None
                ) or next(h for h, sent in helpers.items() if sent and sent[0] == _WARMING)
                _take(done, helpers[helper].popleft(), helper.receive(), stats)
            yield done.pop(wanted)


_WARMING = -1
"""Stands for a worker's warm-up call among the pieces sent to it."""


def _take(
    done: dict[int, tuple[pa.RecordBatch, PieceReport]],
    piece: int,
    answer: tuple[pa.RecordBatch, PieceReport],
    stats: IntakeStats,
) -> None:
    """A worker's answer: a parsed piece, kept in ``done``; or its warm-up, dropped."""
    if piece != _WARMING:
        done[piece] = answer
        stats.worker_pieces += 1


def warm_up(models: ModelLimits | None) -> tuple[pa.RecordBatch, None]:
    """A worker's first call: build what parsing needs (the contracts, the fast paths)."""
    from llm_pipelines.providers.contract import contracts  # the SDK: only when intake runs

    batch, _ = parse_piece([], models)
    contracts()
    generated()
    return batch, None


CONTENT_FIELDS = [
    name
    for name in EVENTS_SCHEMA.names
    if name not in ("task_id", "source", "shape", "prompt_chars")
]
"""What a producer says of a task besides its id (the rest is derived from these)."""


def _conflict_row(batch: pa.RecordBatch, row: int) -> dict[str, Any]:
    """A dead letter for a line that reuses a task id for other content; its reason waits
    for the source of the task's first line (see :func:`_with_first_sources`)."""
    event = batch.slice(row, 1).to_pylist()[0]
    return dead_letter_row(
        stage="intake",
        task_id=event["task_id"],
        reason="",
        payload=orjson.dumps(_landing_form(event)).decode(),
        source=event["source"],
    ) | {"_event": {name: event[name] for name in CONTENT_FIELDS}}


def _landing_form(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the landing line that would give it (to replay a dead letter)."""
    task = orjson.loads(event["request"])
    task.update(
        task_id=event["task_id"],
        task_type=event["task_type"],
        priority=event["priority"],
        requires_realtime=event["requires_realtime"],
    )
    if event["deadline"] is not None:
        task["deadline"] = event["deadline"].isoformat()
    if event["metadata"] is not None:
        task["metadata"] = orjson.loads(event["metadata"])
    return task


def _with_first_sources(
    lake: Lake, events_path: str, conflicts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The conflicts' dead-letter rows, each reason naming where its task first landed and
    what differs. Reads back only the events file's rows of conflicting ids."""
    if not conflicts:
        return []
    ids = pa.array(sorted({row["task_id"] for row in conflicts}))
    firsts = lake.select_rows(
        events_path,
        ["task_id"],
        lambda narrow: pc.is_in(narrow["task_id"], value_set=ids),
        ["task_id", "source", *CONTENT_FIELDS],
    )
    by_id = {row["task_id"]: row for batch in firsts for row in batch.to_pylist()}
    rows = []
    for conflict in conflicts:
        event = conflict.pop("_event")
        first = by_id[conflict["task_id"]]
        differs = [name for name in CONTENT_FIELDS if event[name] != first[name]]
        conflict["reason"] = (
            f"task_id {conflict['task_id']!r} conflicts with the task first landed at "
            f"{first['source']}: same id, different {', '.join(differs) or 'content'}; the first "
            "was kept "
            "(give each task its own task_id, or land a repeat unchanged)"
        )
        rows.append(conflict)
    return rows


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
