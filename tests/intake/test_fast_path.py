"""The intake fast path agrees with the pydantic task model on everything it accepts."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llm_pipelines.intake import parse_line
from llm_pipelines.tasks import LLMTask, canonical_json, fast_task

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
        "model": st.sampled_from(["claude-haiku-4-5", "claude-sonnet-4-5"]),
        "messages": TURNS,
        "max_tokens": st.integers(min_value=1, max_value=128_000),
    },
    optional={
        "task_id": st.one_of(st.none(), st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)),
        "system": st.one_of(st.none(), NON_EMPTY, BLOCKS),
        "temperature": st.one_of(
            st.none(), st.floats(min_value=0, max_value=1), st.sampled_from([0, 1])
        ),
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
FIELDS = [*LLMTask.model_fields, "surprise"]


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


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tasks())
def test_fast_path_accepts_only_what_the_model_accepts_and_keeps_the_same_fields(
    raw: dict[str, Any],
) -> None:
    fast = fast_task(raw)
    try:
        task = LLMTask.model_validate(raw)
    except ValidationError:
        assert fast is None, f"fast path accepted what LLMTask rejects: {raw!r}"
        return
    if fast is None:
        return  # the model decides this one: allowed, just slower
    slow = task.fields()
    assert fast._replace(params=None) == slow._replace(params=None)
    assert canonical_json(fast.params) == canonical_json(slow.params)


def test_fast_path_takes_the_common_shape() -> None:
    """Without this the property above would pass with a fast path that never fires."""
    common = {
        "task_id": "sku-1",
        "task_type": "catalog_description",
        "model": "claude-haiku-4-5",
        "system": "You write product descriptions.",
        "messages": [{"role": "user", "content": "Product: kettle"}],
        "max_tokens": 300,
        "metadata": {"producer": "catalog"},
        "deadline": "2026-11-24T00:00:00+00:00",
        "priority": 3,
        "temperature": 1,
    }
    fields = fast_task(common)
    assert fields is not None
    assert fields.params["temperature"] == 1.0 and isinstance(fields.params["temperature"], float)
    assert fields.prompt_chars == len("You write product descriptions.") + len("Product: kettle")
    row, reason = parse_line(orjson.dumps(common))
    assert reason is None and row is not None and row["task_id"] == "sku-1"
