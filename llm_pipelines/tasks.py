"""What a producer asks for: the task schema, its identity and its provider request."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

CUSTOM_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
"""Anthropic's rule for a batch request's ``custom_id``; our ``task_id`` is that id."""
CUSTOM_ID_RE = re.compile(CUSTOM_ID_PATTERN)

MAX_PROMPT_CHARS = 2_000_000
"""A prompt longer than this cannot fit any model's context window: reject it at intake."""

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
    task_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    messages: list[ChatMessage] = Field(min_length=1)
    system: NonEmptyText | list[TextBlock] | None = None
    max_tokens: int = Field(ge=1, le=128_000)
    temperature: float | None = Field(default=None, ge=0, le=1)
    priority: int = Field(default=5, ge=0, le=9, description="0 is most urgent")
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
    digest = hashlib.blake2b(task_type.encode() + b"\x00" + request_json, digest_size=16)
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
