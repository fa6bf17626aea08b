"""The intake fast path agrees with the pydantic task model on everything it accepts."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sample_requests import SEEDS, mutated_requests

from llm_pipelines.intake import parse_line
from llm_pipelines.tasks import LLMTask, canonical_json, fast_task, rich_task

TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "hello", "é ünïcode", "line\nbreak", "x" * 70]),
)
ANY_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=200_000),
    st.floats(min_value=-2, max_value=3, allow_nan=False),
    TEXT,
    st.lists(st.integers(max_value=3), max_size=2),
    st.dictionaries(st.sampled_from(["role", "content", "type", "text"]), TEXT, max_size=2),
)
NON_EMPTY = st.text(min_size=1, max_size=12)
BLOCKS = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": NON_EMPTY}), min_size=1, max_size=2
)
TURNS = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant"]), "content": st.one_of(NON_EMPTY, BLOCKS)}
    ),
    min_size=1,
    max_size=3,
).map(lambda turns: [{**turns[0], "role": "user"}, *turns[1:]])
VALID_TASK = st.fixed_dictionaries(
    {
        "task_type": st.text(min_size=1, max_size=64),
        "model": st.sampled_from(["claude-haiku-4-5", "claude-sonnet-5-5"]),
        "messages": TURNS,
        "max_tokens": st.integers(min_value=1, max_value=128_000),
    },
    optional={
        "task_id": st.one_of(st.none(), st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)),
        "system": st.one_of(st.none(), NON_EMPTY, BLOCKS),
        "priority": st.integers(min_value=0, max_value=9),
        "deadline": st.one_of(
            st.none(),
            st.sampled_from(
                ["2026-11-23T04:00:00+00:00", "2026-11-23T04:00:00", "2026-11-23", 1_800_000_000]
            ),
        ),
        "requires_realtime": st.booleans(),
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    },
)
FIELDS = [*LLMTask.model_fields, "model", "max_tokens", "messages", "system", "temperature", "x"]


@st.composite
def tasks(draw: st.DrawFn) -> dict[str, Any]:
    """A valid task, half the time with one field broken, dropped or added."""
    task = draw(VALID_TASK)
    mutation = draw(st.sampled_from(["none", "none", "replace", "drop", "break_turn"]))
    name = draw(st.sampled_from(FIELDS))
    if mutation == "replace":
        task[name] = draw(ANY_JSON)
    elif mutation == "drop":
        task.pop(name, None)
    elif mutation == "break_turn":
        task["messages"][0] = {
            **task["messages"][0],
            draw(st.sampled_from(["role", "content", "x"])): draw(ANY_JSON),
        }
    return task


def as_lines(raw: dict[str, Any]) -> list[bytes]:
    """The task as producers write it: compact UTF-8, and escaped ASCII with spaces."""
    return [
        json.dumps(raw, ensure_ascii=False, separators=(",", ":")).encode(),
        json.dumps(raw, ensure_ascii=True, indent=1).encode(),
    ]


def model_task(line: bytes, taken: object) -> LLMTask | None:
    """The task as the model takes ``line``; None (and ``taken`` must be None too) where the
    model or the SDK's types reject it."""
    try:
        task = LLMTask.model_validate(orjson.loads(line))
    except (orjson.JSONDecodeError, ValidationError):
        assert taken is None, f"fast path accepted what LLMTask rejects: {line!r}"
        return None
    if task.request_problem() is not None:
        assert taken is None, f"fast path accepted a request the SDK's types reject: {line!r}"
        return None
    return task


def assert_agrees(line: bytes) -> None:
    """``fast_task`` takes ``line`` only if the model does, with the same fields and request."""
    fast = fast_task(line)
    task = model_task(line, fast)
    if task is None or fast is None:
        return  # refused by both, or the model decides this one: allowed, just slower
    params = task.request_params()
    assert fast.fields == task.fields()
    assert fast.request == canonical_json(params)
    assert fast.system == params.get("system")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tasks())
def test_fast_path_accepts_only_what_the_model_accepts_and_keeps_the_same_fields(
    raw: dict[str, Any],
) -> None:
    for line in as_lines(raw):
        assert_agrees(line)


COMMON = {
    "task_id": "sku-1",
    "task_type": "catalog_description",
    "model": "claude-haiku-4-5",
    "system": "You write product descriptions.",
    "messages": [{"role": "user", "content": "Product: kettle"}],
    "max_tokens": 300,
    "metadata": {"producer": "catalog"},
    "deadline": "2026-11-24T00:00:00+00:00",
    "priority": 3,
}


def test_fast_path_takes_the_common_shape() -> None:
    """Without this the property above would pass with a fast path that never fires."""
    fast = fast_task(orjson.dumps(COMMON))
    assert fast is not None
    assert fast.fields.prompt_chars == len("You write product descriptions.") + len(
        "Product: kettle"
    )
    assert fast.request == canonical_json(LLMTask.model_validate(COMMON).request_params())
    row, reason = parse_line(orjson.dumps(COMMON))
    assert reason is None and row is not None and row["task_id"] == "sku-1"


@pytest.mark.parametrize(
    "line",
    [
        # escapes the canonical form writes otherwise, surrogate pairs, lone surrogates
        rb'{"task_type":"t","model":"m","max_tokens":1,"messages":[{"role":"user","content":"\u0041\/\ud83d\ude00"}]}',
        rb'{"task_type":"t","model":"m","max_tokens":1,"messages":[{"role":"user","content":"\ud800"}]}',
        rb'{"task_type":"t","model":"m","max_tokens":1,"messages":[{"role":"user","content":"\udc00x"}]}',
        # bytes that are not UTF-8, a raw control character, a byte order mark
        b'{"task_type":"t","model":"m","max_tokens":1,"messages":[{"role":"user","content":"\xff"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"messages":[{"role":"user","content":"a\x01"}]}',
        b'\xef\xbb\xbf{"task_type":"t","model":"m","max_tokens":1,"messages":[{"role":"user","content":"a"}]}',
        # a repeated key (the last one counts, for both), types JSON leaves open
        b'{"task_type":"t","model":"m","max_tokens":1,"max_tokens":2,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1.0,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"temperature":true,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"temperature":0,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"temperature":1e-7,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"priority":null,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"metadata":null,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"system":null,"task_id":null,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"requires_realtime":1,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"deadline":1800000000,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"deadline":"tomorrow","messages":[{"role":"user","content":"a"}]}',
        # re's "$" matches before a final newline; the model's pattern does not
        rb'{"task_id":"abc\n","task_type":"t","model":"m","max_tokens":1,"messages":[{"role":"user","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"messages":[{"role":"assistant","content":"a"}]}',
        b'{"task_type":"t","model":"m","max_tokens":1,"messages":[{"role":"user","content":"a","name":"x"}]}',
    ],
)
def test_fast_path_agrees_on_awkward_bytes(line: bytes) -> None:
    assert_agrees(line)


def test_fast_path_request_is_canonical_for_every_character() -> None:
    """The request is encoded by msgspec, not orjson: the two agree on every code point."""
    taken = 0
    for start in range(0, 0x110000, 0x2000):
        text = "".join(
            chr(code) for code in range(start, start + 0x2000) if not 0xD800 <= code <= 0xDFFF
        )
        task = {**COMMON, "system": text, "messages": [{"role": "user", "content": text}]}
        for line in as_lines(task):
            fast = fast_task(line)
            assert fast is not None
            assert fast.request == canonical_json(LLMTask.model_validate(task).request_params())
            assert fast.fields.prompt_chars == 2 * len(text)
            taken += 1
    assert taken == 2 * 0x110000 // 0x2000  # every block, in both forms


PRODUCER = st.fixed_dictionaries(
    {"task_type": st.sampled_from(["catalog", "x" * 65, ""])},
    optional={
        "task_id": st.one_of(st.none(), st.sampled_from(["t-1", "bad id", "abc\n"])),
        "priority": st.one_of(st.integers(min_value=-1, max_value=10), st.just("3")),
        "deadline": st.sampled_from(["2026-11-23T04:00:00+00:00", "tomorrow", 1_800_000_000]),
        "requires_realtime": st.one_of(st.booleans(), st.just(1)),
        "metadata": st.one_of(st.just({"producer": "x"}), st.just({"n": 1})),
        "params": st.just({}),
    },
)


def assert_rich_agrees(line: bytes) -> None:
    """``rich_task`` takes ``line`` only if the model does, with the same fields and request."""
    rich = rich_task(line)
    task = model_task(line, rich)
    if task is None or rich is None:
        return
    fields, params = rich
    assert fields == task.fields()
    assert canonical_json(params) == canonical_json(task.request_params())


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PRODUCER, mutated_requests())
def test_rich_path_accepts_only_what_the_model_accepts_and_keeps_the_same_fields(
    producer: dict[str, Any], request: dict[str, Any]
) -> None:
    request.pop("metadata", None)  # at the top of a line, metadata is the producer's
    for line in as_lines({**request, **producer}):
        assert_rich_agrees(line)


def test_rich_path_takes_tools_images_and_documents() -> None:
    """Without this the property above would pass with a rich path that never fires."""
    for seed in SEEDS:
        request = {k: v for k, v in seed.items() if k != "metadata"}
        line = orjson.dumps({"task_type": "t", "task_id": "r-1", **request})
        assert rich_task(line) is not None, request
        assert_rich_agrees(line)
        row, reason = parse_line(line)
        assert reason is None and row is not None
        assert row["request"].encode() == canonical_json(request)
