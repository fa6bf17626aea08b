"""Property tests: no landing line, however malformed, crashes a partition or vanishes.

Hypothesis generates valid tasks and breaks them (missing fields, wrong types, empty or
huge prompts, odd unicode, ids that are not valid custom_ids, broken JSON, raw bytes).
Every line must end as an event or a dead letter whose reason names what is wrong.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_pipelines.costs import default_price_table
from llm_pipelines.intake import MAX_REASON_CHARS, parse_line
from llm_pipelines.resources import AnthropicResource, CostPolicyResource, LakeResource
from llm_pipelines.storage import LandingZone
from llm_pipelines.storage.datasets import DEAD_LETTER, DEAD_LETTER_SCHEMA, EVENTS, EVENTS_SCHEMA
from llm_pipelines.tasks import CUSTOM_ID_RE

MODELS = sorted(default_price_table().models)


def as_line(value: Any) -> bytes:
    """A landing line as any producer's JSON encoder may write it (big ints included)."""
    return json.dumps(value, ensure_ascii=False).encode()


REQUIRED = ("task_type", "model", "messages", "max_tokens")

# Text from every corner of unicode that survives UTF-8: emoji, RTL, combining marks,
# zero-width and control characters, NUL; lone surrogates cannot be encoded and are left
# to the raw-bytes strategy.
odd_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40
) | st.sampled_from(["\u200b", "\x00", "e\u0301", "\u202eevil", "👩‍👩‍👧", "\ufeffbom", "\r\n\t"])
custom_ids = st.from_regex(r"\A[a-zA-Z0-9_-]{1,64}\Z")
not_custom_ids = st.one_of(
    st.just(""),
    st.text(min_size=65, max_size=80, alphabet="abc"),
    st.text(min_size=1, max_size=20).filter(lambda s: not CUSTOM_ID_RE.match(s)),
)
deadlines = st.datetimes(
    timezones=st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
).map(lambda d: d.isoformat())


@st.composite
def valid_tasks(draw: st.DrawFn) -> dict[str, Any]:
    """A task a producer may legitimately write."""
    turns = draw(st.integers(1, 3))
    task: dict[str, Any] = {
        "task_type": draw(odd_text.filter(lambda s: len(s) <= 64)),
        "model": draw(st.sampled_from(MODELS)),
        "max_tokens": draw(st.integers(1, 128_000)),
        "messages": [
            {"role": "user" if i % 2 == 0 else "assistant", "content": draw(odd_text)}
            for i in range(turns)
        ],
    }
    if draw(st.booleans()):
        task["task_id"] = draw(custom_ids)
    if draw(st.booleans()):
        task["system"] = draw(odd_text)
    if draw(st.booleans()):
        task["metadata"] = draw(st.dictionaries(odd_text, odd_text, max_size=3))
    if draw(st.booleans()):
        task["deadline"] = draw(deadlines)
    if draw(st.booleans()):
        task["priority"] = draw(st.integers(0, 9))
    return task


WRONG_TYPES = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.booleans(),
)


@st.composite
def broken_tasks(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A task broken in one way, and the field a good reason must name."""
    task = draw(valid_tasks())
    kind = draw(
        st.sampled_from(
            [
                "missing",
                "wrong_type",
                "bad_id",
                "empty_prompt",
                "extra",
                "removed",
                "no_messages",
                "max_tokens",
                "unknown_model",
            ]
        )
    )
    if kind == "missing":
        field = draw(st.sampled_from(REQUIRED))
        del task[field]
        return task, field
    if kind == "wrong_type":
        field = draw(st.sampled_from([*REQUIRED, "priority", "metadata", "requires_realtime"]))
        value = draw(WRONG_TYPES)
        if field == "max_tokens" and isinstance(value, int) and 0 <= value <= 2**31 - 1:
            value = [value]  # any such whole number is valid (0 only fills the prompt cache)
        if field == "priority" and isinstance(value, int) and 0 <= value <= 9:
            value = {"p": value}
        if field in ("max_tokens", "priority") and isinstance(value, float) and value.is_integer():
            value = "many"
        if field == "requires_realtime" and value in (0, 1):  # lax bools: 0, 1, 0.0, True
            value = [value]
        if field == "metadata" and (value is None or value == {}):
            value = 3
        task[field] = value
        return task, field
    if kind == "bad_id":
        task["task_id"] = draw(not_custom_ids)
        return task, "task_id"
    if kind == "empty_prompt":
        task["messages"][0]["content"] = ""
        return task, "messages"
    if kind == "extra":
        task["surprise_field"] = draw(WRONG_TYPES)
        return task, "surprise_field"
    if kind == "no_messages":
        task["messages"] = []
        return task, "messages"
    if kind == "removed":  # sampling parameters the current API version removed
        field = draw(st.sampled_from(["temperature", "top_p", "top_k"]))
        task[field] = draw(st.floats(0, 1))
        return task, field
    if kind == "max_tokens":
        task["max_tokens"] = draw(st.sampled_from([-1, 10**30]))
        return task, "max_tokens"
    task["model"] = draw(odd_text.filter(lambda m: m not in MODELS))
    return task, "model"


junk_lines = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3),
        max_leaves=8,
    ).map(as_line),
    valid_tasks().map(lambda t: as_line(t)[: len(as_line(t)) // 2]),  # cut short
    st.just(b'"\xed\xa0\x80"'),  # a lone surrogate: not UTF-8 at all
)


@settings(max_examples=200, deadline=None)
@given(valid_tasks())
def test_every_valid_task_becomes_an_event(task: dict[str, Any]) -> None:
    row, reason = parse_line(as_line(task))
    assert reason is None and row is not None
    assert CUSTOM_ID_RE.match(row["task_id"])
    assert row["task_id"] == task.get("task_id", row["task_id"])
    request = orjson.loads(row["request"])
    assert request["messages"] == task["messages"] and request["model"] == task["model"]


@settings(max_examples=250, deadline=None)
@given(broken_tasks())
def test_a_broken_task_is_rejected_with_a_reason_naming_the_field(
    case: tuple[dict[str, Any], str],
) -> None:
    task, field = case
    row, reason = parse_line(as_line(task))
    assert row is None and reason
    assert field in reason, (field, reason)
    assert len(reason) <= MAX_REASON_CHARS
    assert "\n" not in reason, "one line a person can read in a table"


@settings(max_examples=250, deadline=None)
@given(junk_lines)
def test_any_bytes_are_parsed_or_rejected_never_raised(line: bytes) -> None:
    row, reason = parse_line(line)
    assert (row is None) != (reason is None)
    if reason is not None:
        assert 0 < len(reason) <= MAX_REASON_CHARS and "\n" not in reason


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.one_of(
            valid_tasks().map(as_line),
            broken_tasks().map(lambda case: as_line(case[0])),
            junk_lines,
        ),
        min_size=1,
        max_size=25,
    )
)
def test_no_landing_line_crashes_a_partition_or_goes_missing(
    tmp_path: Path, day: str, lines: list[bytes]
) -> None:
    root = tmp_path / uuid.uuid4().hex
    resources = {
        "lake": LakeResource(url=str(root / "lake")),
        "cost_policy": CostPolicyResource(),
        "anthropic": AnthropicResource(emulator_dir=str(root / "emulator")),
    }
    lake = resources["lake"].lake()
    LandingZone(lake).append(lines, partition=day)
    from llm_pipelines.assets import intake

    result = dg.materialize(
        dg.load_assets_from_modules([intake]),
        partition_key=day,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    stats = result.asset_materializations_for_node("raw_llm_events")[0].metadata
    landed = [line.replace(b"\n", b" ").strip() for line in lines]
    assert stats["lines"].value == sum(1 for line in landed if line)
    counted = ("valid", "duplicates", "conflicts", "invalid")
    assert stats["lines"].value == sum(stats[key].value for key in counted)
    dead = lake.read_table(lake.files(DEAD_LETTER, day, ".parquet"), schema=DEAD_LETTER_SCHEMA)
    assert dead.num_rows == stats["invalid"].value + stats["conflicts"].value
    assert pc.all(pc.equal(dead["stage"], "intake")).as_py() in (True, None)
    assert all(dead["reason"].to_pylist()) and all(dead["payload"].to_pylist())
    rejected = {line.decode("utf-8", errors="replace") for line in landed if line}
    invalid = [
        payload
        for payload, reason in zip(
            dead["payload"].to_pylist(), dead["reason"].to_pylist(), strict=True
        )
        if " conflicts with the task first landed at " not in reason
    ]
    assert len(invalid) == stats["invalid"].value
    assert set(invalid) <= rejected, "an invalid line's payload is the line as landed"
    events = lake.read_table(lake.files(EVENTS, day, ".parquet"), ["task_id"], EVENTS_SCHEMA)
    assert events.num_rows == stats["valid"].value
    assert pc.count_distinct(events["task_id"]).as_py() == events.num_rows
