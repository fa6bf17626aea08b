"""The emulated model: request validation, token counts, prompt caching and deterministic answers.

Nothing here is random at run time: an answer is a function of the request, and usage follows
the same rules as Anthropic's (``input_tokens`` is the uncached part of the prompt; cache
writes and reads are reported apart, split by TTL).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from llm_pipelines.costs import default_price_table

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 3
"""Role markers and separators each turn adds to the prompt."""
TTL_SECONDS = {"5m": 300, "1h": 3600}
ANSWER_TEXT = (
    "the product ships in recycled packaging and arrives ready to use customers value its "
    "durable finish simple care and honest sizing we recommend it for daily use the summary "
    "below covers category sentiment urgency and the main issue raised by the customer overall "
    "quality is good with minor concerns about delivery times and clear instructions"
)
VOCABULARY = tuple(ANSWER_TEXT.split())


class ContentBlock(BaseModel):
    """A content block; only text counts towards the emulated prompt."""

    model_config = ConfigDict(extra="allow")
    type: Annotated[str, StringConstraints(min_length=1)]
    text: str | None = None
    cache_control: dict[str, Any] | None = None


class Turn(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class MessageRequest(BaseModel):
    """The Messages API request body, validated as strictly as the real API."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, StringConstraints(min_length=1)]
    max_tokens: int = Field(ge=1)
    messages: list[Turn] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    service_tier: str | None = None


class RequestInvalid(ValueError):
    """A request the real API would refuse with ``invalid_request_error``."""


def validate_request(raw: Any, where: str = "") -> MessageRequest:
    """Validate a request body; the error message names each offending field like the API."""
    try:
        request = MessageRequest.model_validate(raw)
    except ValidationError as error:
        raise RequestInvalid(describe(error, where)) from None
    if request.stream:
        raise RequestInvalid(f"{where}stream: streaming is not supported by the emulator")
    return request


def describe(error: ValidationError, where: str = "") -> str:
    """A pydantic error as ``field.path: problem; …``."""
    return "; ".join(
        f"{where}{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in error.errors(include_url=False)
    )


def count_tokens(text: str) -> int:
    """Emulated tokenizer: about four characters a token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


@dataclass(frozen=True)
class Segment:
    """A prompt block in order (system first), with what a cache breakpoint on it would cover."""

    tokens: int
    text: str
    ttl: str | None  # set when the block carries cache_control


def segments(request: MessageRequest) -> Iterator[Segment]:
    """The prompt as the model reads it: system blocks, then each turn's blocks."""
    system = request.system
    if isinstance(system, str):
        yield Segment(count_tokens(system), system, None)
    elif system:
        for block in system:
            yield _segment(block)
    for turn in request.messages:
        if isinstance(turn.content, str):
            yield Segment(
                count_tokens(turn.content) + MESSAGE_OVERHEAD_TOKENS, turn.role + turn.content, None
            )
            continue
        for index, block in enumerate(turn.content):
            overhead = MESSAGE_OVERHEAD_TOKENS if index == 0 else 0
            seg = _segment(block)
            yield Segment(seg.tokens + overhead, turn.role + seg.text, seg.ttl)


def _segment(block: ContentBlock) -> Segment:
    text = block.text or ""
    ttl = None
    if block.cache_control is not None:
        ttl = str(block.cache_control.get("ttl", "5m"))
    return Segment(count_tokens(text), text, ttl)


@dataclass(frozen=True)
class Breakpoint:
    """A cacheable prefix: its key, its length in tokens and its TTL."""

    key: str
    tokens: int
    ttl: str


def breakpoints(request: MessageRequest, min_tokens: int) -> tuple[int, list[Breakpoint]]:
    """Total prompt tokens and the prefixes long enough to cache, shortest first."""
    digest = hashlib.blake2b(request.model.encode(), digest_size=16)
    total = 0
    found: list[Breakpoint] = []
    for segment in segments(request):
        digest.update(segment.text.encode())
        digest.update(b"\x00")
        total += segment.tokens
        if segment.ttl is not None and total >= min_tokens:
            found.append(Breakpoint(digest.copy().hexdigest(), total, segment.ttl))
    return total, found


class PromptCache:
    """Cache entries by prefix key with their expiry (epoch seconds); shared through the store.

    Like Anthropic's: a request reads the longest live prefix, writes its longest breakpoint
    beyond that, and a read refreshes the entry's lifetime.
    """

    def __init__(self, entries: dict[str, float] | None = None) -> None:
        self.entries = entries or {}

    def use(self, request: MessageRequest, now: float) -> dict[str, Any]:
        """Usage of the prompt for one request, updating the cache as the API would."""
        price = default_price_table().models.get(request.model)
        minimum = price.min_cacheable_tokens if price else 1024
        total, points = breakpoints(request, minimum)
        read = 0
        for point in reversed(points):
            if self.entries.get(point.key, 0) > now:
                read = point.tokens
                self.entries[point.key] = now + TTL_SECONDS.get(point.ttl, 300)
                break
        written = {"5m": 0, "1h": 0}
        if points and points[-1].tokens > read:
            last = points[-1]
            ttl = last.ttl if last.ttl in written else "5m"
            written[ttl] = last.tokens - read
            for point in points:
                if point.tokens > read:
                    self.entries[point.key] = now + TTL_SECONDS[ttl]
        creation = written["5m"] + written["1h"]
        return {
            "input_tokens": total - read - creation,
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written["5m"],
                "ephemeral_1h_input_tokens": written["1h"],
            },
        }

    def prune(self, now: float) -> None:
        """Forget expired entries."""
        self.entries = {k: v for k, v in self.entries.items() if v > now}


def answer(
    request: MessageRequest, prompt_usage: dict[str, Any], service_tier: str
) -> dict[str, Any]:
    """The model's reply: deterministic text and token usage for this exact request."""
    fingerprint = hashlib.blake2b(
        orjson.dumps(request.model_dump(exclude_none=True), option=orjson.OPT_SORT_KEYS),
        digest_size=16,
    ).digest()
    rng = random.Random(fingerprint)
    natural = max(8, int(request.max_tokens * rng.uniform(0.25, 1.15)))
    output_tokens = min(natural, request.max_tokens)
    words = rng.choices(VOCABULARY, k=max(1, (output_tokens * CHARS_PER_TOKEN) // 6))
    text = " ".join(words).capitalize()
    return {
        "id": "msg_" + fingerprint.hex()[:24],
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if natural >= request.max_tokens else "end_turn",
        "stop_sequence": None,
        "usage": {**prompt_usage, "output_tokens": output_tokens, "service_tier": service_tier},
    }


def known_model(model: str) -> bool:
    """Whether the emulator serves ``model`` (every model in the price table)."""
    return model in default_price_table().models
