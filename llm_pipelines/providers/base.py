"""What the pipeline needs from a batch LLM provider, independent of whose API it is."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

import pyarrow as pa

from llm_pipelines.storage.datasets import TOOL_CALLS

Outcome = Literal["succeeded", "errored", "canceled", "expired"]

RESULT_COLUMNS = pa.schema(
    [
        pa.field("custom_id", pa.string()),
        pa.field("outcome", pa.string()),  # an Outcome
        pa.field("has_message", pa.bool_()),
        pa.field("message_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("stop_reason", pa.string()),
        pa.field("stop_sequence", pa.string()),
        pa.field("stop_details", pa.string()),  # JSON
        pa.field("output_text", pa.string()),
        pa.field("content_json", pa.string()),
        pa.field("tool_calls", TOOL_CALLS),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("thinking_tokens", pa.int64()),
        pa.field("cache_write_5m_tokens", pa.int64()),
        pa.field("cache_write_1h_tokens", pa.int64()),
        pa.field("cache_read_tokens", pa.int64()),
        pa.field("error_type", pa.string()),
        pa.field("error_message", pa.string()),
    ]
)
"""A chunk of batch results as :meth:`BatchProvider.iter_result_chunks` yields them: one row per
result line, usage already split the way result rows store it, the content whole
(``content_json``) and its text and tool calls apart."""


@dataclass(frozen=True)
class BatchLimits:
    """The provider's per-batch limits."""

    max_requests: int
    max_bytes: int


@dataclass(frozen=True)
class BatchStatus:
    """A provider batch as last seen."""

    id: str
    processing_status: str
    created_at: datetime
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    request_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        """Whether results can be collected."""
        return self.processing_status == "ended"


class RequestResult(NamedTuple):
    """One request's outcome in a batch (or a synchronous call).

    A named tuple (immutable, and several times cheaper to build than a frozen dataclass):
    one is made per result line, millions per partition.
    """

    custom_id: str
    outcome: Outcome
    message: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None


class RequestBody(Protocol):
    """A serialised batch body that can be read more than once (an SDK retry sends it again)."""

    def __len__(self) -> int:
        """Bytes in the body."""
        ...

    def __iter__(self) -> Iterator[bytes]:
        """The body's bytes from the start, in chunks."""
        ...


class BatchProvider(Protocol):
    """Submit, poll, stream results, cancel, and call synchronously."""

    name: str
    limits: BatchLimits

    def create_batch(self, body: bytes | RequestBody) -> BatchStatus:
        """Create a batch from a serialised request body."""
        ...

    def get_batch(self, batch_id: str) -> BatchStatus:
        """The batch's current status."""
        ...

    def cancel_batch(self, batch_id: str) -> BatchStatus:
        """Ask the provider to stop a batch; unfinished requests come back canceled."""
        ...

    def list_batches(self) -> Iterator[BatchStatus]:
        """Every batch the account can see, newest first."""
        ...

    def iter_results(self, batch_id: str) -> Iterator[RequestResult]:
        """Stream an ended batch's results."""
        ...

    def iter_result_chunks(self, batch_id: str) -> Iterator[pa.Table]:
        """Stream an ended batch's results as tables of :data:`RESULT_COLUMNS` (the hot path)."""
        ...

    def create_message(self, params: dict[str, Any]) -> dict[str, Any]:
        """One synchronous Messages call; returns the message as a dict."""
        ...
