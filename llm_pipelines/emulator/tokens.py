"""The emulated prompt: token counts of every block, cache breakpoints and the prompt cache.

Usage follows Anthropic's rules: ``input_tokens`` is the uncached part of the prompt; cache
writes and reads are reported apart, split by TTL; the prompt is read in cache-prefix order
(tools, then system, then messages). Counts are deterministic estimates, not a tokenizer:

* text: about four characters a token, plus a few tokens per turn;
* images: ``width * height / 750`` after scaling to fit 1568 px on the long edge and about
  1.15 megapixels (vision docs); the size is read from the PNG/GIF/WebP/JPEG header of
  base64 data, and an image whose size cannot be read (a URL, a file id) counts as the
  largest unscaled image, :data:`IMAGE_FALLBACK_TOKENS`;
* PDFs: :data:`PDF_PAGE_TOKENS` per page (PDF support docs: each page is text plus an image
  of the page, "typically 1,500-3,000 tokens per page"); pages are counted from the
  document's ``/Type /Page`` objects, and a PDF not sent inline counts as one page;
* text and content documents by their text; tools by their definition, plus the tool-use
  system prompt (:data:`TOOL_SYSTEM_TOKENS`, tool use docs).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 3
"""Role markers and separators each turn adds to the prompt."""
TTL_SECONDS = {"5m": 300, "1h": 3600}
IMAGE_MAX_EDGE = 1568
IMAGE_MAX_PIXELS = 1_150_000
IMAGE_FALLBACK_TOKENS = 1_600
PDF_PAGE_TOKENS = 2_000
TOOL_SYSTEM_TOKENS = {"auto": 346, "none": 346, "any": 313, "tool": 313}
"""Tokens of the system prompt tool use adds, by ``tool_choice`` (Claude 4 figures)."""
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def count_tokens(text: str) -> int:
    """Emulated tokenizer: about four characters a token."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def image_size(data: str) -> tuple[int, int] | None:
    """Width and height from a base64 image's header (PNG, GIF, WebP, JPEG), if readable."""
    try:
        head = base64.b64decode(data[:64], validate=False)
    except (binascii.Error, ValueError):
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        return _webp_size(head)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    kind = head[12:16]
    if kind == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if kind == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(data: str) -> tuple[int, int] | None:
    # The frame header (SOF) follows the EXIF/ICC segments: walk the markers of the first
    # 64 KB (decoded once; a JPEG's headers are at its start).
    try:
        raw = base64.b64decode(data[: 64 * 1024 // 3 * 4], validate=False)
    except (binascii.Error, ValueError):
        return None
    at = 2
    while at + 9 < len(raw):
        if raw[at] != 0xFF:
            return None
        marker = raw[at + 1]
        length = int.from_bytes(raw[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", raw[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None


def image_tokens(source: dict[str, Any]) -> int:
    """Tokens of an image block's source (see the module docstring)."""
    size = image_size(source.get("data", "")) if source.get("type") == "base64" else None
    if not size or not all(size):
        return IMAGE_FALLBACK_TOKENS
    width, height = size
    scale = min(1.0, IMAGE_MAX_EDGE / max(width, height))
    scale = min(scale, math.sqrt(IMAGE_MAX_PIXELS / (width * height)))
    return max(1, math.ceil(width * scale * height * scale / 750))


def document_tokens(source: dict[str, Any]) -> int:
    """Tokens of a document block's source (see the module docstring)."""
    kind = source.get("type")
    if kind == "text":
        return count_tokens(source.get("data", ""))
    if kind == "content":
        content = source.get("content")
        return count_tokens(content) if isinstance(content, str) else content_tokens(content)
    pages = 1
    if kind == "base64":
        try:
            pages = max(1, len(_PDF_PAGE.findall(base64.b64decode(source.get("data", "")))))
        except (binascii.Error, ValueError):
            pages = 1
    return pages * PDF_PAGE_TOKENS


def block_tokens(block: dict[str, Any]) -> int:
    """Tokens of one content block."""
    kind = block.get("type")
    if kind == "text":
        return count_tokens(block["text"])
    if kind == "image":
        return image_tokens(block["source"])
    if kind == "document":
        return document_tokens(block["source"]) + count_tokens(block.get("title") or "")
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return count_tokens(content) + MESSAGE_OVERHEAD_TOKENS
        return content_tokens(content or []) + MESSAGE_OVERHEAD_TOKENS
    if kind == "thinking":
        return count_tokens(block["thinking"])
    # tool_use, search results, server tool blocks: their JSON, roughly.
    return count_tokens(
        orjson.dumps({k: v for k, v in block.items() if k != "cache_control"}).decode()
    )


def content_tokens(blocks: list[dict[str, Any]]) -> int:
    """Tokens of a list of content blocks."""
    return sum(block_tokens(b) for b in blocks)


@dataclass(frozen=True)
class Segment:
    """A prompt block in cache-prefix order, with what a cache breakpoint on it would cover."""

    tokens: int
    key: bytes
    ttl: str | None  # set when the block carries cache_control


def _ttl(block: dict[str, Any]) -> str | None:
    control = block.get("cache_control")
    return None if control is None else str(control.get("ttl", "5m"))


def _block_key(block: dict[str, Any]) -> bytes:
    if block.get("type") == "text":
        return block["text"].encode()
    return orjson.dumps(
        {k: v for k, v in block.items() if k != "cache_control"}, option=orjson.OPT_SORT_KEYS
    )


def segments(request: dict[str, Any]) -> Iterator[Segment]:
    """The prompt as the model reads it: tools, system blocks, then each turn's blocks."""
    tools = request.get("tools") or ()
    if tools:
        choice = (request.get("tool_choice") or {}).get("type", "auto")
        yield Segment(TOOL_SYSTEM_TOKENS.get(choice, 346), b"tools:" + choice.encode(), None)
        for tool in tools:
            yield Segment(block_tokens({**tool, "type": "tool"}), _block_key(tool), _ttl(tool))
    system = request.get("system")
    if isinstance(system, str):
        yield Segment(count_tokens(system), system.encode(), None)
    elif system:
        for block in system:
            yield Segment(count_tokens(block["text"]), block["text"].encode(), _ttl(block))
    for turn in request["messages"]:
        role = turn["role"].encode()
        content = turn["content"]
        if isinstance(content, str):
            yield Segment(
                count_tokens(content) + MESSAGE_OVERHEAD_TOKENS, role + content.encode(), None
            )
            continue
        for index, block in enumerate(content):
            overhead = MESSAGE_OVERHEAD_TOKENS if index == 0 else 0
            yield Segment(block_tokens(block) + overhead, role + _block_key(block), _ttl(block))


def prompt_tokens(request: dict[str, Any]) -> int:
    """Every token of the prompt (what ``count_tokens`` answers)."""
    return sum(segment.tokens for segment in segments(request))


@dataclass(frozen=True)
class Breakpoint:
    """A cacheable prefix: its key, its length in tokens and its TTL."""

    key: str
    tokens: int
    ttl: str


def breakpoints(request: dict[str, Any], min_tokens: int) -> tuple[int, list[Breakpoint]]:
    """Total prompt tokens and the prefixes long enough to cache, shortest first.

    A top-level ``cache_control`` (automatic caching) puts a breakpoint on the last block.
    """
    digest = hashlib.blake2b(request["model"].encode(), digest_size=16)
    total = 0
    found: list[Breakpoint] = []
    automatic = request.get("cache_control")
    parts = list(segments(request))
    for index, segment in enumerate(parts):
        digest.update(segment.key)
        digest.update(b"\x00")
        total += segment.tokens
        ttl = segment.ttl
        if ttl is None and automatic is not None and index == len(parts) - 1:
            ttl = str(automatic.get("ttl", "5m"))
        if ttl is not None and total >= min_tokens:
            found.append(Breakpoint(digest.copy().hexdigest(), total, ttl))
    return total, found


class PromptTooLong(ValueError):
    """A prompt longer than the model's context window (the API answers 400)."""


class PromptCache:
    """Cache entries by prefix key with their expiry (epoch seconds); shared through the store.

    Like Anthropic's: a request reads the longest live prefix, writes its longest breakpoint
    beyond that, and a read refreshes the entry's lifetime.
    """

    def __init__(self, entries: dict[str, float] | None = None) -> None:
        self.entries = entries or {}

    def use(
        self, request: dict[str, Any], min_tokens: int, now: float, limit: int | None = None
    ) -> dict[str, Any]:
        """Usage of the prompt for one request, updating the cache as the API would.

        A prompt longer than ``limit`` tokens (the model's context window) raises
        :class:`PromptTooLong` and changes nothing.
        """
        total, points = breakpoints(request, min_tokens)
        if limit is not None and total > limit:
            raise PromptTooLong(f"prompt is too long: {total} tokens > {limit} maximum")
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
