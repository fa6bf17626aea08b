"""What a producer asks for: the task schema, its identity and its provider request."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

CUSTOM_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
"""Anthropic's rule for a batch request's ``custom_id``; our ``task_id`` is that id."""
CUSTOM_ID_RE = re.compile(CUSTOM_ID_PATTERN)

MAX_PROMPT_CHARS = 2_000_000
"""A prompt longer than this cannot fit any model's context window: reject it at intake."""
MAX_TASK_TYPE_CHARS = 64
MAX_MODEL_CHARS = 128
MAX_OUTPUT_TOKENS = 128_000
DEFAULT_PRIORITY = 5
LOWEST_PRIORITY = 9

NonEmptyText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS)]


class TextBlock(BaseModel):
    """A text content block, optionally marked as a prompt-cache breakpoint."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = "text"
    text: NonEmptyText
    cache_control: dict[str, str] | None = None


class ChatMessage(BaseModel):
    """One turn of the conversation sent to the model."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: NonEmptyText | list[TextBlock] = Field(min_length=1)


class LLMTask(BaseModel):
    """One unit of LLM work as a producer writes it to the landing zone.

    ``task_id`` is the producer's idempotency key; without one, the task is identified by a
    hash of its canonical request, so the same request landed twice is done once.
    """

    model_config = ConfigDict(extra="forbid")

    task_id: Annotated[str, StringConstraints(pattern=CUSTOM_ID_PATTERN)] | None = None
    task_type: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TASK_TYPE_CHARS)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MODEL_CHARS)]
    messages: list[ChatMessage] = Field(min_length=1)
    system: NonEmptyText | list[TextBlock] | None = None
    max_tokens: int = Field(ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=1)
    priority: int = Field(
        default=DEFAULT_PRIORITY, ge=0, le=LOWEST_PRIORITY, description="0 is most urgent"
    )
    deadline: datetime | None = None
    requires_realtime: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _first_turn_is_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[0].role != "user":
            raise ValueError("the first message must have role 'user'")
        return messages

    def request_params(self) -> dict[str, Any]:
        """The Messages API parameters for this task, in a canonical form."""
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [m.model_dump(exclude_none=True) for m in self.messages],
        }
        if self.system is not None:
            params["system"] = (
                self.system
                if isinstance(self.system, str)
                else [b.model_dump(exclude_none=True) for b in self.system]
            )
        if self.temperature is not None:
            params["temperature"] = self.temperature
        return params

    def fields(self) -> TaskFields:
        """What intake keeps of a validated task (the same tuple :func:`fast_task` builds)."""
        params = self.request_params()
        return TaskFields(
            self.task_id,
            self.task_type,
            self.model,
            self.max_tokens,
            self.priority,
            self.deadline,
            self.requires_realtime,
            prompt_chars(params),
            params,
            self.metadata,
        )

    def resolved_task_id(self, request_json: bytes | None = None) -> str:
        """The idempotency key, or ``t_`` + a hash of task type and canonical request."""
        if self.task_id is not None:
            return self.task_id
        return content_task_id(
            self.task_type, request_json or canonical_json(self.request_params())
        )


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, so equal requests hash equal."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_task_id(task_type: str, request_json: bytes) -> str:
    """A custom_id-safe id derived from the task's content."""
    digest = hashlib.blake2b(task_type.encode() + b"\x00", digest_size=16)
    digest.update(request_json)  # not concatenated: no copy of a long request
    return "t_" + digest.hexdigest()


def ids_digest(task_ids: Iterable[str]) -> str:
    """A short name for a set of task ids (order does not matter), for per-unit file names."""
    digest = hashlib.blake2b(digest_size=8)
    for task_id in sorted(task_ids):
        digest.update(task_id.encode() + b"\x00")
    return digest.hexdigest()


def prompt_chars(params: dict[str, Any]) -> int:
    """Characters of prompt text in a request: system plus every message."""

    def text_of(content: Any) -> int:
        if content is None:
            return 0
        if isinstance(content, str):
            return len(content)
        return sum(len(block.get("text", "")) for block in content)

    return text_of(params.get("system")) + sum(text_of(m["content"]) for m in params["messages"])


class TaskFields(NamedTuple):
    """A validated task as intake stores it: its columns plus the Messages API params."""

    task_id: str | None
    task_type: str
    model: str
    max_tokens: int
    priority: int
    deadline: datetime | None
    requires_realtime: bool
    prompt_chars: int
    params: dict[str, Any]
    metadata: dict[str, str]


_TASK_KEYS = frozenset(LLMTask.model_fields)
_REQUIRED_KEYS = frozenset(n for n, f in LLMTask.model_fields.items() if f.is_required())
_ROLES = ("user", "assistant")
_ABSENT = object()
_ID_FULL = re.compile(CUSTOM_ID_PATTERN.removeprefix("^").removesuffix("$"))
# The deadline field's own validator, so every date format pydantic takes is taken alike.
_DEADLINE = TypeAdapter(LLMTask.model_fields["deadline"].annotation)


def fast_task(raw: dict[str, Any]) -> TaskFields | None:
    """The common shape of a task, checked without building pydantic models; else ``None``.

    Accepts only tasks that :class:`LLMTask` accepts too, with the same resulting fields
    (plain-string content and system prompt, exact JSON types, no coercion); anything else,
    valid or not, returns ``None`` so :class:`LLMTask` decides it and words the reason.
    ``tests/intake/test_fast_path.py`` holds the two to agreement on generated input.
    """
    get = raw.get
    task_type, model, max_tokens, messages = (
        get("task_type"),
        get("model"),
        get("max_tokens"),
        get("messages"),
    )
    if (
        type(task_type) is not str
        or type(model) is not str
        or type(max_tokens) is not int
        or type(messages) is not list
        or not 0 < len(task_type) <= MAX_TASK_TYPE_CHARS
        or not 0 < len(model) <= MAX_MODEL_CHARS
        or not 1 <= max_tokens <= MAX_OUTPUT_TOKENS
        or not messages
        or not raw.keys() <= _TASK_KEYS
    ):
        return None
    chars = 0
    for turn in messages:
        # Exactly role and content (the model forbids extra keys), content a plain string.
        if type(turn) is not dict or len(turn) != 2 or turn.get("role") not in _ROLES:
            return None
        content = turn.get("content")
        if type(content) is not str or not 0 < len(content) <= MAX_PROMPT_CHARS:
            return None
        chars += len(content)
    if messages[0]["role"] != "user":
        return None
    task_id = get("task_id")
    if task_id is not None and (type(task_id) is not str or not _ID_FULL.fullmatch(task_id)):
        return None
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    system = get("system")
    if system is not None:
        if type(system) is not str or not 0 < len(system) <= MAX_PROMPT_CHARS:
            return None
        params["system"] = system
        chars += len(system)
    temperature = get("temperature")
    if temperature is not None:
        if type(temperature) not in (float, int) or not 0 <= temperature <= 1:
            return None
        params["temperature"] = float(temperature)
    priority = get("priority", DEFAULT_PRIORITY)
    if type(priority) is not int or not 0 <= priority <= LOWEST_PRIORITY:
        return None
    realtime = get("requires_realtime", False)
    if type(realtime) is not bool:
        return None
    metadata = get("metadata", _ABSENT)
    if metadata is _ABSENT:
        metadata = {}
    elif type(metadata) is not dict or not all(
        type(k) is str and type(v) is str for k, v in metadata.items()
    ):
        return None
    deadline = get("deadline")
    if deadline is not None:
        try:
            deadline = _DEADLINE.validate_python(deadline)
        except ValidationError:
            return None
    # tuple.__new__ skips the named tuple's Python-level __new__: this runs once per task.
    return tuple.__new__(
        TaskFields,
        (
            task_id,
            task_type,
            model,
            max_tokens,
            priority,
            deadline,
            realtime,
            chars,
            params,
            metadata,
        ),
    )
