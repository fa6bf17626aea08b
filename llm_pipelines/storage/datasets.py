"""The datasets of the lake: their names, schemas, file naming, and a streaming writer."""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, Field

from llm_pipelines.storage.lake import PLAIN_ENCODING, BackgroundParquetWriter, Lake

LANDING = "landing"
EVENTS = "events"
DEAD_LETTER = "dead_letter"
TASKS = "tasks"
BATCHES = "batches"
RESULTS = "results"
RETRIES = "retries"
ORPHANS = "orphans"

TASKS_FILE = "tasks.parquet"
"""The one file of a ``tasks/`` partition: in arrival order, each row group of one route.

``dispatch_position`` gives the dispatch order; the packer and the real-time path follow it."""

TIMESTAMP = pa.timestamp("us", tz="UTC")

EVENT_FIELDS = [
    pa.field("task_id", pa.string(), nullable=False, metadata=PLAIN_ENCODING),
    pa.field("task_type", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("max_tokens", pa.int32(), nullable=False),
    pa.field("priority", pa.int8(), nullable=False),
    pa.field("deadline", TIMESTAMP),
    pa.field("requires_realtime", pa.bool_(), nullable=False),
    pa.field("prompt_chars", pa.int64(), nullable=False),
    # canonical Messages API params
    pa.field("request", pa.string(), nullable=False, metadata=PLAIN_ENCODING),
    pa.field("metadata", pa.string(), metadata=PLAIN_ENCODING),  # producer's metadata, JSON
    # landing file and line
    pa.field("source", pa.string(), nullable=False, metadata=PLAIN_ENCODING),
]
"""The columns an event shares with its routed task."""

REQUEST_SHAPE = pa.struct(
    [
        # sha-256 of the canonical request as the producer asked for it (first 16 bytes)
        pa.field("request_hash", pa.binary(16), nullable=False),
        pa.field("request_bytes", pa.int64(), nullable=False),
        # byte offsets in ``request`` of the model value and of the system prompt's value,
        # so routing can rewrite a request without parsing it (null: no system prompt)
        pa.field("model_at", pa.int32(), nullable=False),
        pa.field("system_at", pa.int32()),
        pa.field("system_end", pa.int32()),
        # candidate cache prefixes: a hash of the text (null: none) and its length in chars;
        # the document's length counts the system prompt before it
        pa.field("system_hash", pa.int64()),
        pa.field("system_chars", pa.int64(), nullable=False),
        pa.field("document_hash", pa.int64()),
        pa.field("document_chars", pa.int64(), nullable=False),
        pa.field("producer_marked", pa.bool_(), nullable=False),  # has its own cache_control
    ]
)
"""What routing needs to know of a request, computed once at intake where it is parsed anyway
(see :func:`llm_pipelines.routing.caching.canonical_request`)."""

EVENTS_SCHEMA = pa.schema([*EVENT_FIELDS, pa.field("shape", REQUEST_SHAPE, nullable=False)])

REQUESTED, RIGHT_SIZED, MODEL_MIGRATED = "requested", "right_sized", "model_migrated"
"""How a task's model was chosen (column ``model_rule``): as the producer asked; by the
policy's right-sizing (``model_map``); or moved off a retired model to its successor."""

TASKS_SCHEMA = pa.schema(
    [
        *EVENT_FIELDS,
        pa.field("route", pa.string(), nullable=False),  # "batch" | "realtime"
        pa.field("rule", pa.string(), nullable=False),  # the policy rule that decided
        pa.field("requested_model", pa.string(), nullable=False),  # before right-sizing
        # how the model was chosen: requested | right_sized | model_migrated (off a retired one)
        pa.field("model_rule", pa.string(), nullable=False),
        pa.field("prefix_key", pa.string()),  # shared cached prefix, groups requests
        pa.field("est_cost_usd", pa.float64(), nullable=False),
        pa.field("request_key", pa.binary(16), nullable=False),  # identity of the request sent
        pa.field("reuse_of", pa.string()),  # route "reuse": the task whose answer is reused
        pa.field("reuse_partition", pa.string()),  # ... and the partition it is in
        # rank in dispatch order: route, system prompt, shared document, arrival
        pa.field("dispatch_position", pa.int64(), nullable=False),
        pa.field("request_bytes", pa.int64(), nullable=False),  # of ``request``, to pack by
    ]
)

TOOL_CALLS = pa.list_(
    pa.struct(
        [
            pa.field("id", pa.string()),
            pa.field("name", pa.string()),
            pa.field("input_json", pa.string()),  # the tool's input, JSON as returned
        ]
    )
)
"""A result row's tool calls: the ``tool_use`` blocks of the answer."""

RESULTS_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False, metadata=PLAIN_ENCODING),
        pa.field("task_type", pa.string()),
        pa.field("route", pa.string(), nullable=False),
        pa.field("batch_id", pa.string()),
        pa.field("attempt", pa.int16(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("requested_model", pa.string()),
        # the provider's id of the answer (unique: not worth a dictionary)
        pa.field("message_id", pa.string(), metadata=PLAIN_ENCODING),
        pa.field("stop_reason", pa.string()),  # any of the SDK's StopReason values
        pa.field("stop_sequence", pa.string()),  # which stop sequence ended it, if one did
        pa.field("stop_details", pa.string()),  # JSON, as returned (a refusal's category)
        # the model ended its turn (end_turn, stop_sequence, tool_use); false when it was cut
        # short, paused or refused: see dispatch.results.COMPLETE_STOP_REASONS
        pa.field("complete", pa.bool_()),
        pa.field("output_text", pa.string(), metadata=PLAIN_ENCODING),  # text blocks joined
        # every content block (text, thinking, redacted_thinking, tool_use, server tool
        # blocks ...) as the API returned them: a JSON array
        pa.field("content_json", pa.string(), metadata=PLAIN_ENCODING),
        pa.field("tool_calls", TOOL_CALLS, metadata=PLAIN_ENCODING),  # tool_use blocks, in order
        # when the request asked for JSON following a schema (output_config.format): the
        # answer's text if it is JSON that the schema accepts, else null and the reason
        pa.field("structured_output", pa.string(), metadata=PLAIN_ENCODING),
        pa.field("structured_output_error", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),  # thinking included: billed as output
        pa.field("thinking_tokens", pa.int64()),  # of output_tokens, if reported apart
        pa.field("cache_write_5m_tokens", pa.int64()),
        pa.field("cache_write_1h_tokens", pa.int64()),
        pa.field("cache_read_tokens", pa.int64()),
        pa.field("cost_usd", pa.float64()),
        pa.field("sync_cost_usd", pa.float64()),
        pa.field("collected_at", TIMESTAMP),
    ]
)

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # intake|submit|collect|realtime|reuse
        pa.field("reason", pa.string(), nullable=False),
        pa.field("attempt", pa.int16(), nullable=False),
        # the original input, so it can be replayed
        pa.field("payload", pa.string(), metadata=PLAIN_ENCODING),
        pa.field("source", pa.string()),
        pa.field("dead_lettered_at", TIMESTAMP, nullable=False),
    ]
)

RETRIES_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("attempt", pa.int16(), nullable=False),  # the attempt still to be made
        pa.field("task_type", pa.string(), nullable=False),
        pa.field("requested_model", pa.string(), nullable=False),
        pa.field("request", pa.string(), nullable=False),  # canonical Messages API params
        pa.field("reason", pa.string(), nullable=False),  # why the previous attempt failed
        pa.field("source", pa.string()),  # provider batch id, or the replay run
        pa.field("requested_at", TIMESTAMP, nullable=False),
    ]
)
"""Tasks waiting to be submitted again: written by collection (retryable failures) and by
the replay job (dead letters chosen by a person); packed by the next submission pass."""

Stage = Literal["intake", "submit", "collect", "realtime", "reuse"]


def with_missing_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with a column of nulls for each field of ``schema`` it lacks.

    For files written before a column was added (result rows of an earlier release, read
    back to reuse their answers).
    """
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


def string_buffer(values: pa.Array) -> tuple[memoryview, list[int]]:
    """A string column's bytes and where each value starts (one more: where the last ends).

    Row ``i`` is ``data[starts[i]:starts[i + 1]]``: slices without copying, for splicing
    values into a new column (nulls read as empty).
    """
    if values.type != pa.string():
        raise TypeError(f"expected a string column (32-bit offsets), got {values.type}")
    _, offsets, data = values.buffers()
    starts = memoryview(offsets).cast("i")[values.offset : values.offset + len(values) + 1]
    # As unsigned bytes: arrow's buffers say signed, and a signed view compares with bytes
    # element by element (microseconds), where an unsigned one is a memcmp.
    view = memoryview(data).cast("B") if data is not None else memoryview(b"")
    return view, starts.tolist()


class Utf8Builder:
    """A string column built from UTF-8 byte strings appended one by one.

    The bytes are copied into one growing buffer as they come, so the caller's objects can
    go at once: orjson, for one, returns each document in a buffer of about 32 kB however
    short it is, and a few thousand of those held in a list cost tens of megabytes.
    """

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("i", [0])

    def __len__(self) -> int:
        return len(self._ends) - 1

    def append(self, value: bytes | memoryview) -> None:
        """Add one value (valid UTF-8: the caller vouches for it)."""
        self._data += value
        self._ends.append(len(self._data))

    def append_pieces(self, pieces: Iterable[bytes | memoryview]) -> None:
        """Add one value given as consecutive pieces (a spliced request), without joining
        them first."""
        for piece in pieces:
            self._data += piece
        self._ends.append(len(self._data))

    def finish(self) -> pa.StringArray:
        """The values as a string array; the builder starts empty again."""
        array_ = pa.StringArray.from_buffers(
            len(self), pa.py_buffer(self._ends), pa.py_buffer(self._data)
        )
        self._data, self._ends = bytearray(), array("i", [0])
        return array_


def utcnow() -> datetime:
    """Now, timezone-aware (every timestamp in the lake is UTC)."""
    return datetime.now(UTC)


class BatchManifest(BaseModel):
    """One provider batch as the lake records it.

    Written as an *intent* (no ``provider_batch_id``) before the provider is called, then
    rewritten once the batch exists; the task ids it covers sit beside it in
    ``<key>.tasks.parquet``. A manifest with a provider id and no results file is in flight.
    """

    key: str
    partition: str
    provider: str
    attempt: int = Field(ge=1)
    request_count: int = Field(ge=1)
    payload_bytes: int = Field(ge=0)
    provider_batch_id: str | None = None
    intent_at: datetime
    submitted_at: datetime | None = None
    ended_at: datetime | None = None
    collected_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    note: str | None = None
    """How this manifest came about, where not by the usual intent-then-create (adoption)."""

    @property
    def manifest_name(self) -> str:
        """File name of the manifest inside ``batches/dt=<partition>/``."""
        return f"{self.key}.json"

    @property
    def tasks_name(self) -> str:
        """File name of the task-id list beside the manifest."""
        return f"{self.key}.tasks.parquet"

    @property
    def results_name(self) -> str:
        """File name of this batch's results inside ``results/dt=<partition>/``."""
        return f"batch-{self.key}.parquet"


def read_manifests(lake: Lake, partition: str) -> list[BatchManifest]:
    """Every batch manifest of a partition."""
    return [
        BatchManifest.model_validate(lake.read_json(path))
        for path in lake.files(BATCHES, partition, ".json")
    ]


def write_manifest(lake: Lake, manifest: BatchManifest) -> None:
    """Write (or replace) a manifest atomically."""
    lake.write_json(
        lake.path(BATCHES, manifest.partition, manifest.manifest_name),
        manifest.model_dump(mode="json"),
    )


class RowWriter:
    """Buffers rows and streams them to one parquet file in bounded chunks."""

    def __init__(self, writer: BackgroundParquetWriter, schema: pa.Schema, chunk_rows: int) -> None:
        self._writer = writer
        self._schema = schema
        self._chunk_rows = chunk_rows
        self._buffer: list[dict[str, Any]] = []
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        """Queue one row (a dict keyed by column name)."""
        self._buffer.append(row)
        if len(self._buffer) >= self._chunk_rows:
            self.flush()

    def add_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Write a columnar chunk directly."""
        self.flush()
        if batch.num_rows:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            self._writer.write_table(table.select(self._schema.names).cast(self._schema))
            self.rows += batch.num_rows

    def flush(self) -> None:
        """Write what is buffered."""
        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self._schema))
            self.rows += len(self._buffer)
            self._buffer.clear()


@contextlib.contextmanager
def write_rows(
    lake: Lake, path: str, schema: pa.Schema, chunk_rows: int = 8_192, keep_empty: bool = False
) -> Iterator[RowWriter]:
    """Stream rows into ``path``; an empty result leaves no file unless ``keep_empty``."""
    with lake.parquet_writer(path, schema) as writer:
        rows = RowWriter(writer, schema, chunk_rows)
        yield rows
        rows.flush()
    if rows.rows == 0 and not keep_empty:
        lake.delete(path)


def dead_letter_path(lake: Lake, partition: str, stage: Stage, unit: str) -> str:
    """One dead-letter file per stage and unit of work (partition, batch or chunk).

    Deterministic, so a re-run of the same unit replaces its dead letters instead of
    adding a second copy.
    """
    return lake.path(DEAD_LETTER, partition, f"{stage}-{unit}.parquet")


def dead_letter_row(
    *,
    stage: Stage,
    reason: str,
    payload: str | None,
    task_id: str | None = None,
    attempt: int = 1,
    source: str | None = None,
) -> dict[str, Any]:
    """A dead-letter row: what failed, why, and the input needed to replay it."""
    return {
        "task_id": task_id,
        "stage": stage,
        "reason": reason,
        "attempt": attempt,
        "payload": payload,
        "source": source,
        "dead_lettered_at": utcnow(),
    }
