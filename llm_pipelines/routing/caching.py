"""Prompt-cache planning: find the prefixes tasks share and mark the ones worth caching.

A request has up to two candidate prefixes, each ending where a ``cache_control``
breakpoint can go:

- the **system prompt** (``system``, a string or blocks), shared by every task of a kind;
- a **shared document**: the system prompt plus the leading blocks of the first user turn
  (all of its blocks but the last), e.g. a reference text several questions are asked about.

Each candidate gets a key (a hash of the model and the prefix text: a cache entry belongs to
one model) and a token estimate. Routing counts, per route, how many tasks of the partition
send each key; a breakpoint is marked only if the prefix reaches the model's minimum
cacheable length *and* enough tasks share it to repay the cache write (see
:func:`~llm_pipelines.routing.policy.break_even_group_size`). A request the producer already
marked is left exactly as it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from llm_pipelines.tasks import canonical_json

CHARS_PER_TOKEN = 4
"""Prompt length estimate before sending (the emulator counts the same way)."""


@dataclass(frozen=True, slots=True)
class RequestShape:
    """What routing needs to know about one request to plan its cache breakpoints and reuse."""

    request_key: bytes
    """16-byte hash of the canonical request as it will be sent (after right-sizing)."""
    system_key: int | None
    system_tokens: int
    document_key: int | None
    document_tokens: int
    """Estimated tokens up to the end of the shared document (system included)."""
    producer_marked: bool
    """The producer placed its own ``cache_control``: routing adds none."""


def _key(*parts: str) -> int:
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")
    return int.from_bytes(digest.digest(), "big", signed=True)


def request_key(params: dict[str, Any]) -> bytes:
    """The identity of a request for reuse: a hash of its canonical JSON."""
    return hashlib.blake2b(canonical_json(params), digest_size=16).digest()


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
    blocks = _system_blocks(params)
    for message in params["messages"]:
        if isinstance(message.get("content"), list):
            blocks = blocks + message["content"]
    return any(block.get("cache_control") for block in blocks)


def shape(params: dict[str, Any], *, documents: bool) -> RequestShape:
    """Keys and sizes of a request's candidate prefixes (``params`` already right-sized)."""
    model = params["model"]
    system = _text(_system_blocks(params))
    system_key = _key(model, "system", system) if system else None
    document = _text(_document_blocks(params)) if documents else ""
    document_key = _key(model, "document", system, document) if document else None
    return RequestShape(
        request_key=request_key(params),
        system_key=system_key,
        system_tokens=len(system) // CHARS_PER_TOKEN,
        document_key=document_key,
        document_tokens=(len(system) + len(document)) // CHARS_PER_TOKEN,
        producer_marked=_is_marked(params),
    )


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
