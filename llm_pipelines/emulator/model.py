"""The emulated model: request validation, token counts, prompt caching and deterministic answers.

Nothing here is random at run time: an answer is a function of the request, and usage follows
the same rules as Anthropic's (``input_tokens`` is the uncached part of the prompt; cache
writes and reads are reported apart, split by TTL).

Answers are word salad, except when the prompt asks for JSON and gives a JSON Schema (see
:func:`requested_schema`): then the answer is one JSON object that follows the schema, so
producers that parse structured output can be exercised end to end.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
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
    """The model's reply: deterministic text and token usage for this exact request.

    A prompt that asks for JSON following a schema gets a JSON object (cut short, like any
    answer, when ``max_tokens`` runs out); any other prompt gets word salad.
    """
    fingerprint = hashlib.blake2b(
        orjson.dumps(request.model_dump(exclude_none=True), option=orjson.OPT_SORT_KEYS),
        digest_size=16,
    ).digest()
    rng = random.Random(fingerprint)
    schema = requested_schema(request)
    if schema is None:
        # About 4% of answers run into max_tokens, as with a sensibly set limit on a real model.
        natural = max(8, int(request.max_tokens * rng.uniform(0.25, 1.03)))
        output_tokens = min(natural, request.max_tokens)
        words = rng.choices(VOCABULARY, k=max(1, (output_tokens * CHARS_PER_TOKEN) // 6))
        text = " ".join(words).capitalize()
        cut_short = natural >= request.max_tokens
    else:
        document = orjson.dumps(value_for(schema, rng, last_user_text(request).lower())).decode()
        output_tokens = min(count_tokens(document), request.max_tokens)
        text = document[: output_tokens * CHARS_PER_TOKEN]
        cut_short = len(text) < len(document)
    return {
        "id": "msg_" + fingerprint.hex()[:24],
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens" if cut_short else "end_turn",
        "stop_sequence": None,
        "usage": {**prompt_usage, "output_tokens": output_tokens, "service_tier": service_tier},
    }


# -- structured output ---------------------------------------------------------------------

_JSON_ASKED = re.compile(r"\bjson\b", re.IGNORECASE)
_DECODER = json.JSONDecoder()
_MAX_SCHEMA_ATTEMPTS = 64
"""Opening braces tried per prompt block before giving up: bounds the work on long prompts."""


def requested_schema(request: MessageRequest) -> dict[str, Any] | None:
    """The JSON Schema the prompt asks the answer to follow, if it asks for one.

    The rule (documented for producers): a prompt block — the system prompt or a user turn —
    that mentions JSON and contains a JSON Schema object (``"type": "object"`` with
    ``"properties"``) asks for a JSON answer following that schema. A real model honours such
    an instruction; the emulator does so exactly. The system prompt is read first. Keep the
    schema self-contained: ``$ref`` is not followed (its values come out as strings).
    """
    for text in _prompt_blocks(request):
        schema = _schema_in(text)
        if schema is not None:
            return schema
    return None


def _prompt_blocks(request: MessageRequest) -> Iterator[str]:
    system = request.system
    if isinstance(system, str):
        yield system
    elif system:
        yield from (block.text or "" for block in system)
    for turn in request.messages:
        if turn.role != "user":
            continue
        if isinstance(turn.content, str):
            yield turn.content
        else:
            yield from (block.text or "" for block in turn.content)


@lru_cache(maxsize=256)
def _schema_in(text: str) -> dict[str, Any] | None:
    # Cached: every request of a batch shares the same (long) system prompt.
    if not _JSON_ASKED.search(text):
        return None
    start = text.find("{")
    for _ in range(_MAX_SCHEMA_ATTEMPTS):
        if start < 0:
            return None
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            value, end = None, start + 1
        if isinstance(value, dict) and _is_object_schema(value):
            return value
        # A JSON object that is not a schema (an example answer, say) is skipped whole.
        start = text.find("{", end)
    return None


def _is_object_schema(value: dict[str, Any]) -> bool:
    return value.get("type") == "object" and isinstance(value.get("properties"), dict)


def last_user_text(request: MessageRequest) -> str:
    """The text of the last user turn: what a model grounds its choices in."""
    for turn in reversed(request.messages):
        if turn.role == "user":
            if isinstance(turn.content, str):
                return turn.content
            return " ".join(block.text or "" for block in turn.content)
    return ""


def value_for(schema: dict[str, Any], rng: random.Random, context: str = "") -> Any:
    """A value that validates against ``schema`` (the common JSON Schema keywords), drawn
    from ``rng``. An ``enum`` option that ``context`` mentions is preferred, as a model would
    pick the category the input talks about."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        options = list(schema["enum"])
        mentioned = [o for o in options if isinstance(o, str) and _mentions(context, o)]
        return rng.choice(mentioned or options)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            return value_for(schema[combinator][0], rng, context)
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: value_for(sub, rng, context) for name, sub in properties.items()}
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = max(low, int(schema.get("maxItems", low + 2)))
        items = schema.get("items") or {}
        return [value_for(items, rng, context) for _ in range(rng.randint(low, high))]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return rng.randint(low, max(low, int(schema.get("maximum", low + 100))))
    if kind == "number":
        low = float(schema.get("minimum", 0.0))
        high = max(low, float(schema.get("maximum", low + 1.0)))
        return round(rng.uniform(low, high), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string_for(schema, rng)


def _string_for(schema: dict[str, Any], rng: random.Random) -> str:
    low = int(schema.get("minLength", 1))
    high = max(low, int(schema.get("maxLength", 120)))
    text = " ".join(rng.choices(VOCABULARY, k=rng.randint(3, 14))).capitalize()
    while len(text) < low:
        text += " " + rng.choice(VOCABULARY)
    if len(text) <= high:
        return text
    cut = text[:high]
    # End on a whole word when that still leaves the minimum length.
    return cut.rsplit(" ", 1)[0] if len(cut.rsplit(" ", 1)[0]) >= low else cut


def _mentions(text: str, option: str) -> bool:
    phrase = option.replace("_", " ").lower()
    return bool(phrase) and re.search(rf"\b{re.escape(phrase)}\b", text) is not None


def known_model(model: str) -> bool:
    """Whether the emulator serves ``model`` (every model in the price table)."""
    return model in default_price_table().models
