"""The Anthropic adapter: the Message Batches and Messages APIs through the official SDK."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from llm_pipelines.providers.base import (
    RESULT_COLUMNS,
    BatchLimits,
    BatchStatus,
    RequestBody,
    RequestResult,
)
from llm_pipelines.storage.datasets import TOOL_CALLS
from llm_pipelines.streams import iter_lines, line_blocks, prefetched

if TYPE_CHECKING:  # the SDK (seconds to import) loads with the client, at run time
    import anthropic
    from anthropic.types.messages import MessageBatch

ANTHROPIC_LIMITS = BatchLimits(max_requests=100_000, max_bytes=256 * 1024 * 1024)
"""Per-batch limits of the Message Batches API."""
RESULTS_READ_BYTES = 1024 * 1024
"""Bytes per read of a results stream."""
RESULTS_BLOCK_BYTES = 4 * 1024 * 1024
"""Result lines decoded per arrow call: bounded memory, few calls."""
RESULTS_PARSE_BYTES = 2 * 1024 * 1024
"""Pieces of a block parsed in parallel (a longer line is decoded line by line instead)."""

_TEXT = pa.string()
_TOKENS = pa.int64()
RESULT_LINE = pa.schema(
    [
        ("custom_id", _TEXT),
        (
            "result",
            pa.struct(
                [
                    ("type", _TEXT),
                    (
                        "message",
                        pa.struct(
                            [
                                ("id", _TEXT),
                                ("model", _TEXT),
                                ("stop_reason", _TEXT),
                                ("stop_sequence", _TEXT),
                                (
                                    "content",
                                    pa.list_(pa.struct([("type", _TEXT), ("text", _TEXT)])),
                                ),
                                (
                                    "usage",
                                    pa.struct(
                                        [
                                            ("input_tokens", _TOKENS),
                                            ("output_tokens", _TOKENS),
                                            (
                                                "output_tokens_details",
                                                pa.struct([("thinking_tokens", _TOKENS)]),
                                            ),
                                            ("cache_creation_input_tokens", _TOKENS),
                                            ("cache_read_input_tokens", _TOKENS),
                                            (
                                                "cache_creation",
                                                pa.struct(
                                                    [
                                                        ("ephemeral_5m_input_tokens", _TOKENS),
                                                        ("ephemeral_1h_input_tokens", _TOKENS),
                                                    ]
                                                ),
                                            ),
                                        ]
                                    ),
                                ),
                            ]
                        ),
                    ),
                    (
                        "error",
                        pa.struct(
                            [
                                ("type", _TEXT),
                                ("message", _TEXT),
                                ("error", pa.struct([("type", _TEXT), ("message", _TEXT)])),
                            ]
                        ),
                    ),
                ]
            ),
        ),
    ]
)
"""The fixed-shape part of a results line that result rows use; pyarrow's JSON reader ignores
the rest. Content blocks are read for their type and text only: the whole content (tool inputs
are any JSON) is taken as raw JSON by :func:`raw_messages`."""
_PARSE = pa_json.ParseOptions(explicit_schema=RESULT_LINE, unexpected_field_behavior="ignore")


class AnthropicProvider:
    """:class:`~llm_pipelines.providers.base.BatchProvider` over an ``anthropic.Anthropic`` client.

    Retries of 429/5xx/529 and connection errors are the SDK's own (``max_retries`` on the
    client); results are streamed as JSON lines and decoded with orjson, never held whole.
    """

    name = "anthropic"

    def __init__(self, client: anthropic.Anthropic, limits: BatchLimits = ANTHROPIC_LIMITS) -> None:
        self.client = client
        self.limits = limits

    def create_batch(self, body: bytes | RequestBody) -> BatchStatus:
        # The body is already serialised by the packer (sized against the 256 MB limit), so
        # send those exact bytes rather than re-encoding a list of 100k dicts. A spooled body
        # streams from disk; its length is given so it is not sent chunked.
        from anthropic.types.messages import MessageBatch

        headers = {"content-type": "application/json", "content-length": str(len(body))}
        batch = self.client.post(
            "/v1/messages/batches", cast_to=MessageBatch, content=body, options={"headers": headers}
        )
        return _status(batch)

    def get_batch(self, batch_id: str) -> BatchStatus:
        return _status(self.client.messages.batches.retrieve(batch_id))

    def cancel_batch(self, batch_id: str) -> BatchStatus:
        return _status(self.client.messages.batches.cancel(batch_id))

    def list_batches(self) -> Iterator[BatchStatus]:
        for batch in self.client.messages.batches.list(limit=100):
            yield _status(batch)

    def iter_results(self, batch_id: str) -> Iterator[RequestResult]:
        # Raw bytes split per block and decoded by orjson: the SDK's typed results objects
        # cost several times more per line (benchmarks/throughput.py measures both).
        with self.client.messages.batches.with_streaming_response.results(batch_id) as response:
            for line in iter_lines(response.iter_bytes(RESULTS_READ_BYTES)):
                if line.strip():
                    yield parse_result_line(line)

    def iter_result_chunks(self, batch_id: str) -> Iterator[pa.Table]:
        # Blocks of lines decoded by pyarrow's JSON reader straight into columns: no Python
        # object per line (see decode_result_block).
        # Reading the stream and decoding happen on a second thread (the JSON reader releases
        # the GIL) while the caller works on the previous chunk.
        with self.client.messages.batches.with_streaming_response.results(batch_id) as response:
            blocks = line_blocks(response.iter_bytes(RESULTS_READ_BYTES), RESULTS_BLOCK_BYTES)
            yield from prefetched(decode_result_block(block) for block in blocks)

    def create_message(self, params: dict[str, Any]) -> dict[str, Any]:
        # The body as the API sent it, not the SDK model's dump (which adds a null for every
        # optional field the answer did not have); msgspec keeps integers of any size.
        response = self.client.messages.with_raw_response.create(**params)
        return msgspec.json.decode(response.read())


def parse_result_line(line: str | bytes) -> RequestResult:
    """One line of a batch results stream."""
    raw = orjson.loads(line)
    result = raw["result"]
    outcome = result["type"]
    if outcome == "succeeded":
        return RequestResult(raw["custom_id"], "succeeded", message=result["message"])
    if outcome == "errored":
        error = result.get("error", {})
        error = error.get("error", error)  # the API nests {"type": "error", "error": {...}}
        return RequestResult(
            raw["custom_id"],
            "errored",
            error_type=error.get("type", "api_error"),
            error_message=error.get("message", ""),
        )
    return RequestResult(raw["custom_id"], outcome)


# -- what is kept as raw JSON ------------------------------------------------------------------


class RawMessage(msgspec.Struct, gc=False):
    """The parts of a message kept as the JSON the API sent (the very bytes), undecoded.

    Empty when the message does not have them. Not tracked by the cyclic garbage collector
    (``gc=False``, as the other structs here): they cannot form cycles, and one is made per
    result line.
    """

    content: msgspec.Raw = msgspec.Raw()
    stop_details: msgspec.Raw = msgspec.Raw()


class _RawResult(msgspec.Struct, gc=False):
    message: RawMessage | None = None


class _RawLine(msgspec.Struct, gc=False):
    result: _RawResult | None = None


class _Block(msgspec.Struct, gc=False):
    # Any: a block of a type this code does not know may hold anything under these names.
    type: Any = None
    id: Any = None
    name: Any = None
    input: msgspec.Raw = msgspec.Raw()


_RAW_LINE = msgspec.json.Decoder(_RawLine)
_BLOCKS = msgspec.json.Decoder(list[_Block])
_NO_MESSAGE = RawMessage()
_JSON_NULL = msgspec.Raw(b"null")
_TOOL_CALL = TOOL_CALLS.value_type


def raw_messages(block: bytes) -> list[RawMessage]:
    """Each line's content and stop details as raw JSON, one per (non-blank) line.

    msgspec skips everything else without building it, and hands back slices of ``block``:
    the one pass over a line that Python pays for (pyarrow's JSON reader cannot take JSON of
    any shape, such as a tool's input, into a column of fixed type).
    """
    return [_parts(line) for line in _RAW_LINE.decode_lines(block)]


def _raw_message(line: bytes) -> RawMessage:
    """:func:`raw_messages` of one line; a line of an unexpected shape has no raw parts."""
    try:
        return _parts(_RAW_LINE.decode(line))
    except msgspec.ValidationError:
        return _NO_MESSAGE


def _parts(line: _RawLine) -> RawMessage:
    return (line.result.message or _NO_MESSAGE) if line.result is not None else _NO_MESSAGE


def encoded_message(message: dict[str, Any]) -> RawMessage:
    """The raw parts of a decoded message (a real-time answer), encoded again."""
    return RawMessage(
        **{
            name: msgspec.Raw(msgspec.json.encode(message[name]))
            for name in ("content", "stop_details")
            if name in message
        }
    )


def json_column(values: list[msgspec.Raw]) -> pa.StringArray:
    """Raw JSON values as a string column, without decoding them; absent or ``null`` → null."""
    sizes = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    valid = sizes > 0
    for row in np.flatnonzero(sizes == len(_JSON_NULL)).tolist():
        valid[row] = values[row] != _JSON_NULL
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    return pa.StringArray.from_buffers(
        len(values),
        pa.py_buffer(offsets),
        pa.py_buffer(b"".join(values)),
        pa.py_buffer(np.packbits(valid, bitorder="little")),
    )


def tool_call_lists(contents: list[msgspec.Raw], rows: Iterable[int]) -> pa.ListArray:
    """Per message, its ``tool_use`` blocks (id, name, input as raw JSON); ``rows`` lists the
    messages that may have some (the others get an empty list without being decoded)."""
    counts = np.zeros(len(contents), dtype=np.int32)
    calls: list[dict[str, Any]] = []
    for row in rows:
        found = _tool_calls(contents[row])
        counts[row] = len(found)
        calls += found
    offsets = np.zeros(len(contents) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(calls, _TOOL_CALL), type=TOOL_CALLS)


def _tool_calls(content: msgspec.Raw) -> list[dict[str, Any]]:
    if not content:
        return []
    try:
        blocks = _BLOCKS.decode(content)
    except msgspec.ValidationError:  # content that is not a list of blocks has no tool calls
        return []
    return [
        {
            "id": block.id if isinstance(block.id, str) else None,
            "name": block.name if isinstance(block.name, str) else None,
            "input_json": str(block.input, "utf-8") if block.input else None,
        }
        for block in blocks
        if block.type == "tool_use"
    ]


# -- result lines to columns -------------------------------------------------------------------


def message_columns(
    messages: list[dict[str, Any]], raw: list[RawMessage] | None = None
) -> dict[str, list[Any] | pa.Array]:
    """What result rows take from Messages API responses, column by column.

    ``input_tokens`` is the uncached part of the prompt; cache writes are split by TTL, and
    without a split the API's default TTL (5 minutes) applies. Text is the text blocks joined.
    ``raw`` holds each message's raw parts where the caller has the bytes the API sent;
    without it they are encoded again from ``messages`` (the same JSON values).
    """
    raw = raw if raw is not None else [encoded_message(m) for m in messages]
    usages = [m.get("usage") or {} for m in messages]
    splits = [u.get("cache_creation") or {} for u in usages]
    write_1h = [s.get("ephemeral_1h_input_tokens") or 0 for s in splits]
    write_5m = [
        (u.get("cache_creation_input_tokens") or 0) - w if v is None else v
        for v, u, w in zip(
            (s.get("ephemeral_5m_input_tokens") for s in splits), usages, write_1h, strict=True
        )
    ]
    contents = [r.content for r in raw]
    return {
        "message_id": [m.get("id") for m in messages],
        "model": [m.get("model") for m in messages],
        "stop_reason": [m.get("stop_reason") for m in messages],
        "stop_sequence": [m.get("stop_sequence") for m in messages],
        "stop_details": json_column([r.stop_details for r in raw]),
        "output_text": [
            "".join(b.get("text") or "" for b in m.get("content") or () if b.get("type") == "text")
            for m in messages
        ],
        "content_json": json_column(contents),
        "tool_calls": tool_call_lists(contents, range(len(contents))),
        "input_tokens": [u.get("input_tokens") or 0 for u in usages],
        "output_tokens": [u.get("output_tokens") or 0 for u in usages],
        "thinking_tokens": [
            (u.get("output_tokens_details") or {}).get("thinking_tokens") for u in usages
        ],
        "cache_write_5m_tokens": [w or 0 for w in write_5m],
        "cache_write_1h_tokens": write_1h,
        "cache_read_tokens": [u.get("cache_read_input_tokens") or 0 for u in usages],
    }


def decode_result_block(block: bytes) -> pa.Table:
    """Result lines (whole lines, many at once) as a table of ``RESULT_COLUMNS``.

    pyarrow's JSON reader decodes the block into columns in one call; the few fields result
    rows need are then picked and combined with compute kernels. Content and stop details
    are taken raw from the same block by msgspec (:func:`raw_messages`), and only messages
    with a ``tool_use`` block are decoded further. A block the reader cannot read (a field of
    an unexpected JSON type) is decoded line by line instead, with the same result.
    """
    try:
        # Parsed in pieces on arrow's CPU pool: the caller is usually waiting for this block.
        lines = pa_json.read_json(
            pa.BufferReader(block),
            read_options=pa_json.ReadOptions(use_threads=True, block_size=RESULTS_PARSE_BYTES),
            parse_options=_PARSE,
        )
        raw = raw_messages(block)
    except (pa.ArrowInvalid, msgspec.ValidationError):
        return _decode_lines(block)
    if len(raw) != lines.num_rows:  # both skip blank lines; should they ever disagree
        return _decode_lines(block)
    result = lines.column("result").combine_chunks()

    def field(*path: str) -> pa.Array:
        return pc.struct_field(result, list(path))

    message = field("message")
    usage = field("message", "usage")

    def tokens(array: pa.Array) -> pa.Array:
        return pc.fill_null(array, 0)

    write_1h = tokens(pc.struct_field(usage, ["cache_creation", "ephemeral_1h_input_tokens"]))
    created = tokens(pc.struct_field(usage, ["cache_creation_input_tokens"]))
    write_5m = pc.coalesce(
        pc.struct_field(usage, ["cache_creation", "ephemeral_5m_input_tokens"]),
        pc.subtract(created, write_1h),
    )
    nested = field("error", "error")
    has_nested = pc.is_valid(nested)
    error_type = pc.if_else(has_nested, pc.struct_field(nested, ["type"]), field("error", "type"))
    error_message = pc.if_else(
        has_nested, pc.struct_field(nested, ["message"]), field("error", "message")
    )
    content = field("message", "content")
    contents = [r.content for r in raw]
    columns = {
        "custom_id": lines.column("custom_id").combine_chunks(),
        "outcome": field("type"),
        "has_message": pc.is_valid(message),
        "message_id": field("message", "id"),
        "model": field("message", "model"),
        "stop_reason": field("message", "stop_reason"),
        "stop_sequence": field("message", "stop_sequence"),
        "stop_details": json_column([r.stop_details for r in raw]),
        "output_text": _joined_text(content),
        "content_json": json_column(contents),
        "tool_calls": tool_call_lists(contents, _with_tool_use(content)),
        "input_tokens": tokens(pc.struct_field(usage, ["input_tokens"])),
        "output_tokens": tokens(pc.struct_field(usage, ["output_tokens"])),
        "thinking_tokens": pc.struct_field(usage, ["output_tokens_details", "thinking_tokens"]),
        "cache_write_5m_tokens": tokens(write_5m),
        "cache_write_1h_tokens": write_1h,
        "cache_read_tokens": tokens(pc.struct_field(usage, ["cache_read_input_tokens"])),
        "error_type": pc.fill_null(error_type, "api_error"),
        "error_message": pc.fill_null(error_message, ""),
    }
    return pa.table(columns, schema=RESULT_COLUMNS)


def _joined_text(content: pa.ListArray) -> pa.Array:
    """Per message, its text blocks' text joined ("" without any), as message_columns does."""
    single = _single_texts(content)
    if single is not None:
        return single
    blocks = content.values
    texts = pc.if_else(
        pc.fill_null(pc.equal(pc.struct_field(blocks, ["type"]), "text"), False),
        pc.fill_null(pc.struct_field(blocks, ["text"]), ""),
        "",
    )
    lists = pa.ListArray.from_arrays(content.offsets, texts)
    return pc.fill_null(pc.binary_join(lists, ""), "")


def _single_texts(content: pa.ListArray) -> pa.StringArray | None:
    """:func:`_joined_text` of the usual block, where every message has one text block (or
    none): the blocks' text column is the answer, re-indexed by message without a copy.
    None when some message has other blocks, or several."""
    bounds = np.frombuffer(content.buffers()[1], dtype=np.int32)
    bounds = bounds[content.offset : content.offset + len(content) + 1]
    sizes = np.diff(bounds)
    if np.any(sizes > 1) or np.any(sizes[~content.is_valid().to_numpy(zero_copy_only=False)]):
        return None
    first = int(bounds[0])
    blocks = content.values.slice(first, int(bounds[-1]) - first)
    text = pc.struct_field(blocks, ["text"])
    all_text = pc.all(pc.fill_null(pc.equal(pc.struct_field(blocks, ["type"]), "text"), False))
    if text.null_count or not all_text.as_py():
        return None
    _, offsets, data = text.buffers()
    starts = np.frombuffer(offsets, dtype=np.int32)[text.offset : text.offset + len(text) + 1]
    return pa.StringArray.from_buffers(
        len(content), pa.py_buffer(starts[bounds - first]), data or pa.py_buffer(b"")
    )


def _with_tool_use(content: pa.ListArray) -> list[int]:
    """The messages with a ``tool_use`` block: the only ones whose content is decoded again."""
    is_call = pc.equal(pc.struct_field(content.flatten(), ["type"]), "tool_use")
    parents = pc.list_parent_indices(content).to_numpy()
    return np.unique(parents[pc.fill_null(is_call, False).to_numpy(zero_copy_only=False)]).tolist()


def _decode_lines(block: bytes) -> pa.Table:
    """The slow, sure way: every line through :func:`parse_result_line`."""
    lines = [line for line in iter_lines([block]) if line.strip()]
    results = [parse_result_line(line) for line in lines]
    messages = [r.message or {} for r in results]
    columns: dict[str, Any] = message_columns(messages, [_raw_message(line) for line in lines])
    columns["custom_id"] = [r.custom_id for r in results]
    columns["outcome"] = [r.outcome for r in results]
    columns["has_message"] = [r.message is not None for r in results]
    columns["error_type"] = [r.error_type or "api_error" for r in results]
    columns["error_message"] = [r.error_message or "" for r in results]
    return pa.table(columns, schema=RESULT_COLUMNS)


def _status(batch: MessageBatch) -> BatchStatus:
    return BatchStatus(
        id=batch.id,
        processing_status=batch.processing_status,
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        ended_at=batch.ended_at,
        request_counts=batch.request_counts.model_dump(),
    )
