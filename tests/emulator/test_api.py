"""Emulator fidelity: the official SDK against the emulator, in process and over HTTP."""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
import pytest
from support import MODEL, error_of, params

from llm_pipelines.emulator import EmulatorConfig, EmulatorStore, in_process_client, serving
from llm_pipelines.emulator.app import MAX_BATCH_BYTES, MAX_BATCH_REQUESTS


def requests(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}{i}", "params": params(f"question {i}")} for i in range(n)]


def test_message_is_deterministic_with_realistic_usage(client: anthropic.Anthropic) -> None:
    first = client.messages.create(**params("Where is my parcel?"))
    again = client.messages.create(**params("Where is my parcel?"))
    other = client.messages.create(**params("Where is my refund?"))
    assert first.content[0].text == again.content[0].text != other.content[0].text
    assert first.model == MODEL and first.role == "assistant"
    assert first.stop_reason == "end_turn"
    assert 1 <= first.usage.output_tokens <= 1024
    # "Where is my parcel?" is 19 characters: 5 tokens plus the turn's overhead.
    assert first.usage.input_tokens == 5 + 3
    assert first.usage.service_tier == "standard"


def test_batch_lifecycle_by_time(config: EmulatorConfig) -> None:
    slow = config.model_copy(update={"batch_latency_s": 600})
    client = in_process_client(slow, max_retries=0)
    batch = client.messages.batches.create(requests=requests(3))
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3 and batch.results_url is None
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(24 * 3600)
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        list(client.messages.batches.results(batch.id))

    EmulatorStore(slow).advance_clock(601)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.request_counts.succeeded == 3 and ended.request_counts.processing == 0
    assert ended.results_url and ended.results_url.endswith(f"/{batch.id}/results")
    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == ["r0", "r1", "r2"]
    assert all(r.result.type == "succeeded" for r in results)
    assert results[0].result.message.usage.service_tier == "batch"


def test_batch_results_match_a_synchronous_answer(client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=requests(2))
    [result, _] = list(client.messages.batches.results(batch.id))
    sync = client.messages.create(**params("question 0"))
    assert result.result.message.content[0].text == sync.content[0].text


def test_list_is_newest_first_and_paginates(client: anthropic.Anthropic) -> None:
    created = [client.messages.batches.create(requests=requests(1)).id for _ in range(5)]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == created[::-1][:2] and page.has_more
    assert [b.id for b in client.messages.batches.list(limit=2)] == created[::-1]
    newer = client.messages.batches.list(limit=2, before_id=created[1])
    assert [b.id for b in newer.data] == [created[3], created[2]]


def test_cancel_ends_the_batch_with_unfinished_requests_canceled(config: EmulatorConfig) -> None:
    slow = config.model_copy(update={"batch_latency_s": 1_000})
    client = in_process_client(slow, max_retries=0)
    batch = client.messages.batches.create(requests=requests(10))
    EmulatorStore(slow).advance_clock(500)  # half way through
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    counts = ended.request_counts
    assert counts.succeeded == 5 and counts.canceled == 5
    outcomes = [r.result.type for r in client.messages.batches.results(batch.id)]
    assert outcomes.count("canceled") == 5


def test_a_batch_left_running_expires_after_24_hours(config: EmulatorConfig) -> None:
    never = config.model_copy(update={"batch_latency_s": 48 * 3600})
    client = in_process_client(never, max_retries=0)
    batch = client.messages.batches.create(requests=requests(4))
    EmulatorStore(never).advance_clock(24 * 3600 + 1)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.expired == 4
    assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"expired"}


def test_delete_only_once_ended(config: EmulatorConfig) -> None:
    slow = config.model_copy(update={"batch_latency_s": 60})
    client = in_process_client(slow, max_retries=0)
    batch = client.messages.batches.create(requests=requests(1))
    with pytest.raises(anthropic.BadRequestError, match="still processing"):
        client.messages.batches.delete(batch.id)
    EmulatorStore(slow).advance_clock(61)
    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_state_is_shared_between_emulator_instances(config: EmulatorConfig) -> None:
    """The webserver, the daemon and run workers each run their own emulator on one folder."""
    writer = in_process_client(config, max_retries=0)
    reader = in_process_client(config, max_retries=0)
    batch = writer.messages.batches.create(requests=requests(2))
    assert reader.messages.batches.retrieve(batch.id).request_counts.succeeded == 2


@pytest.mark.parametrize(
    ("batch_requests", "message"),
    [
        ([{"custom_id": "has space", "params": params()}], "requests.0.custom_id"),
        ([{"custom_id": "x" * 65, "params": params()}], "requests.0.custom_id"),
        (
            [{"custom_id": "same", "params": params()}, {"custom_id": "same", "params": params()}],
            "requests.1.custom_id: 'same' is used twice",
        ),
        ([{"custom_id": "a"}], "requests.0.params: Field required"),
        ([{"custom_id": "a", "params": params(), "extra": 1}], "requests.0.extra"),
        ([], "requests: must be a non-empty list"),
    ],
)
def test_invalid_batch_envelopes_are_refused_with_the_api_error_shape(
    client: anthropic.Anthropic, batch_requests: list[dict[str, Any]], message: str
) -> None:
    status, kind, text = error_of(lambda: client.messages.batches.create(requests=batch_requests))
    assert (status, kind) == (400, "invalid_request_error")
    assert message in text


def test_error_shapes_for_unknown_ids_models_and_malformed_bodies(
    client: anthropic.Anthropic,
) -> None:
    assert error_of(lambda: client.messages.batches.retrieve("msgbatch_missing"))[:2] == (
        404,
        "not_found_error",
    )
    assert error_of(lambda: client.messages.batches.cancel("msgbatch_missing"))[0] == 404
    assert error_of(lambda: client.messages.create(**params(model="claude-nonexistent")))[:2] == (
        404,
        "not_found_error",
    )
    malformed = lambda: client.post(  # noqa: E731
        "/v1/messages", cast_to=object, content=b"{not json", options={}
    )
    assert error_of(malformed)[:2] == (400, "invalid_request_error")


def test_a_missing_api_key_is_an_authentication_error(config: EmulatorConfig) -> None:
    with serving(config) as url:
        import httpx2

        response = httpx2.post(f"{url}/v1/messages", json=params())
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_batch_limits_are_enforced(client: anthropic.Anthropic) -> None:
    tiny = orjson.dumps(params("x", max_tokens=1)).decode()
    over_count = (
        '{"requests":['
        + ",".join(f'{{"custom_id":"r{i}","params":{tiny}}}' for i in range(MAX_BATCH_REQUESTS + 1))
        + "]}"
    ).encode()
    status, kind, text = error_of(
        lambda: client.post("/v1/messages/batches", cast_to=object, content=over_count, options={})
    )
    assert (status, kind) == (400, "invalid_request_error")
    assert "at most 100,000 requests" in text

    oversized = b'{"requests":[{"custom_id":"a","params":{"x":"' + b"a" * MAX_BATCH_BYTES + b'"}}]}'
    status, kind, _ = error_of(
        lambda: client.post("/v1/messages/batches", cast_to=object, content=oversized, options={})
    )
    assert (status, kind) == (413, "invalid_request_error")
