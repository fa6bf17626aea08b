"""The Anthropic adapter: the Message Batches and Messages APIs through the official SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
from anthropic.types.messages import MessageBatch

from llm_pipelines.jsonl import iter_lines
from llm_pipelines.providers.base import BatchLimits, BatchStatus, RequestBody, RequestResult

ANTHROPIC_LIMITS = BatchLimits(max_requests=100_000, max_bytes=256 * 1024 * 1024)
"""Per-batch limits of the Message Batches API."""
RESULTS_READ_BYTES = 1024 * 1024
"""Bytes per read of a results stream."""


class AnthropicProvider:
    """:class:`~llm_pipelines.providers.base.BatchProvider` over an ``anthropic.Anthropic`` client.

    Retries of 429/5xx/529 and connection errors are the SDK's own (``max_retries`` on the
    client); results are streamed as JSON lines and decoded with orjson, never held whole.
    """

    name = "anthropic"

    def __init__(self, client: anthropic.Anthropic, limits: BatchLimits = ANTHROPIC_LIMITS) -> None:
        self.client = client
        self.limits = limits

    def create_batch(self, body: bytes | RequestBody) -> BatchStatus:
        # The body is already serialised by the packer (sized against the 256 MB limit), so
        # send those exact bytes rather than re-encoding a list of 100k dicts. A spooled body
        # streams from disk; its length is given so it is not sent chunked.
        headers = {"content-type": "application/json", "content-length": str(len(body))}
        batch = self.client.post(
            "/v1/messages/batches", cast_to=MessageBatch, content=body, options={"headers": headers}
        )
        return _status(batch)

    def get_batch(self, batch_id: str) -> BatchStatus:
        return _status(self.client.messages.batches.retrieve(batch_id))

    def cancel_batch(self, batch_id: str) -> BatchStatus:
        return _status(self.client.messages.batches.cancel(batch_id))

    def list_batches(self) -> Iterator[BatchStatus]:
        for batch in self.client.messages.batches.list(limit=100):
            yield _status(batch)

    def iter_results(self, batch_id: str) -> Iterator[RequestResult]:
        # Raw bytes split per block and decoded by orjson: the SDK's typed results objects
        # cost several times more per line (benchmarks/throughput.py measures both).
        with self.client.messages.batches.with_streaming_response.results(batch_id) as response:
            for line in iter_lines(response.iter_bytes(RESULTS_READ_BYTES)):
                if line.strip():
                    yield parse_result_line(line)

    def create_message(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.client.messages.create(**params).model_dump(mode="json")


def parse_result_line(line: str | bytes) -> RequestResult:
    """One line of a batch results stream."""
    raw = orjson.loads(line)
    result = raw["result"]
    outcome = result["type"]
    if outcome == "succeeded":
        return RequestResult(raw["custom_id"], "succeeded", message=result["message"])
    if outcome == "errored":
        error = result.get("error", {})
        error = error.get("error", error)  # the API nests {"type": "error", "error": {...}}
        return RequestResult(
            raw["custom_id"],
            "errored",
            error_type=error.get("type", "api_error"),
            error_message=error.get("message", ""),
        )
    return RequestResult(raw["custom_id"], outcome)


def _status(batch: MessageBatch) -> BatchStatus:
    return BatchStatus(
        id=batch.id,
        processing_status=batch.processing_status,
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        ended_at=batch.ended_at,
        request_counts=batch.request_counts.model_dump(),
    )
