"""Every response shape the emulator sends, held to the installed SDK's response models strictly.

Each JSON body (and each server-sent event) must validate with the SDK's model in pydantic's
strict mode, and carry exactly that model's fields at every level: no field missing (the API
sends optional ones as ``null``) and none the SDK does not know. The shapes checked are
counted; the module's last test prints the count (``pytest -s``) and holds it to a floor.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import orjson
import pydantic
import pytest
import typing_extensions
from anthropic.types import (
    Message,
    MessageTokensCount,
    ModelInfo,
    RawMessageStreamEvent,
)
from anthropic.types.messages import (
    DeletedMessageBatch,
    MessageBatch,
    MessageBatchIndividualResponse,
)
from anthropic.types.shared import ErrorResponse
from support import MODEL, params

from llm_pipelines.emulator import (
    EMULATOR_API_KEY,
    EmulatorApp,
    EmulatorConfig,
    EmulatorStore,
    FaultPlan,
    in_process_client,
)

CHECKED: set[str] = set()
"""Names of the shapes checked so far in this module."""
PAGE_FIELDS = {"data", "has_more", "first_id", "last_id"}
"""A list call's envelope (the SDK's page class has no response model of its own)."""

TOOL = {
    "name": "lookup",
    "input_schema": {
        "type": "object",
        "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["q"],
    },
}


def _members(tp: Any) -> list[Any]:
    while typing_extensions.get_origin(tp) is typing_extensions.Annotated:
        tp = typing_extensions.get_args(tp)[0]
    if typing_extensions.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for arg in typing_extensions.get_args(tp) for m in _members(arg)]
    return [tp]


def _literal_type(model: type[pydantic.BaseModel]) -> Any:
    field = model.model_fields.get("type")
    return typing_extensions.get_args(field.annotation)[0] if field is not None else None


def exact(tp: Any, value: Any, path: str = "") -> None:
    """``value`` has exactly the fields ``tp`` declares, recursively (no missing, no unknown)."""
    members = _members(tp)
    if value is None:
        assert type(None) in members or Any in members, f"{path}: null where {tp} is required"
        return
    models = [m for m in members if isinstance(m, type) and issubclass(m, pydantic.BaseModel)]
    if models:
        if len(models) > 1:  # a tagged union: the member its "type" names
            models = [m for m in models if _literal_type(m) == value.get("type")]
            assert len(models) == 1, f"{path}: no single member for type {value.get('type')!r}"
        model = models[0]
        assert isinstance(value, dict), f"{path}: {model.__name__} must be an object"
        fields = set(model.model_fields)
        assert set(value) == fields, (
            f"{path}: {model.__name__} missing {sorted(fields - set(value))}, "
            f"unknown {sorted(set(value) - fields)}"
        )
        for name, field in model.model_fields.items():
            exact(field.annotation, value[name], f"{path}.{name}")
        return
    origin = typing_extensions.get_origin(members[0]) if len(members) >= 1 else None
    if origin is list:
        [item] = typing_extensions.get_args(members[0])
        for index, element in enumerate(value):
            exact(item, element, f"{path}.{index}")


def conforms(name: str, model: Any, body: bytes | dict[str, Any]) -> Any:
    """Validate one body against an SDK model strictly and exactly; counts the shape."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    parsed = pydantic.TypeAdapter(model).validate_json(raw, strict=True)
    exact(model, orjson.loads(raw), name)
    CHECKED.add(name)
    return parsed


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[httpx2.Client, anthropic.Anthropic, EmulatorConfig]]:
    config = EmulatorConfig(state_dir=str(tmp_path / "emulator"), batch_latency_s=600)
    app = EmulatorApp(config)
    http = httpx2.Client(
        transport=httpx2.WSGITransport(app=app),
        base_url="http://emulator.invalid",
        headers={"x-api-key": EMULATOR_API_KEY},
    )
    yield http, in_process_client(app, max_retries=0), config
    http.close()


def post(http: httpx2.Client, path: str, body: dict[str, Any], status: int = 200) -> bytes:
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    return response.content


def sse(raw: bytes) -> list[bytes]:
    """The data of each server-sent event, checking that each event's name is its type."""
    events = []
    for chunk in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        assert orjson.loads(lines["data"])["type"] == lines["event"]
        if lines["event"] != "ping":
            events.append(lines["data"].encode())
    return events


def test_messages_of_every_kind(emulator) -> None:
    http, _, _ = emulator
    conforms("message text", Message, post(http, "/v1/messages", params("hi")))
    tool = {**params("weather?"), "tools": [TOOL], "tool_choice": {"type": "any"}}
    message = conforms("message tool_use", Message, post(http, "/v1/messages", tool))
    assert message.content[-1].type == "tool_use"
    thinking = {**params("think", max_tokens=4000), "thinking": {"type": "adaptive"}}
    thought = [
        conforms("message thinking", Message, post(http, "/v1/messages", thinking | {"system": s}))
        for s in ("a", "b", "c", "d")
    ]
    assert any(m.content[0].type == "thinking" for m in thought)
    for stop in ("stop_sequence", "max_tokens", "end_turn"):
        for i in range(30):
            body = {**params(f"q{i}", max_tokens=200), "stop_sequences": ["END"]}
            message = Message.model_validate_json(post(http, "/v1/messages", body))
            if message.stop_reason == stop:
                conforms(f"message {stop}", Message, message.model_dump_json().encode())
                break
    warm = conforms(
        "message max_tokens=0", Message, post(http, "/v1/messages", params(max_tokens=0))
    )
    assert warm.content == []
    structured = {
        **params("json"),
        "output_config": {"format": {"type": "json_schema", "schema": TOOL["input_schema"]}},
    }
    conforms("message structured output", Message, post(http, "/v1/messages", structured))
    counted = post(
        http, "/v1/messages/count_tokens", {"model": MODEL, "messages": params()["messages"]}
    )
    conforms("count_tokens", MessageTokensCount, counted)


@pytest.mark.parametrize("reason", ["refusal", "pause_turn", "model_context_window_exceeded"])
def test_messages_with_rare_stop_reasons(tmp_path: Path, reason: str) -> None:
    config = EmulatorConfig(
        state_dir=str(tmp_path / "e"), faults=FaultPlan(stop_reason_rates={reason: 1.0})
    )
    client = in_process_client(config, max_retries=0)
    raw = client.messages.with_raw_response.create(**params()).http_response.content
    message = conforms(f"message {reason}", Message, raw)
    assert message.stop_reason == reason


def test_streamed_events_and_what_the_sdk_makes_of_them(emulator) -> None:
    http, client, _ = emulator
    requests = [
        params("stream", max_tokens=300),
        {**params("tool"), "tools": [TOOL], "tool_choice": {"type": "tool", "name": "lookup"}},
        *(
            {**params("t", max_tokens=4000), "thinking": {"type": "adaptive"}, "system": s}
            for s in "abcd"
        ),
    ]
    for request in requests:
        events = sse(post(http, "/v1/messages", {**request, "stream": True}))
        for data in events:
            raw = orjson.loads(data)
            name = raw["type"]
            if name == "content_block_start":
                name += " " + raw["content_block"]["type"]
            elif name == "content_block_delta":
                name += " " + raw["delta"]["type"]
            conforms(f"event {name}", RawMessageStreamEvent, data)
        with client.messages.stream(**request) as stream:
            final = stream.get_final_message()
        whole = post(http, "/v1/messages", request)
        conforms("message reassembled from events", Message, final.model_dump_json().encode())
        assert final.model_dump() == Message.model_validate_json(whole).model_dump()
    for name in ("thinking_delta", "signature_delta", "input_json_delta", "text_delta"):
        assert f"event content_block_delta {name}" in CHECKED


def test_batches_their_lists_and_every_result_line(emulator) -> None:
    http, client, config = emulator
    store = EmulatorStore(config)
    requests = [
        {"custom_id": "invalid", "params": {**params(), "temperature": 1}},
        {"custom_id": "retired", "params": params(model="claude-sonnet-4-5")},
        {"custom_id": "ok", "params": params("fine")},
        *({"custom_id": f"late{i}", "params": params(f"late {i}")} for i in range(3)),
    ]
    created = conforms(
        "batch in_progress",
        MessageBatch,
        post(http, "/v1/messages/batches", {"requests": requests}),
    )
    other = client.messages.batches.create(requests=[{"custom_id": "x", "params": params()}])
    store.advance_clock(700)
    conforms("batch ended", MessageBatch, http.get(f"/v1/messages/batches/{other.id}").content)
    store.advance_clock(-300)  # back to 400 s in: two thirds of `created` were answered
    canceling = conforms(
        "batch canceling", MessageBatch, post(http, f"/v1/messages/batches/{created.id}/cancel", {})
    )
    assert canceling.processing_status == "canceling"
    page = orjson.loads(http.get("/v1/messages/batches", params={"limit": 1}).content)
    assert set(page) == PAGE_FIELDS and page["has_more"]
    for item in page["data"]:
        conforms("batch list item", MessageBatch, item)
    CHECKED.add("batch list page")
    never = in_process_client(config.model_copy(update={"batch_latency_s": 48 * 3600}))
    expired = never.messages.batches.create(requests=[{"custom_id": "e", "params": params()}])
    store.advance_clock(25 * 3600)
    lines = b"".join(
        http.get(f"/v1/messages/batches/{b}/results").content
        for b in (created.id, other.id, expired.id)
    )
    kinds = set()
    for line in lines.splitlines():
        kind = orjson.loads(line)["result"]["type"]
        conforms(f"result line {kind}", MessageBatchIndividualResponse, line)
        kinds.add(kind)
    assert kinds == {"succeeded", "errored", "canceled", "expired"}
    deleted = http.delete(f"/v1/messages/batches/{other.id}").content
    conforms("batch deleted", DeletedMessageBatch, deleted)


def test_models_listed_and_retrieved(emulator) -> None:
    http, _, _ = emulator
    for lifecycle in ("active", "deprecated", "retired"):
        page = orjson.loads(
            http.get("/v1/models", params={"lifecycle[]": lifecycle, "limit": 100}).content
        )
        assert set(page) == PAGE_FIELDS and page["data"]
        for model in page["data"]:
            info = conforms(f"model {lifecycle}", ModelInfo, model)
            assert info.lifecycle == lifecycle
    CHECKED.add("model list page")
    conforms("model by alias", ModelInfo, http.get("/v1/models/claude-haiku-4-5").content)


def test_every_error_type(tmp_path: Path, emulator) -> None:
    http, _, _ = emulator
    errors = {
        "invalid_request_error": post(http, "/v1/messages", {**params(), "top_p": 1}, 400),
        "not_found_error": post(http, "/v1/messages", params(model="claude-3-5-haiku"), 404),
        "authentication_error": http.post(
            "/v1/messages", json=params(), headers={"x-api-key": ""}
        ).content,
        # 413: the SDK's error types have no request_too_large; the body says why.
        "invalid_request_error (413)": http.post(
            "/v1/messages", content=b" " * (32 * 1024 * 1024 + 1)
        ).content,
    }
    for status, kind in ((429, "rate_limit_error"), (500, "api_error"), (529, "overloaded_error")):
        faulty = EmulatorApp(
            EmulatorConfig(
                state_dir=str(tmp_path / str(status)),
                faults=FaultPlan(http_error_rate=1.0, http_statuses=[status]),
            )
        )
        with httpx2.Client(
            transport=httpx2.WSGITransport(app=faulty),
            base_url="http://emulator.invalid",
            headers={"x-api-key": "k"},
        ) as client:
            response = client.get("/v1/models")
        assert response.status_code == status
        errors[kind] = response.content
    for kind, body in errors.items():
        error = conforms(f"error {kind}", ErrorResponse, body)
        assert (
            error.error.type == kind.split(" ")[0]
            and error.request_id
            and error.request_id.startswith("req_")
        )


def test_the_check_catches_a_missing_or_unknown_field(emulator) -> None:
    http, _, _ = emulator
    good = orjson.loads(post(http, "/v1/messages", params()))
    missing = {**good, "usage": {k: v for k, v in good["usage"].items() if k != "speed"}}
    with pytest.raises(AssertionError, match=r"usage: Usage missing \['speed'\]"):
        exact(Message, missing)
    unknown = {**good, "content": [{**good["content"][0], "bold": True}]}
    with pytest.raises(AssertionError, match=r"unknown \['bold'\]"):
        exact(Message, unknown)
    with pytest.raises(pydantic.ValidationError):  # strict: "3" is no integer
        conforms("negative", Message, {**good, "usage": {**good["usage"], "input_tokens": "3"}})
    CHECKED.discard("negative")


def test_zz_count_of_shapes_checked() -> None:
    """Runs last in this module: how many distinct response shapes the tests above checked."""
    print(f"\nconformance: {len(CHECKED)} response shapes checked against the SDK's models")
    for name in sorted(CHECKED):
        print(f"  {name}")
    assert len(CHECKED) >= 40
