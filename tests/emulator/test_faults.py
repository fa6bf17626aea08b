"""The emulator's fault plan, through the real SDK: in process, from presets/YAML, over HTTP."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anthropic
import httpx2
import orjson
import pytest

from llm_pipelines.cli import build_parser, emulator_config
from llm_pipelines.emulator import (
    EmulatorConfig,
    EmulatorStore,
    FaultPlan,
    in_process_client,
    serving,
)
from llm_pipelines.emulator.config import FAULT_PRESETS
from llm_pipelines.providers import AnthropicProvider

PARAMS = {
    "model": "claude-haiku-4-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "say hello"}],
}


def _body(count: int) -> bytes:
    return orjson.dumps(
        {"requests": [{"custom_id": f"t-{i}", "params": PARAMS} for i in range(count)]}
    )


def _config(tmp_path: Path, **faults: object) -> EmulatorConfig:
    return EmulatorConfig(state_dir=str(tmp_path / "emulator"), faults=FaultPlan(**faults))


def _pattern(client: anthropic.Anthropic, calls: int) -> list[int]:
    """Status of each of ``calls`` list calls: 200, or the injected error status."""
    statuses = []
    for _ in range(calls):
        try:
            client.messages.batches.list(limit=1)
            statuses.append(200)
        except anthropic.APIStatusError as error:
            statuses.append(error.status_code)
    return statuses


def test_presets_and_yaml_files_resolve(tmp_path: Path) -> None:
    assert FaultPlan.resolve(None) == FaultPlan() and not FaultPlan.resolve("").active
    flaky = FaultPlan.resolve("flaky")
    assert flaky == FAULT_PRESETS["flaky"] and flaky.active
    assert FaultPlan.resolve("chaos").stalled_batch_rate > 0
    plan = tmp_path / "plan.yaml"
    plan.write_text("seed: 9\nerrored_rate: 0.5\nendpoint_error_rates: {batches_results: 0.2}\n")
    loaded = FaultPlan.resolve(str(plan))
    assert (loaded.seed, loaded.errored_rate, loaded.error_rate("batches_results")) == (
        9,
        0.5,
        0.2,
    )
    with pytest.raises(ValueError, match="neither a preset"):
        FaultPlan.resolve("no-such-preset")


def test_http_faults_are_what_the_sdk_retries(tmp_path: Path) -> None:
    config = _config(tmp_path, http_error_rate=0.5, retry_after_ms=1)
    # Without retries the injected statuses reach the caller...
    bare = _pattern(in_process_client(config, max_retries=0), 40)
    assert set(bare) - {200} <= {429, 500, 529} and set(bare) != {200}
    # ...with the SDK's own retries (retry-after-ms honoured) every call succeeds.
    assert set(_pattern(in_process_client(config, max_retries=12), 40)) == {200}
    totals = EmulatorStore(config).fault_totals()
    injected = sum(n for kind, n in totals.items() if kind.startswith("http_"))
    assert injected >= bare.count(429) + bare.count(500) + bare.count(529) + 1


def test_each_client_draws_fresh_faults_and_a_seed_replays_them(tmp_path: Path) -> None:
    config = _config(tmp_path, seed=4, http_error_rate=0.5)
    first = _pattern(in_process_client(config, max_retries=0), 30)
    second = _pattern(in_process_client(config, max_retries=0), 30)
    assert first != second, "every client (each run, each process) gets its own fault stream"
    replay = EmulatorConfig(state_dir=str(tmp_path / "again"), faults=config.faults)
    assert _pattern(in_process_client(replay, max_retries=0), 30) == first


def test_request_outcomes_follow_the_plan_and_are_counted(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        errored_rate=0.2,
        non_retryable_error_share=0.5,
        expired_rate=0.1,
        canceled_rate=0.1,
    )
    provider = AnthropicProvider(in_process_client(config))
    batch = provider.create_batch(_body(2_000))
    assert provider.get_batch(batch.id).ended
    outcomes: Counter[str] = Counter()
    for result in provider.iter_results(batch.id):
        outcomes[result.outcome if result.outcome != "errored" else result.error_type or ""] += 1
    assert 300 < outcomes["expired"] + outcomes["canceled"] < 500
    assert outcomes["invalid_request_error"] > 100
    assert outcomes["overloaded_error"] + outcomes["api_error"] > 100
    totals = EmulatorStore(config).fault_totals()
    assert totals["expired"] == outcomes["expired"]
    assert totals["canceled"] == outcomes["canceled"]
    assert totals["errored_invalid_request_error"] == outcomes["invalid_request_error"]


def test_truncated_stream_drops_the_connection_mid_body(tmp_path: Path) -> None:
    config = _config(tmp_path, truncated_results_rate=1.0)
    provider = AnthropicProvider(in_process_client(config))
    batch = provider.create_batch(_body(50))
    read = 0
    with pytest.raises(httpx2.RemoteProtocolError):
        for _ in provider.iter_results(batch.id):
            read += 1
    assert read < 50
    assert EmulatorStore(config).fault_totals()["truncated_results"] == 1


def test_stalled_batch_ends_only_when_canceled_or_expired(tmp_path: Path) -> None:
    config = _config(tmp_path, stalled_batch_rate=1.0)
    provider = AnthropicProvider(in_process_client(config))
    store = EmulatorStore(config)
    canceled, expiring = provider.create_batch(_body(5)), provider.create_batch(_body(5))
    store.advance_clock(6 * 3600)
    assert provider.get_batch(canceled.id).processing_status == "in_progress"
    provider.cancel_batch(canceled.id)
    counts = provider.get_batch(canceled.id).request_counts
    # A quarter of the way to expiry, a quarter of its requests had run.
    assert (counts["canceled"], counts["succeeded"]) == (4, 1)
    store.advance_clock(24 * 3600)
    assert provider.get_batch(expiring.id).request_counts["expired"] == 5
    assert store.fault_totals()["stalled_batch"] == 2


def test_emulator_serve_injects_its_faults_over_http(tmp_path: Path) -> None:
    plan = tmp_path / "faults.yaml"
    plan.write_text("seed: 3\nendpoint_error_rates: {batches_list: 0.6}\nretry_after_ms: 1\n")
    args = build_parser().parse_args(
        ["emulator", "serve", "--state-dir", str(tmp_path / "served"), "--faults", str(plan)]
    )
    config = emulator_config(args)
    assert config.faults == FaultPlan.resolve(str(plan))
    with serving(config) as url:  # the server `emulator serve` runs, on a free port
        client = anthropic.Anthropic(api_key="any", base_url=url, max_retries=0)
        assert {429, 500, 529} & set(_pattern(client, 30))
        # Other endpoints are untouched by this plan, and retries see the list through.
        batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": PARAMS}])
        patient = anthropic.Anthropic(api_key="any", base_url=url, max_retries=15)
        assert set(_pattern(patient, 10)) == {200}
        assert client.messages.batches.retrieve(batch.id).id == batch.id
    preset = build_parser().parse_args(["emulator", "serve", "--faults", "chaos"])
    assert emulator_config(preset).faults == FAULT_PRESETS["chaos"]
