"""One Message Batch of 100,000 requests through the emulator over HTTP, with peak memory.

    uv run python benchmarks/emulator_scale.py --requests 100000

The official SDK talks to ``llm_pipelines.emulator.serving(...)`` on loopback: the request
body is packed and spooled by the pipeline's packer and streamed from disk, the emulator
spools it to disk and validates it request by request, processes the batch, and streams the
results file back, which the provider decodes block by block. Client and server share this
process, so its resident memory covers both; the figure that matters is how much it grows
while a batch a hundred times larger than any chunk goes through. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pyarrow as pa

from llm_pipelines.dispatch.packing import PackedBatch, pack
from llm_pipelines.emulator import EmulatorConfig, FaultPlan, serving
from llm_pipelines.providers import ANTHROPIC_LIMITS, AnthropicProvider

CHUNK_ROWS = 4_096


def rss_mb() -> float:
    """Resident memory of this process (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


class PeakRss:
    """The highest resident memory seen while the block runs (sampled every few ms)."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def request_chunks(requests: int, max_tokens: int):
    """Tiny but valid Messages requests, as the packer reads them."""
    for start in range(0, requests, CHUNK_ROWS):
        ids = [f"req-{i:07d}" for i in range(start, min(start + CHUNK_ROWS, requests))]
        params = [
            orjson.dumps(
                {
                    "model": "claude-haiku-4-5",
                    "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": f"Summarise ticket {i}"}],
                }
            ).decode()
            for i in ids
        ]
        yield pa.RecordBatch.from_pydict({"custom_id": ids, "params": params})


def run(requests: int, state_dir: str, errored_rate: float, max_tokens: int) -> dict[str, Any]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per HTTP request
    [packed] = list(pack(request_chunks(requests, max_tokens), ANTHROPIC_LIMITS))
    assert isinstance(packed, PackedBatch)
    assert packed.count == requests
    body = packed.close()
    config = EmulatorConfig(state_dir=state_dir, faults=FaultPlan(errored_rate=errored_rate))
    figures: dict[str, Any] = {"requests": requests, "body_mb": round(len(body) / 2**20, 1)}
    with serving(config) as url:
        client = anthropic.Anthropic(api_key="emulator", base_url=url, max_retries=2)
        provider = AnthropicProvider(client)
        start_rss = rss_mb()
        with PeakRss() as peak:
            started = time.perf_counter()
            batch = provider.create_batch(body)
            figures["create_s"] = round(time.perf_counter() - started, 2)
            body.discard()

            started = time.perf_counter()
            status = provider.get_batch(batch.id)  # the emulator processes it on this look
            figures["process_s"] = round(time.perf_counter() - started, 2)
            assert status.ended, status

            started = time.perf_counter()
            outcomes: Counter[str] = Counter()
            ids = set()
            for chunk in provider.iter_result_chunks(batch.id):
                outcomes.update(chunk["outcome"].to_pylist())
                ids.update(chunk["custom_id"].to_pylist())
            figures["results_s"] = round(time.perf_counter() - started, 2)
    figures.update(
        results=sum(outcomes.values()),
        distinct_ids=len(ids),
        outcomes=dict(outcomes),
        request_counts=status.request_counts,
        results_stream_mb=round(
            Path(state_dir, "batches", batch.id, "results.jsonl").stat().st_size / 2**20, 1
        ),
        rss_before_mb=round(start_rss, 1),
        peak_rss_mb=round(peak.peak, 1),
        peak_growth_mb=round(peak.peak - start_rss, 1),
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--errored-rate", type=float, default=0.01)
    parser.add_argument(
        "--max-tokens", type=int, default=400, help="longer answers: a bigger results stream"
    )
    args = parser.parse_args(argv)
    if args.requests > ANTHROPIC_LIMITS.max_requests:
        parser.error(f"a batch holds at most {ANTHROPIC_LIMITS.max_requests:,} requests")
    with tempfile.TemporaryDirectory(prefix="emulator-scale-") as state_dir:
        figures = run(args.requests, str(Path(state_dir)), args.errored_rate, args.max_tokens)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
