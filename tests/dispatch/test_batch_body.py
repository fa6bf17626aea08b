"""A spooled batch body goes to the API whole, again on every SDK retry."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from llm_pipelines.dispatch.packing import SPOOL_IN_MEMORY, PackedBatch, pack
from llm_pipelines.emulator import EmulatorApp, EmulatorConfig, FaultPlan, in_process_client
from llm_pipelines.providers import ANTHROPIC_LIMITS, AnthropicProvider

REQUEST = '{"max_tokens":8,"messages":[{"content":"%s","role":"user"}],"model":"claude-haiku-4-5"}'


def test_a_body_on_disk_is_sent_whole_on_every_retry(tmp_path: Path) -> None:
    # Big enough to leave memory for a temporary file; small enough to stay quick.
    count = 3_000
    text = "x" * (SPOOL_IN_MEMORY // count)
    chunk = pa.RecordBatch.from_pydict(
        {
            "custom_id": [f"t{i}" for i in range(count)],
            "params": [REQUEST % text for _ in range(count)],
        }
    )
    [packed] = list(pack([chunk], ANTHROPIC_LIMITS))
    assert isinstance(packed, PackedBatch)
    body = packed.close()
    assert len(body) > SPOOL_IN_MEMORY  # so it was spooled to a temporary file

    # The first attempts at creating the batch fail with 429/5xx; the SDK retries.
    faults = FaultPlan(seed=3, endpoint_error_rates={"batches_create": 0.7}, retry_after_ms=1)
    app = EmulatorApp(EmulatorConfig(state_dir=str(tmp_path), faults=faults))
    provider = AnthropicProvider(in_process_client(app, max_retries=8))
    status = provider.create_batch(body)
    assert app.faults_injected >= 1, "no retry happened: pick another seed"
    assert status.request_counts["processing"] == count

    results = list(provider.iter_results(status.id))
    assert len(results) == count
    assert {r.custom_id for r in results} == {f"t{i}" for i in range(count)}
    body.discard()
