"""The emulated model: checks a request against its model, and answers it.

An answer is a function of the request and its *attempt* (how many earlier answers to the
same request ran into ``max_tokens``): the same request gets the same answer, and a request
retried after being cut short gets a fresh draw, so a client that retries converges, as
it would on the real API. Answer lengths are drawn like real answers' (a few hundred tokens at
most, whatever ``max_tokens`` allows); ``max_tokens`` only cuts them short.

What comes back, by request:

* ``tool_choice`` ``tool``/``any``: a ``tool_use`` block whose ``input`` follows the tool's
  ``input_schema``; with tools and ``auto`` (or no choice), a text answer or a tool call;
* ``output_config.format`` (``json_schema``): text that is JSON valid against the schema; so
  does a prompt that mentions JSON and contains a JSON Schema object (see
  :func:`requested_schema`), for producers that ask in the prompt;
* ``thinking`` (``enabled``, or ``adaptive`` when the model decides to think): a signed
  thinking block first, billed in ``output_tokens`` (``output_tokens_details``);
* ``stop_sequences``: the answer may emit one, and stops there (``stop_reason``
  ``stop_sequence``);
* ``max_tokens: 0``: no output (the request only fills the prompt cache).

The rarer stop reasons (``pause_turn``, ``refusal``, ``model_context_window_exceeded``) come
from the fault plan's ``stop_reason_rates`` (and the last one also naturally, when the answer
would overflow the model's context window).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from llm_pipelines.emulator.lineup import ModelEntry
from llm_pipelines.emulator.tokens import CHARS_PER_TOKEN, count_tokens

ANSWER_TEXT = (
    "the product ships in recycled packaging and arrives ready to use customers value its "
    "durable finish simple care and honest sizing we recommend it for daily use the summary "
    "below covers category sentiment urgency and the main issue raised by the customer overall "
    "quality is good with minor concerns about delivery times and clear instructions"
)
VOCABULARY = tuple(ANSWER_TEXT.split())
ANSWER_MEDIAN_TOKENS = 160
"""Median length of a prose answer; lengths are log-normal around it (sigma 0.6)."""
THINKING_MEDIAN_TOKENS = 300
ADAPTIVE_THINKS = 0.75
"""Share of adaptive-thinking requests the model spends thinking on."""
AUTO_TOOL_CALLS = 0.5
"""Share of ``auto`` requests with tools that the model answers with a tool call."""
EMITS_STOP_SEQUENCE = 0.5
"""Share of requests with ``stop_sequences`` whose answer emits one."""
RARE_STOPS = ("pause_turn", "refusal", "model_context_window_exceeded")


class RequestRefused(ValueError):
    """A request the API refuses for its content: ``status`` and ``kind`` as it answers."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.kind = kind


def check_request(request: dict[str, Any], entry: ModelEntry | None) -> ModelEntry:
    """What the API checks beyond the request's shape, against the model that would answer.

    ``entry`` is the serving model (None: unknown or retired). Raises :class:`RequestRefused`
    with the API's status and error type. (The prompt's length is checked as it is counted.)
    """
    model = request["model"]
    if entry is None:
        raise RequestRefused(f"model: {model}", 404, "not_found_error")
    max_tokens = request.get("max_tokens", 0)
    if max_tokens > entry.max_tokens:
        raise RequestRefused(
            f"max_tokens: {max_tokens} > {entry.max_tokens}, which is the maximum allowed "
            f"number of output tokens for {entry.id}"
        )
    thinking = (request.get("thinking") or {}).get("type")
    if thinking is not None and thinking not in entry.thinking:
        raise RequestRefused(
            f"thinking.type: {thinking!r} is not supported on {entry.id}; use one of "
            f"{', '.join(repr(t) for t in entry.thinking)}"
        )
    effort = (request.get("output_config") or {}).get("effort")
    if effort is not None and effort not in entry.effort:
        raise RequestRefused(f"output_config.effort: {effort!r} is not supported on {entry.id}")
    choice = request.get("tool_choice") or {}
    names = {t["name"] for t in request.get("tools") or () if "name" in t}
    if choice.get("type") in ("any", "tool"):
        if not entry.forced_tool_use:
            raise RequestRefused(
                f"tool_choice: forced tool use ({choice['type']!r}) is not supported on "
                f"{entry.id}; use 'auto'"
            )
        if not names:
            raise RequestRefused("tool_choice: requires tools")
    if choice.get("type") == "tool" and choice.get("name") not in names:
        raise RequestRefused(f"tool_choice.name: {choice.get('name')!r} is not one of the tools")
    return entry


def fingerprint(request: dict[str, Any]) -> bytes:
    """The request's identity for answers: everything but ``stream`` (a streamed answer is the
    same answer)."""
    body = {k: v for k, v in request.items() if k != "stream"}
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


_PROSE = " ".join(random.Random(0).choices(VOCABULARY, k=40_000))
"""Word salad to cut answers from: one slice per answer (drawing every word was most of the
emulator's time per request)."""


def _words(rng: random.Random, tokens: int) -> str:
    """Prose of about ``tokens`` tokens: a slice of :data:`_PROSE` from a drawn word."""
    size = max(1, tokens * CHARS_PER_TOKEN)
    start = _PROSE.find(" ", rng.randrange(len(_PROSE) - size - 64)) + 1
    end = _PROSE.rfind(" ", start, start + size + 1)
    return _PROSE[start : end if end > start else start + size].capitalize()


def _length(rng: random.Random, median: int) -> int:
    return max(8, min(8_000, int(math.exp(rng.gauss(math.log(median), 0.6)))))


class _Writer:
    """Fills the answer's content within the ``max_tokens`` budget."""

    def __init__(self, budget: int, window: int) -> None:
        self.budget = budget
        self.window = window  # tokens left in the model's context window
        self.used = 0
        self.thinking = 0
        self.content: list[dict[str, Any]] = []
        self.stop: str | None = None

    @property
    def left(self) -> int:
        return min(self.budget, self.window) - self.used

    def _cut_reason(self) -> str:
        return "model_context_window_exceeded" if self.window < self.budget else "max_tokens"

    def text(self, text: str) -> None:
        """A text block, cut where the budget runs out."""
        tokens = count_tokens(text)
        if tokens > self.left:
            text, tokens = text[: self.left * CHARS_PER_TOKEN], self.left
            self.stop = self._cut_reason()
        if text or not self.stop:
            self.content.append({"type": "text", "text": text, "citations": None})
        self.used += tokens

    def think(self, text: str, signature: str, shown: bool) -> None:
        tokens = count_tokens(text)
        if tokens >= self.left:
            text, tokens = text[: self.left * CHARS_PER_TOKEN], self.left
            self.stop = self._cut_reason()
        self.content.append(
            {"type": "thinking", "thinking": text if shown else "", "signature": signature}
        )
        self.used += tokens
        self.thinking += tokens

    def tool_use(self, name: str, value: dict[str, Any], rng: random.Random) -> None:
        tokens = count_tokens(name) + count_tokens(orjson.dumps(value).decode())
        if tokens > self.left:  # an unfinished call is not returned
            self.used = min(self.budget, self.window)
            self.stop = self._cut_reason()
            return
        self.content.append(
            {
                "type": "tool_use",
                "id": "toolu_" + uuid.UUID(int=rng.getrandbits(128)).hex[:24],
                "name": name,
                "input": value,
                "caller": {"type": "direct"},
                "toolset_name": None,
            }
        )
        self.used += tokens
        self.stop = "tool_use"


def answer(
    request: dict[str, Any],
    prompt_usage: dict[str, Any],
    service_tier: str,
    *,
    entry: ModelEntry,
    attempt: int = 0,
    forced_stop: str | None = None,
    identity: bytes | None = None,
) -> dict[str, Any]:
    """The model's reply to a checked request: a ``Message`` object as the API returns it.

    ``identity`` is the request's :func:`fingerprint`, when the caller has it already.
    """
    identity = identity or fingerprint(request)
    rng = random.Random(identity + attempt.to_bytes(4, "big"))
    prompt = sum(
        prompt_usage[k]
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    writer = _Writer(request["max_tokens"], entry.max_input_tokens - prompt)
    stop_sequence = None
    if request["max_tokens"] == 0:
        writer.stop = "max_tokens"
    elif forced_stop is not None:
        writer.text(_words(rng, 12))
        writer.stop = forced_stop
    else:
        _think(request, writer, rng, identity)
        if writer.stop is None:
            stop_sequence = _respond(request, writer, rng)
    stop_reason = writer.stop or ("stop_sequence" if stop_sequence else "end_turn")
    usage = {
        **prompt_usage,
        "output_tokens": writer.used,
        "output_tokens_details": {"thinking_tokens": writer.thinking},
        "server_tool_use": None,
        "service_tier": service_tier,
        "inference_geo": "global",
        "speed": "standard",
    }
    return {
        "id": "msg_"
        + hashlib.blake2b(identity + attempt.to_bytes(4, "big"), digest_size=12).hexdigest(),
        "type": "message",
        "role": "assistant",
        "model": request["model"],
        "content": writer.content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence if stop_reason == "stop_sequence" else None,
        "stop_details": _refusal() if stop_reason == "refusal" else None,
        "usage": usage,
        "container": None,
        "diagnostics": None,
    }


def _refusal() -> dict[str, Any]:
    return {
        "type": "refusal",
        "category": "general_harms",
        "explanation": "emulated refusal (fault plan stop_reason_rates)",
    }


def _think(request: dict[str, Any], writer: _Writer, rng: random.Random, identity: bytes) -> None:
    thinking = request.get("thinking") or {}
    kind = thinking.get("type")
    if kind == "adaptive":
        if rng.random() >= ADAPTIVE_THINKS:
            return
    elif kind != "enabled":
        return
    tokens = _length(rng, THINKING_MEDIAN_TOKENS)
    if kind == "enabled":
        tokens = min(tokens, thinking["budget_tokens"])
    signature = base64.b64encode(hashlib.blake2b(identity, digest_size=48).digest()).decode()
    writer.think(_words(rng, tokens), signature, thinking.get("display") != "omitted")


def _respond(request: dict[str, Any], writer: _Writer, rng: random.Random) -> str | None:
    """The visible answer; returns the stop sequence it emitted, if any."""
    tools = [t for t in request.get("tools") or () if "input_schema" in t]
    choice = request.get("tool_choice") or {"type": "auto"}
    call = None
    if choice["type"] == "tool":
        call = next(t for t in tools if t["name"] == choice["name"])
    elif choice["type"] == "any" or (
        tools and choice["type"] == "auto" and rng.random() < AUTO_TOOL_CALLS
    ):
        call = rng.choice(tools) if tools else None
    if call is not None:
        if choice["type"] == "auto":
            writer.text(_words(rng, 12))  # a model says what it is about to do
        if writer.stop is None:
            writer.tool_use(call["name"], value_for(call["input_schema"], rng), rng)
        return None
    schema = ((request.get("output_config") or {}).get("format") or {}).get("schema")
    if schema is None:
        schema = requested_schema(request)
    if schema is not None:
        writer.text(orjson.dumps(value_for(schema, rng, last_user_text(request).lower())).decode())
        return None
    text = _words(rng, _length(rng, ANSWER_MEDIAN_TOKENS))
    stops = request.get("stop_sequences") or ()
    emitted = None
    if stops and rng.random() < EMITS_STOP_SEQUENCE:
        words = text.split(" ")
        at = rng.randrange(1, max(2, len(words)))
        text = " ".join(words[:at]) + " " + rng.choice(stops) + " " + " ".join(words[at:])
    found = [(text.find(s), s) for s in stops if s and s in text]
    if found:
        at, emitted = min(found)
        text = text[:at].rstrip()
    writer.text(text)
    return emitted if writer.stop is None else None


# -- streaming ---------------------------------------------------------------------------------


def stream_events(message: dict[str, Any]) -> Iterator[bytes]:
    """The message as server-sent events, as the API streams it and the SDK accumulates it."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "usage": {
            **usage,
            "output_tokens": min(1, usage["output_tokens"]),
            "output_tokens_details": None,
        },
    }
    yield _event("message_start", {"type": "message_start", "message": start})
    yield _event("ping", {"type": "ping"})
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            first, deltas = (
                {**block, "text": ""},
                [{"type": "text_delta", "text": t} for t in _pieces(block["text"])],
            )
        elif kind == "thinking":
            first = {**block, "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": t} for t in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:  # tool_use
            first = {**block, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": t}
                for t in _pieces(orjson.dumps(block["input"]).decode())
            ]
        yield _event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": first},
        )
        for delta in deltas:
            yield _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
    delta = {
        "stop_reason": message["stop_reason"],
        "stop_sequence": message["stop_sequence"],
        "stop_details": message["stop_details"],
        "container": message["container"],
    }
    totals = {
        k: usage[k]
        for k in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            "output_tokens_details",
            "server_tool_use",
        )
    }
    yield _event("message_delta", {"type": "message_delta", "delta": delta, "usage": totals})
    yield _event("message_stop", {"type": "message_stop"})


def _pieces(text: str, size: int = 48) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# -- structured output ---------------------------------------------------------------------

_JSON_ASKED = re.compile(r"\bjson\b", re.IGNORECASE)
_DECODER = json.JSONDecoder()
_MAX_SCHEMA_ATTEMPTS = 64
"""Opening braces tried per prompt block before giving up: bounds the work on long prompts."""


def requested_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema the prompt asks the answer to follow, if it asks for one.

    The rule (documented for producers): a prompt block — the system prompt or a user turn —
    that mentions JSON and contains a JSON Schema object (``"type": "object"`` with
    ``"properties"``) asks for a JSON answer following that schema. A real model honours such
    an instruction; the emulator does so exactly. The system prompt is read first.
    """
    for text in _prompt_blocks(request):
        schema = _schema_in(text)
        if schema is not None:
            return schema
    return None


def _texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    else:
        yield from (block["text"] for block in content or () if block.get("type") == "text")


def _prompt_blocks(request: dict[str, Any]) -> Iterator[str]:
    yield from _texts(request.get("system"))
    for turn in request["messages"]:
        if turn["role"] == "user":
            yield from _texts(turn["content"])


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
        if (
            isinstance(value, dict)
            and value.get("type") == "object"
            and isinstance(value.get("properties"), dict)
        ):
            return value
        # A JSON object that is not a schema (an example answer, say) is skipped whole.
        start = text.find("{", end)
    return None


def last_user_text(request: dict[str, Any]) -> str:
    """The text of the last user turn: what a model grounds its choices in."""
    for turn in reversed(request["messages"]):
        if turn["role"] == "user":
            return " ".join(_texts(turn["content"]))
    return ""


def value_for(
    schema: dict[str, Any], rng: random.Random, context: str = "", root: Any = None
) -> Any:
    """A value that validates against ``schema`` (the common JSON Schema keywords, local
    ``$ref``\\ s), drawn from ``rng``. An ``enum`` option that ``context`` mentions is
    preferred, as a model would pick the category the input talks about."""
    root = schema if root is None else root
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target.get(part, {}) if part else target
        return value_for(target, rng, context, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        options = list(schema["enum"])
        mentioned = [o for o in options if isinstance(o, str) and _mentions(context, o)]
        return rng.choice(mentioned or options)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            return value_for(schema[combinator][0], rng, context, root)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or properties)
        return {
            name: value_for(sub, rng, context, root)
            for name, sub in properties.items()
            if name in required or rng.random() < 0.5
        }
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = max(low, int(schema.get("maxItems", low + 2)))
        items = schema.get("items") or {}
        return [value_for(items, rng, context, root) for _ in range(rng.randint(low, high))]
    if kind == "integer":
        low = int(schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1))
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


_FORMATS = {
    "date": lambda rng: (date(2026, 1, 1) + timedelta(days=rng.randrange(365))).isoformat(),
    "date-time": lambda rng: (
        (datetime(2026, 1, 1) + timedelta(seconds=rng.randrange(31_536_000))).isoformat() + "Z"
    ),
    "time": lambda rng: f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
    "email": lambda rng: f"{rng.choice(VOCABULARY)}@example.com",
    "uri": lambda rng: f"https://example.com/{rng.choice(VOCABULARY)}",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128))),
    "ipv4": lambda rng: ".".join(str(rng.randrange(1, 255)) for _ in range(4)),
    "hostname": lambda rng: f"{rng.choice(VOCABULARY)}.example.com",
}


def _string_for(schema: dict[str, Any], rng: random.Random) -> str:
    formatted = _FORMATS.get(schema.get("format", ""))
    if formatted is not None:
        return formatted(rng)
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
