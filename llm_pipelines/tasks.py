"""What a producer asks for: the task schema, its identity and its provider request."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import orjson
import xxhash
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from llm_pipelines.providers.fast_contract import fast_request_ok
from llm_pipelines.providers.request_rules import value_problem


def request_problem(params: Any) -> str | None:  # noqa: F811 (rebound on the first call)
    """:func:`llm_pipelines.providers.contract.request_problem`, imported on the first call.

    The contract imports the ``anthropic`` SDK (seconds), which loading the definitions must
    not pay. The first call replaces this stub with the real function, so later calls cost
    nothing extra (a per-call import would cost about a microsecond per task).
    """
    global request_problem
    from llm_pipelines.providers import contract

    request_problem = contract.request_problem
    return request_problem(params)


CUSTOM_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
"""Anthropic's rule for a batch request's ``custom_id``; our ``task_id`` is that id."""
CUSTOM_ID_RE = re.compile(CUSTOM_ID_PATTERN)

MAX_TASK_TYPE_CHARS = 64
MAX_MODEL_CHARS = 128
DEFAULT_PRIORITY = 5
LOWEST_PRIORITY = 9

MAX_TOKENS_STORED = 2**31 - 1
"""The largest ``max_tokens`` a task can be stored with (an int32 column); far beyond any
model's ceiling, which the model catalog gives and intake applies."""

PRODUCER_FIELDS = frozenset(
    {"task_id", "task_type", "priority", "deadline", "requires_realtime", "metadata", "params"}
)
"""A landing line's own keys; every other key is a Messages API parameter of the request."""


class TextBlock(BaseModel):
    """A text content block (a convenience for building requests in Python)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = "text"
    text: str
    cache_control: dict[str, str] | None = None


class ChatMessage(BaseModel):
    """One text turn of a conversation (a convenience for building requests in Python; a
    request may hold any message the SDK's ``MessageParam`` allows)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | list[TextBlock]


class LLMTask(BaseModel):
    """One unit of LLM work as a producer writes it to the landing zone.

    The producer's own fields (``task_id``, ``task_type``, ``priority``, ``deadline``,
    ``requires_realtime``, ``metadata``) are typed strictly here. The request is a Messages
    API request as the installed ``anthropic`` SDK's types define it, validated by
    :mod:`llm_pipelines.providers.contract` (see :meth:`request_problem`): given either as
    the line's other top-level keys (``model``, ``max_tokens``, ``messages``, ``system``,
    ``tools`` …) or whole under ``params``, as a Message Batches request holds it (the form
    for the API's own ``metadata``, which at the top level is the producer's).

    ``task_id`` is the producer's idempotency key; without one, the task is identified by a
    hash of its canonical request, so the same request landed twice is done once.
    """

    model_config = ConfigDict(extra="allow")

    # Producer fields are strict: "yes" is not a boolean nor "100" a number. A producer that
    # writes them has a bug and hears of it in a dead letter, instead of a guess routing it.
    task_id: Annotated[StrictStr, StringConstraints(pattern=CUSTOM_ID_PATTERN)] | None = None
    task_type: Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_TASK_TYPE_CHARS)]
    priority: StrictInt = Field(
        default=DEFAULT_PRIORITY, ge=0, le=LOWEST_PRIORITY, description="0 is most urgent"
    )
    deadline: datetime | None = None
    requires_realtime: StrictBool = False
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    params: dict[str, Any] | None = Field(
        default=None, description="The whole request, as a Message Batches request's params."
    )

    def request_params(self) -> dict[str, Any]:
        """The Messages API parameters of this task, as plain JSON values."""
        if self.params is not None:
            return self.params
        return {name: _plain(value) for name, value in (self.model_extra or {}).items()}

    def request_problem(self) -> str | None:
        """Why the API would refuse this task's request (one line naming the field), or None."""
        if self.params is not None and self.model_extra:
            extra = ", ".join(sorted(self.model_extra))
            return (
                f"{extra}: request fields go either all under params or all at the top level, "
                "not both"
            )
        params = self.request_params()
        if problem := request_problem(params):
            return problem
        if len(params["model"]) > MAX_MODEL_CHARS:
            return f"model: at most {MAX_MODEL_CHARS} characters"
        if params["max_tokens"] > MAX_TOKENS_STORED:
            return f"max_tokens: {params['max_tokens']:,} is beyond any model's limit"
        return None

    @property
    def model(self) -> str:
        """The model the request names."""
        return str(self.request_params()["model"])

    def fields(self) -> TaskFields:
        """What intake keeps of a validated task (as :func:`fast_task` returns it)."""
        params = self.request_params()
        return TaskFields(
            self.task_id,
            self.task_type,
            params["model"],
            params["max_tokens"],
            self.priority,
            self.deadline,
            self.requires_realtime,
            prompt_chars(params),
            self.metadata,
        )

    def resolved_task_id(self, request_json: bytes | None = None) -> str:
        """The idempotency key, or ``t_`` + a hash of task type and canonical request."""
        if self.task_id is not None:
            return self.task_id
        return content_task_id(
            self.task_type, request_json or canonical_json(self.request_params())
        )


def _plain(value: Any) -> Any:
    """A request value as JSON-ready Python (the convenience models above dumped)."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, so equal requests hash equal."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_task_id(task_type: str, request_json: bytes) -> str:
    """A custom_id-safe id derived from the task's content."""
    digest = hashlib.blake2b(task_type.encode() + b"\x00", digest_size=16)
    digest.update(request_json)  # not concatenated: no copy of a long request
    return "t_" + digest.hexdigest()


def content_digest(fields: TaskFields, request: bytes) -> int:
    """A 64-bit digest of everything a producer said of a task but its id: the canonical
    request (model and max_tokens included) and the producer fields around it.

    Two landing lines with one ``task_id`` and the same digest are one task landed twice;
    different digests are a producer bug (see intake). Deterministic across processes
    (unlike ``hash``), so a worker process and intake agree.
    """
    seed = _producer_seed(
        fields.task_type, fields.priority, fields.deadline, fields.requires_realtime
    )
    if fields.metadata:
        seed = xxhash.xxh3_64_intdigest(
            orjson.dumps(fields.metadata, option=orjson.OPT_SORT_KEYS), seed
        )
    return xxhash.xxh3_64_intdigest(request, seed)


@lru_cache(maxsize=4096)
def _producer_seed(
    task_type: str, priority: int, deadline: datetime | None, requires_realtime: bool
) -> int:
    # Few distinct values in a day: cached, the digest costs little more than hashing the request.
    return xxhash.xxh3_64_intdigest(
        orjson.dumps((task_type, priority, deadline, requires_realtime))
    )


def ids_digest(task_ids: Iterable[str]) -> str:
    """A short name for a set of task ids (order does not matter), for per-unit file names."""
    digest = hashlib.blake2b(digest_size=8)
    for task_id in sorted(task_ids):
        digest.update(task_id.encode() + b"\x00")
    return digest.hexdigest()


def prompt_chars(params: dict[str, Any]) -> int:
    """Characters of prompt text in a request: the system prompt and every message's text
    (text blocks, text documents, tool results), for cost estimates before sending. Images
    and PDFs count no characters (their tokens are counted by the API)."""
    return _text_chars(params.get("system")) + sum(
        _text_chars(message.get("content")) for message in params["messages"]
    )


def _text_chars(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    chars = 0
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            chars += len(block.get("text", ""))
        elif kind == "document" and (block.get("source") or {}).get("type") == "text":
            chars += len(block["source"].get("data", ""))
        elif kind == "tool_result":
            chars += _text_chars(block.get("content"))
    return chars


class TaskFields(NamedTuple):
    """A validated task as intake stores it: its columns (the request is kept apart)."""

    task_id: str | None
    task_type: str
    model: str
    max_tokens: int
    priority: int
    deadline: datetime | None
    requires_realtime: bool
    prompt_chars: int
    metadata: dict[str, str]


class FastTask(NamedTuple):
    """A landing line taken by :func:`fast_task`: its fields, canonical request and prompts."""

    fields: TaskFields
    request: bytes
    """The canonical JSON of the request, byte for byte :func:`canonical_json`'s."""
    system: str | None


# The common shape of a task as msgspec structs: decoding, type checks and length limits run
# in C, and the request is encoded from the same objects without building a dict. Structs
# encode their fields in declaration order, so fields are declared in sorted key order: the
# output is canonical JSON (tests/intake/test_fast_path.py holds it to canonical_json).
# gc=False: decoded JSON never holds a cycle, so the collector need not track these.
_Prompt = Annotated[str, msgspec.Meta(min_length=1)]


class _Turn(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    content: _Prompt
    role: Literal["user", "assistant"]


class _Request(msgspec.Struct, omit_defaults=True, gc=False):
    max_tokens: int
    messages: list[_Turn]
    model: str
    system: str | msgspec.UnsetType = msgspec.UNSET


class _Producer(msgspec.Struct, forbid_unknown_fields=True, gc=False, kw_only=True):
    task_type: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TASK_TYPE_CHARS)]
    task_id: str | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=LOWEST_PRIORITY)] = DEFAULT_PRIORITY
    # JSON types a datetime can be given as (anything deeper is the model's to reject),
    # checked by the model's own validator below
    deadline: str | int | float | None = None
    requires_realtime: bool = False
    metadata: dict[str, str] = {}


class _CommonTask(_Producer, kw_only=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MODEL_CHARS)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKENS_STORED)]
    messages: Annotated[list[_Turn], msgspec.Meta(min_length=1)]
    # absent, never null: the request types have no null system prompt
    system: _Prompt | msgspec.UnsetType = msgspec.UNSET


_PRODUCER_KEYS = tuple(field.name for field in msgspec.structs.fields(_Producer))
_decode_common = msgspec.json.Decoder(_CommonTask).decode
_encode = msgspec.json.Encoder().encode
_ID_FULL = re.compile(CUSTOM_ID_PATTERN.removeprefix("^").removesuffix("$"))
# The deadline field's own validator, so every date format pydantic takes is taken alike.
_DEADLINE = TypeAdapter(LLMTask.model_fields["deadline"].annotation)


def fast_task(line: bytes | memoryview) -> FastTask | None:
    """A landing line of the common shape, decoded and checked in C; else ``None``.

    Accepts only tasks that :class:`LLMTask` accepts too, with the same resulting fields and
    canonical request (plain-string prompts, exact JSON types, no coercion); anything else,
    valid or not, returns ``None`` so :class:`LLMTask` decides it and words the reason.
    ``tests/intake/test_fast_path.py`` holds the two to agreement on generated input.
    """
    try:
        task = _decode_common(line)
    # invalid UTF-8 is a UnicodeDecodeError; RecursionError: defensive, as no field nests
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None
    messages = task.messages
    if messages[0].role != "user":
        return None
    deadline = _checked_producer(task)
    if deadline is _REFUSED:
        return None
    system = task.system
    chars = len(system) if system is not msgspec.UNSET else 0
    for turn in messages:
        chars += len(turn.content)
    try:
        request = _encode(_Request(task.max_tokens, messages, task.model, system))
    except UnicodeError:  # defensive: msgspec already rejects a lone escaped surrogate
        return None
    fields = tuple.__new__(  # skips the named tuple's Python-level __new__: once per task
        TaskFields,
        (
            task.task_id,
            task.task_type,
            task.model,
            task.max_tokens,
            task.priority,
            deadline,
            task.requires_realtime,
            chars,
            task.metadata,
        ),
    )
    return FastTask(fields, request, None if system is msgspec.UNSET else system)


_REFUSED: Any = object()


def _checked_producer(task: _Producer) -> datetime | None:
    """The producer fields' checks msgspec's types cannot make; returns the deadline as a
    datetime (or None), or :data:`_REFUSED`."""
    task_id = task.task_id
    # re's "$" also matches before a final newline; the model's pattern does not
    if task_id is not None and not _ID_FULL.fullmatch(task_id):
        return _REFUSED
    if task.deadline is None:
        return None
    try:
        return _DEADLINE.validate_python(task.deadline)
    except ValidationError:
        return _REFUSED


_convert = msgspec.convert


def rich_task(line: bytes | memoryview) -> tuple[TaskFields, dict[str, Any]] | None:
    """A landing line of any other shape the installed SDK's request types take (content
    blocks, tools, images, documents, thinking …), checked by the generated msgspec mirror of
    the contract (:mod:`llm_pipelines.providers.fast_contract`): its fields and its request
    params; else ``None``, and :class:`LLMTask` decides and words the reason.

    Accepts only tasks :class:`LLMTask` accepts too, with the same fields and request
    (``tests/intake/test_fast_path.py`` holds them to agreement).
    """
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(raw) is not dict or "params" in raw:
        return None
    producer = {name: raw.pop(name) for name in _PRODUCER_KEYS if name in raw}
    try:
        task = _convert(producer, _Producer, strict=True)
    except msgspec.ValidationError:
        return None
    deadline = _checked_producer(task)
    if deadline is _REFUSED or not fast_request_ok(raw) or value_problem(raw) is not None:
        return None
    model, max_tokens, messages = raw["model"], raw["max_tokens"], raw["messages"]
    if (
        len(model) > MAX_MODEL_CHARS
        or max_tokens > MAX_TOKENS_STORED
        or messages[0].get("role") != "user"
    ):
        return None
    fields = TaskFields(
        task.task_id,
        task.task_type,
        model,
        max_tokens,
        task.priority,
        deadline,
        task.requires_realtime,
        prompt_chars(raw),
        task.metadata,
    )
    return fields, raw
