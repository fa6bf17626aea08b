"""The request shape intake records, and the rewrite routing splices from it.

Routing no longer parses requests: it trusts the offsets and hashes intake computed. These
properties hold the shortcut to the slow, obvious way on generated requests, the awkward
ones included (block prompts, nested keys named ``model`` or ``system``, unicode).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_pipelines.costs import default_price_table
from llm_pipelines.routing import caching
from llm_pipelines.routing.route import _xor16, _xor64
from llm_pipelines.tasks import LLMTask, canonical_json

MODELS = sorted(default_price_table().models)

text = st.text(min_size=1, max_size=30) | st.sampled_from(
    ['"model":"x"', '","system":"', "\\", "é👩‍👧", "\x00\n", '{"type":"text"}']
)
# cache_control is free-form: keys that look like the top-level ones must not confuse offsets
cache_controls = st.none() | st.dictionaries(
    st.sampled_from(["type", "ttl", "model", "system"]), text, min_size=1, max_size=2
)


@st.composite
def blocks(draw: st.DrawFn, min_size: int = 1) -> list[dict[str, Any]]:
    result = []
    for _ in range(draw(st.integers(min_size, 3))):
        block: dict[str, Any] = {"type": "text", "text": draw(text)}
        control = draw(cache_controls)
        if control is not None:
            block["cache_control"] = control
        result.append(block)
    return result


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Messages API params as intake builds them from a valid task."""
    task: dict[str, Any] = {
        "task_type": "t",
        "model": draw(st.sampled_from(MODELS)),
        "max_tokens": draw(st.integers(1, 128_000)),
        "messages": [
            {
                "role": "user" if turn % 2 == 0 else "assistant",
                "content": draw(text | blocks()),
            }
            for turn in range(draw(st.integers(1, 3)))
        ],
    }
    system = draw(st.none() | text | blocks())
    if system is not None:
        task["system"] = system
    if draw(st.booleans()):  # keys after the model and the system prompt
        task["tools"] = [{"name": "t", "input_schema": {"type": "object", "model": draw(text)}}]
        task["stop_sequences"] = [draw(text)]
        task["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    return LLMTask.model_validate(task).request_params()


@settings(max_examples=300, deadline=None)
@given(requests())
def test_canonical_request_is_canonical_json_with_true_offsets(params: dict[str, Any]) -> None:
    request, shape = caching.canonical_request(params)
    assert request == canonical_json(params)
    assert shape.request_bytes == len(request)
    model = orjson.dumps(params["model"])
    assert request[shape.model_at : shape.model_at + len(model)] == model
    if params.get("system") is None:
        assert shape.system_at is None and shape.system_hash is None
    else:
        assert shape.system_at is not None
        system = canonical_json(params["system"])
        assert request[shape.system_at : shape.system_end] == system


@settings(max_examples=300, deadline=None)
@given(requests())
def test_the_shortcut_for_plain_requests_gives_the_general_shape(params: dict[str, Any]) -> None:
    """String prompts take a shortcut (the prompt's JSON is sliced from the request)."""
    request, shape = caching.canonical_request(params)
    assert shape == caching._any_shape(params, request, shape.request_hash)
    assert shape.request_hash == hashlib.sha256(request).digest()[:16]


@settings(max_examples=300, deadline=None)
@given(
    requests(),
    st.sampled_from(MODELS),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["5m", "1h"]),
)
def test_rewrite_matches_parsing_marking_and_serialising(
    params: dict[str, Any], target: str, system: bool, document: bool, ttl: str
) -> None:
    """Splice or fallback, the bytes are those of the obvious way."""
    system = system and params.get("system") is not None
    first = params["messages"][0]["content"]
    document = document and isinstance(first, list) and len(first) >= 2
    request, shape = caching.canonical_request(params)

    expected = orjson.loads(request)
    expected["model"] = target
    if system or document:
        caching.mark(expected, system=system, document=document, ttl=ttl)

    rewritten = caching.rewrite(
        request,
        caching.Offsets(shape.model_at, shape.system_at, shape.system_end),
        caching.Change(params["model"], target, system, document, ttl),
    )
    assert rewritten == canonical_json(expected)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            requests(),
            st.sampled_from(MODELS),
            st.booleans(),
            st.booleans(),
            st.sampled_from(["5m", "1h", ""]),
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 3),
)
def test_a_column_is_rewritten_as_each_of_its_requests_would_be(
    rows: list[tuple[dict[str, Any], str, bool, bool, str]], skip: int
) -> None:
    """Spliced, parsed and unchanged rows alike, from a slice of a column (its offsets)."""
    reparsed = []
    real_reparsed = caching._reparsed

    def counting(request: bytes, change: caching.Change) -> bytes:
        reparsed.append(request)
        return real_reparsed(request, change)

    shaped = [caching.canonical_request(params) for params, *_ in rows]
    system = [mark and params.get("system") is not None for (params, _, mark, *_) in rows]
    document = [
        mark and isinstance(content := params["messages"][0]["content"], list) and len(content) > 1
        for (params, _, _, mark, _) in rows
    ]
    expected = [
        caching.rewrite(
            request,
            caching.Offsets(shape.model_at, shape.system_at, shape.system_end),
            caching.Change(params["model"], target, system[i], document[i], ttl),
        )
        for i, ((params, target, _, _, ttl), (request, shape)) in enumerate(
            zip(rows, shaped, strict=True)
        )
    ]
    padding = [canonical_json({"model": MODELS[0]})] * skip  # rows before the slice
    column = pa.array([r.decode() for r in padding] + [r.decode() for r, _ in shaped]).slice(skip)
    shapes = caching.shape_array(
        [caching.canonical_request(rows[0][0])[1]] * skip + [s for _, s in shaped]
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(caching, "_reparsed", counting)
        rewritten = caching.rewrite_column(
            column,
            shapes.slice(skip),
            requested_models=pa.array([params["model"] for params, *_ in rows]),
            models=pa.array([target for _, target, *_ in rows]),
            system=pa.array(system),
            document=pa.array(document),
            ttls=[ttl for *_, ttl in rows],
        )
    assert [value.encode() for value in rewritten.to_pylist()] == expected
    # Reordered in the same pass (routing groups rows by stretch so): row i is row order[i],
    # every other argument given in the new order; unchanged rows too.
    order = np.arange(len(rows))[::-1].copy()
    reordered = caching.rewrite_column(
        column,
        shapes.slice(skip).take(order),
        requested_models=pa.array([rows[i][0]["model"] for i in order]),
        models=pa.array([rows[i][1] for i in order]),
        system=pa.array([system[i] for i in order]),
        document=pa.array([document[i] for i in order]),
        ttls=[rows[i][4] for i in order],
        order=order,
    )
    assert [value.encode() for value in reordered.to_pylist()] == [expected[i] for i in order]
    # Only a shared document or a system prompt given as blocks is parsed; the rest is
    # spliced, requests with tools, thinking and stop sequences included.
    assert len(reparsed) == sum(
        (params["model"] != target or system[i] or document[i])
        and (document[i] or (system[i] and not isinstance(params["system"], str)))
        for i, (params, target, *_) in enumerate(rows)
    )


def test_shapes_group_equal_prompts_and_tell_different_ones_apart() -> None:
    base = {"model": MODELS[0], "max_tokens": 5, "messages": [{"role": "user", "content": "q"}]}
    as_text = caching.canonical_request({**base, "system": "You are terse."})[1]
    as_block = caching.canonical_request(
        {**base, "system": [{"type": "text", "text": "You are terse."}]}
    )[1]
    other = caching.canonical_request({**base, "system": "You are verbose."})[1]
    # The same prompt text is one cache prefix, however it is written ...
    assert as_text.system_hash == as_block.system_hash
    # ... but not the same request, and another prompt is another prefix.
    assert as_text.request_hash != as_block.request_hash
    assert other.system_hash != as_text.system_hash
    marked = caching.canonical_request(
        {
            **base,
            "system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
        }
    )[1]
    assert marked.producer_marked and not as_block.producer_marked


def test_a_request_with_keys_after_the_model_is_spliced_at_true_offsets() -> None:
    params = {
        "model": MODELS[0],
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "q"}],
        "system": "be brief",
        "stop_sequences": ["\n\n"],  # sorts after "model", as "tools" and "thinking" do
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
    }
    request, shape = caching.canonical_request(params)
    assert request == canonical_json(params) and shape.model_at > 0
    usual = {key: value for key, value in params.items() if key != "stop_sequences"}
    # the same prompt hash as the usual path gives: it is the same cache prefix
    assert shape.system_hash == caching.canonical_request(usual)[1].system_hash
    offsets = caching.Offsets(shape.model_at, shape.system_at, shape.system_end)
    change = caching.Change(MODELS[0], MODELS[-1], True, False, "1h")
    assert caching.splice(request, offsets, change) is not None  # not parsed again
    rewritten = caching.rewrite(request, offsets, change)
    expected = {**params, "model": MODELS[-1]}
    caching.mark(expected, system=True, document=False, ttl="1h")
    assert rewritten == canonical_json(expected)


def test_model_folding_keeps_nulls_and_respects_array_offsets() -> None:
    """The XOR folding reads arrow buffers directly: sliced arrays and nulls must not shift."""
    hashes = [bytes([i]) * 16 for i in range(6)]
    wide = pa.array(hashes, pa.binary(16)).slice(2, 3)  # rows 2, 3, 4: a non-zero offset
    model = np.frombuffer(bytes(range(16)) * 3, dtype=np.uint8).reshape(3, 16)
    folded = _xor16(wide, model).to_pylist()
    assert folded == [
        bytes(a ^ b for a, b in zip(hashes[i], bytes(range(16)), strict=True)) for i in (2, 3, 4)
    ]

    narrow = pa.array([5, None, 7, 9], pa.int64()).slice(1, 3)
    assert _xor64(narrow, np.array([1, 1, 3], np.int64)).to_pylist() == [None, 6, 10]
