"""Prompt-cache planning: find the prefixes tasks share and mark the ones worth caching.

A request has up to two candidate prefixes, each ending where a ``cache_control``
breakpoint can go:

- the **system prompt** (``system``, a string or blocks), shared by every task of a kind;
- a **shared document**: the system prompt plus the leading blocks of the first user turn
  (all of its blocks but the last), e.g. a reference text several questions are asked about.

Each candidate gets a key (a hash of the prefix text, computed once at intake, XOR a hash of
the model routing sends it to: a cache entry belongs to one model) and a token estimate.
Routing counts, per route, how many tasks of the partition send each key; a breakpoint is
marked only if the prefix reaches the model's minimum cacheable length *and* enough tasks
share it to repay the cache write (see
:func:`~llm_pipelines.routing.policy.break_even_group_size`). A request the producer already
marked is left exactly as it is.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from llm_pipelines.storage.datasets import REQUEST_SHAPE, Utf8Builder, string_buffer
from llm_pipelines.tasks import canonical_json

CHARS_PER_TOKEN = 4
"""Prompt length estimate before sending (the emulator counts the same way)."""


class RequestShape(NamedTuple):
    """What routing needs to know about one request (a row of ``events.shape``)."""

    request_hash: bytes
    """First 16 bytes of the sha-256 of the canonical request as the producer asked for it."""
    request_bytes: int
    model_at: int
    """Byte offset of the model's JSON value in the canonical request."""
    system_at: int | None
    """Byte offsets of the system prompt's JSON value (None: no system prompt)."""
    system_end: int | None
    system_hash: int | None
    """Hash of the system prompt's text (None: no system prompt)."""
    system_chars: int
    document_hash: int | None
    """Hash of the system prompt and the shared document (None: no shared document)."""
    document_chars: int
    """Characters of the system prompt plus the shared document."""
    producer_marked: bool
    """The producer placed its own ``cache_control``: routing adds none."""


def _system_blocks(params: dict[str, Any]) -> list[dict[str, Any]]:
    system = params.get("system")
    if isinstance(system, str):
        return [{"type": "text", "text": system}]
    return list(system or [])


def _document_blocks(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The leading blocks of the first user turn, when it has more than one block."""
    first = params["messages"][0]
    content = first.get("content")
    if first.get("role") != "user" or not isinstance(content, list) or len(content) < 2:
        return []
    return content[:-1]


def _text(blocks: list[dict[str, Any]]) -> str:
    return "".join(block.get("text", "") for block in blocks)


def _is_marked(params: dict[str, Any]) -> bool:
    system = params.get("system")
    blocks = [] if system is None or isinstance(system, str) else list(system)
    for message in params["messages"]:
        if type(message.get("content")) is list:
            blocks.extend(message["content"])
    return bool(blocks) and any(block.get("cache_control") for block in blocks)


_SORTED = orjson.OPT_SORT_KEYS
_TASK_PARAMS = frozenset({"max_tokens", "messages", "model", "system"})
"""The keys of the usual request, whose offsets follow from its values' lengths: sorted, the
system prompt (if any) comes last, after the model."""


_PROMPT_SEEDS = {b"system\x00": 1, b"document\x00": 2}


def _prompt_hash(kind: bytes, text_json: bytes | memoryview) -> int:
    """A 64-bit hash of a prompt's JSON, seeded by its kind (a system prompt and a document of
    the same text are different prefixes).

    XXH3, not sha-256: it only groups tasks that share a cache prefix within a partition, where
    a collision would mark or order a task as if it shared one (a cost, never a wrong answer),
    and it is 20 times faster on prompts of kilobytes, once per task at intake. Request
    identity, which reuse answers by, stays sha-256.
    """
    return xxhash.xxh3_64_intdigest(text_json, _PROMPT_SEEDS[kind]) - (1 << 63)


def canonical_request(params: dict[str, Any]) -> tuple[bytes, RequestShape]:
    """The canonical JSON of a request (as :func:`~llm_pipelines.tasks.canonical_json`) and
    its shape.

    Keys are sorted, so the offsets of the model and the system prompt follow from the
    lengths of the values after them (``tests/routing/test_request_shape.py`` checks them):
    routing splices the model and a string system prompt's breakpoint from them, for any
    request. The usual request, with string prompts only, takes :func:`plain_shape`, which
    gives the same shape.
    """
    request = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
    system = params.get("system")
    if (
        (type(system) is str or "system" not in params)
        and params.keys() <= _TASK_PARAMS
        and params["messages"]
        and all(type(message.get("content")) is str for message in params["messages"])
    ):
        return request, plain_shape(request, params["model"], system)
    return request, _any_shape(params, request, hashlib.sha256(request).digest()[:16])


def _any_shape(params: dict[str, Any], request: bytes, request_hash: bytes) -> RequestShape:
    """The shape of any request: block prompts, shared documents, unusual keys."""
    dumps = orjson.dumps
    system = params.get("system")
    text = system if type(system) is str else _text(_system_blocks(params))
    # A prompt is the same prefix written as a string or as blocks: its text is hashed (as
    # JSON, which for a string prompt is the bytes already in the request).
    text_json = dumps(text)
    model_at, system_at, system_end = _offsets(params, len(request), text_json)
    document = _text(_document_blocks(params))
    return RequestShape(
        request_hash=request_hash,
        request_bytes=len(request),
        model_at=model_at,
        system_at=system_at,
        system_end=system_end,
        system_hash=_prompt_hash(b"system\x00", text_json) if text else None,
        system_chars=len(text),
        document_hash=(
            _prompt_hash(b"document\x00", text_json + b"\x00" + dumps(document))
            if document
            else None
        ),
        document_chars=len(text) + len(document),
        producer_marked=_is_marked(params),
    )


def _offsets(
    params: dict[str, Any], size: int, text_json: bytes
) -> tuple[int, int | None, int | None]:
    """Where the model's and the system prompt's JSON values sit in the canonical request
    (``size`` bytes long; ``text_json`` is a string system prompt's JSON).

    Keys are sorted, so the values after the model are the keys that sort after it: their
    lengths, counted back from the closing brace, place the system prompt and the model,
    whatever other keys the request has (tools, thinking …). Each is serialised once more,
    alone: they are small beside the messages, which come before.
    """
    end = size - 1  # the closing brace: the last value ends here
    system_at = system_end = None
    for key in sorted(params, reverse=True):
        if key == "model":
            break
        value = params[key]
        value_json = (
            text_json if key == "system" and type(value) is str else _dumps(value, option=_SORTED)
        )
        if key == "system":
            system_at, system_end = end - len(value_json), end
        end -= len(value_json) + len(_json(key)) + 2  # ,"key":
    return end - len(_json(params["model"])), system_at, system_end


_dumps = orjson.dumps


def plain_shape(request: bytes, model: str, system: str | None) -> RequestShape:
    """The shape of the usual request (string prompts only), from its canonical JSON.

    ``system`` is None where the request has no such key. The system prompt's JSON is
    already in the request: it is the value that ends where the closing brace begins, after
    the last ``,"system":`` (a JSON string cannot hold that sequence: every quote inside one
    is escaped). Intake calls this once per task, hence the positional fields and the cached
    model lengths.
    """
    end = len(request) - 1  # the closing brace
    request_hash = hashlib.sha256(request).digest()[:16]
    if system is None:
        model_at = end - len(_json(model))
        return RequestShape._make(
            (request_hash, len(request), model_at, None, None, None, 0, None, 0, False)
        )
    key_at = request.rfind(b',"system":', 0, end)
    system_at = key_at + len(b',"system":')
    # an empty prompt (which no valid task has) is no cache prefix, as in _any_shape
    system_hash = (
        _prompt_hash(b"system\x00", memoryview(request)[system_at:end]) if system else None
    )
    model_at = key_at - len(_json(model))
    chars = len(system)
    return RequestShape._make(
        (
            request_hash,
            len(request),
            model_at,
            system_at,
            end,
            system_hash,
            chars,
            None,
            chars,
            False,
        )
    )


@functools.lru_cache(maxsize=256)
def _json(value: str) -> bytes:
    """A short string's JSON (a model name: there are a handful)."""
    return orjson.dumps(value)


def shape_array(shapes: list[RequestShape]) -> pa.StructArray:
    """Request shapes as an ``events.shape`` column (one transpose, then a column each)."""
    columns = list(zip(*shapes, strict=True)) if shapes else [()] * len(RequestShape._fields)
    # pa.array takes about a microsecond per fixed-size binary value; one buffer takes none
    hashes = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(shapes), [None, pa.py_buffer(b"".join(columns[0]))]
    )
    return pa.StructArray.from_arrays(
        [
            hashes,
            *(
                pa.array(values, type=field.type)
                for values, field in zip(columns[1:], list(REQUEST_SHAPE)[1:], strict=True)
            ),
        ],
        fields=list(REQUEST_SHAPE),
    )


def model_hashes(models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per model: a 64-bit hash (to key prefixes by model) and a 16-byte one (requests).

    A cache entry belongs to one model, and a request is only the same request on the same
    model: routing XORs these into the model-free hashes intake recorded, which is
    vectorised, where hashing model and text together would be a call per task.
    """
    digests = [hashlib.sha256(b"model\x00" + model.encode()).digest() for model in models]
    wide = np.frombuffer(b"".join(d[:16] for d in digests), dtype=np.uint8).reshape(-1, 16)
    narrow = np.array([int.from_bytes(d[16:24], "big", signed=True) for d in digests], np.int64)
    return narrow, wide


@functools.lru_cache(maxsize=16)
def _marked_system_head(ttl: str) -> bytes:
    """What goes before a marked string system prompt: it becomes one block with the mark."""
    control = orjson.dumps({"cache_control": {"ttl": ttl, "type": "ephemeral"}})[1:-1]
    return b"[{" + control + b',"text":'


_MARKED_SYSTEM_TAIL = b',"type":"text"}]'


class Offsets(NamedTuple):
    """Where the model and the system prompt sit in a canonical request (see ``shape``)."""

    model_at: int
    system_at: int | None
    system_end: int | None


class Change(NamedTuple):
    """What routing changes in a request: its model, and which breakpoints it places."""

    requested_model: str
    model: str
    system: bool
    """A breakpoint after the system prompt."""
    document: bool
    """A breakpoint after the shared document."""
    ttl: str
    """The breakpoints' cache lifetime (only read where one is placed)."""


Bytes: TypeAlias = bytes | memoryview
"""A request's bytes, or a view of them in a column's buffer."""


def splice(request: Bytes, offsets: Offsets | None, change: Change) -> tuple[Bytes, ...] | None:
    """The pieces of the rewritten request (see :func:`rewrite`) when it is a splice.

    Pieces are slices of ``request`` and a few new bytes, for the caller to join; ``None``
    when the request must be parsed instead (a shared document, block prompts, no offsets).
    """
    if offsets is None or change.document or offsets.model_at <= 0:
        return None
    requested = _json(change.requested_model)
    model_at = offsets.model_at
    model_end = model_at + len(requested)
    if request[model_at:model_end] != requested:  # offsets from another request
        return None
    head, model = request[:model_at], _json(change.model)
    if not change.system:
        return head, model, request[model_end:]
    at, end = offsets.system_at, offsets.system_end
    if at is None or end is None or request[at : at + 1] != b'"':
        return None
    marked_head = _marked_system_head(change.ttl)
    return (
        head,
        model,
        request[model_end:at],
        marked_head,
        request[at:end],
        _MARKED_SYSTEM_TAIL,
        request[end:],
    )


def rewrite(request: bytes, offsets: Offsets | None, change: Change) -> bytes:
    """The request as it is sent: on ``model``, with the chosen breakpoints (canonical JSON).

    The common case, a plain-string system prompt, is spliced from the offsets intake
    recorded (:func:`splice`); everything else is parsed, marked (:func:`mark`) and
    serialised again.
    """
    pieces = splice(request, offsets, change)
    return b"".join(pieces) if pieces is not None else _reparsed(request, change)


def _reparsed(request: bytes, change: Change) -> bytes:
    """:func:`rewrite` by parsing, marking and serialising the request again."""
    params = orjson.loads(request)
    params["model"] = change.model
    if change.system or change.document:
        mark(params, system=change.system, document=change.document, ttl=change.ttl)
    return canonical_json(params)


def rewrite_column(
    requests: pa.Array,
    shapes: pa.StructArray,
    *,
    requested_models: pa.Array,
    models: pa.Array,
    system: pa.Array,
    document: pa.Array,
    ttls: list[str],
    order: np.ndarray | None = None,
) -> pa.Array:
    """:func:`rewrite` for a column of requests, row by row, with their ``events.shape``.

    Only the rows that change are touched in Python, mostly spliced (:func:`splice`) from
    slices of the old column and a few new bytes; then one arrow ``take`` over the old
    column and the changed rows builds the new column in C, in ``order``: each request is
    copied once, never into a Python object. If none changes (and ``order`` is not given),
    the column itself is returned.

    ``order`` reorders the rows in the same copy: row ``i`` of the result is row
    ``order[i]`` of ``requests``; every other argument is given in the result's order.
    """
    rows = len(requests)
    system, document = pc.fill_null(system, False), pc.fill_null(document, False)
    changed = pc.or_(pc.not_equal(requested_models, models), pc.or_(system, document))
    positions = np.flatnonzero(changed.to_numpy(zero_copy_only=False))  # in the result's order
    if len(positions) == 0 and order is None:
        return requests
    data, starts = string_buffer(requests)
    source = positions if order is None else order[positions]
    picked = pa.array(positions)
    offsets = zip(
        *(shapes.field(name).take(picked).to_pylist() for name in _OFFSET_FIELDS), strict=True
    )
    rewritten = Utf8Builder()
    for row, (requested, target, mark_system, mark_document), ttl_at, (model_at, at, end) in zip(
        source.tolist(),
        zip(
            *(column.take(picked).to_pylist() for column in (requested_models, models)),
            system.take(picked).to_pylist(),
            document.take(picked).to_pylist(),
            strict=True,
        ),
        positions.tolist(),
        offsets,
        strict=True,
    ):
        request = data[starts[row] : starts[row + 1]]
        change = Change(requested, target, mark_system, mark_document, ttls[ttl_at])
        spliced = splice(request, Offsets(model_at, at, end), change)
        if spliced is None:  # block prompts, shared documents: parsed, serialised again
            spliced = (_reparsed(bytes(request), change),)
        rewritten.append_pieces(spliced)
    # Row i of the result: the old column's row order[i], or the rewritten row placed for it.
    index = np.arange(rows, dtype=np.int64) if order is None else order.astype(np.int64)
    index[positions] = rows + np.arange(len(positions), dtype=np.int64)
    both = pa.chunked_array([requests, rewritten.finish()], pa.string())
    return both.take(pa.array(index)).combine_chunks()


_OFFSET_FIELDS = ("model_at", "system_at", "system_end")


def mark(params: dict[str, Any], *, system: bool, document: bool, ttl: str) -> None:
    """Put ``cache_control`` breakpoints (ephemeral, ``ttl``) at the end of the chosen prefixes."""
    control = {"type": "ephemeral", "ttl": ttl}
    if system:
        blocks = _system_blocks(params)
        blocks[-1] = {**blocks[-1], "cache_control": control}
        params["system"] = blocks
    if document:
        content = params["messages"][0]["content"]
        last = len(content) - 2  # the document ends just before the question block
        content[last] = {**content[last], "cache_control": control}


def prefix_key_text(system_key: int | None, document_key: int | None) -> str | None:
    """The ``prefix_key`` recorded on a task: its marked prefixes, shortest first."""
    keys = (system_key, document_key)
    parts = [f"{key & 0xFFFFFFFFFFFFFFFF:016x}" for key in keys if key is not None]
    return ".".join(parts) or None
