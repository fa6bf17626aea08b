"""Pack requests into provider batches that respect both the count and the byte limit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from llm_pipelines.providers.base import BatchLimits

Meta = TypeVar("Meta")

BODY_PREFIX = b'{"requests":['
BODY_SUFFIX = b"]}"
ENVELOPE_BYTES = len(BODY_PREFIX) + len(BODY_SUFFIX)


def request_entry(custom_id: str, params_json: bytes) -> bytes:
    """One element of the batch body's ``requests`` array, as bytes."""
    return b'{"custom_id":"' + custom_id.encode() + b'","params":' + params_json + b"}"


@dataclass
class PackedBatch(Generic[Meta]):
    """A serialised batch body with the ids (and caller's metadata) of what it holds."""

    custom_ids: list[str] = field(default_factory=list)
    metas: list[Meta] = field(default_factory=list)
    body: bytearray = field(default_factory=lambda: bytearray(BODY_PREFIX))

    @property
    def size(self) -> int:
        """Bytes the body will have once closed."""
        return len(self.body) + len(BODY_SUFFIX)

    def close(self) -> bytes:
        """The finished request body."""
        return bytes(self.body + BODY_SUFFIX)


@dataclass(frozen=True)
class Oversized(Generic[Meta]):
    """A single request too large for any batch: it must be dead-lettered, not dropped."""

    custom_id: str
    meta: Meta
    size: int


def pack(
    requests: Iterable[tuple[str, bytes, Meta]], limits: BatchLimits
) -> Iterator[PackedBatch[Meta] | Oversized[Meta]]:
    """Greedily fill batches in input order; a batch closes when the next request won't fit.

    ``requests`` yields ``(custom_id, params_json, meta)``. Only the batch being filled is in
    memory, so peak memory is bounded by the byte limit, not by the number of requests.
    """
    current: PackedBatch[Meta] = PackedBatch()
    for custom_id, params_json, meta in requests:
        entry = request_entry(custom_id, params_json)
        if ENVELOPE_BYTES + len(entry) > limits.max_bytes:
            yield Oversized(custom_id, meta, ENVELOPE_BYTES + len(entry))
            continue
        separator = 1 if current.custom_ids else 0
        full = len(current.custom_ids) >= limits.max_requests
        if full or current.size + separator + len(entry) > limits.max_bytes:
            yield current
            current = PackedBatch()
            separator = 0
        if separator:
            current.body += b","
        current.body += entry
        current.custom_ids.append(custom_id)
        current.metas.append(meta)
    if current.custom_ids:
        yield current
